// The Overview tab (GET /v1/overview from the browser's midnight) and each endpoint card's
// health (GET /v1/webhooks/{id}/stats: the last hour in minutes or the last 24 hours in
// hours, the queue depth and the last success).

import { $, h } from "./views.js";
import { deliveryChart, sparkline, totals } from "./charts.js";

function startOfToday() {
  const d = new Date();
  d.setHours(0, 0, 0, 0);
  return d;
}

const percent = (v) => (v === null || v === undefined ? "—" : `${v}%`);

// Loads and draws today's figures and the hourly sparkline.
export async function loadOverview(api, report) {
  try {
    const since = startOfToday();
    const o = await api.get(`/v1/overview?since=${encodeURIComponent(since.toISOString())}`);
    $("overview-since").textContent = `since ${since.toLocaleString()}`;
    const figures = [
      ["messages_in", "Messages in", o.messages_in],
      ["messages_out", "Messages out", o.messages_out],
      ["delivered_percent", "Delivered (of sent)", percent(o.delivered_percent)],
      ["read_percent", "Read (of sent)", percent(o.read_percent)],
      ["webhook_success_percent", `Webhook success (${o.webhook_attempts} attempts)`, percent(o.webhook_success_percent)],
      ["deliveries_waiting", "Deliveries waiting", o.deliveries_waiting],
      ["endpoints_disabled", `Endpoints disabled (of ${o.endpoints})`, o.endpoints_disabled],
    ];
    $("overview-figures").replaceChildren(...figures.map(([key, label, value]) =>
      h("div", {
        className: "card figure", "data-figure": key,
        "data-alert": String((key === "endpoints_disabled" && o.endpoints_disabled > 0) || (key === "messages_out" && o.messages_failed > 0)),
      },
      h("div", { className: "figure-value" }, String(value)),
      h("div", { className: "figure-label small muted" }, label,
        key === "messages_out" && o.messages_failed ? ` · ${o.messages_failed} failed` : ""))));
    const perHour = o.hours.map((x) => x.messages_in + x.messages_out);
    const total = perHour.reduce((a, b) => a + b, 0);
    $("overview-sparkline").replaceChildren(
      sparkline(perHour, `Messages per hour today: ${total} in ${o.hours.length} hours, at most ${Math.max(0, ...perHour)} in one hour`));
  } catch (error) {
    report(error);
  }
}

const RANGES = {
  hour: { label: "Last hour", back: 3600 * 1000, bucket: "1m" },
  day: { label: "Last 24 hours", back: 24 * 3600 * 1000, bucket: "1h" },
};

// The health block of an endpoint card: range buttons, the chart, and what waits now.
export function endpointHealth(api, endpointId, report) {
  const chart = h("div", { className: "chart-area" });
  const figures = h("p", { className: "small health-figures" });
  const queue = h("p", { className: "small muted health-queue" });
  const buttons = Object.entries(RANGES).map(([key, r]) =>
    h("button", { className: "link range", type: "button", "data-range": key, "aria-pressed": "false", onclick: () => show(key) }, r.label));
  const span = h("div", { className: "chart-span small muted", "aria-hidden": "true" });
  const legend = h("div", { className: "chart-legend small muted", "aria-hidden": "true" },
    h("span", { className: "key ok" }), " delivered ", h("span", { className: "key failed" }), " failed ",
    h("span", { className: "key p50" }), " p50 ", h("span", { className: "key p99" }), " p99 latency");
  const block = h("section", { className: "endpoint-health", "aria-label": "Delivery health" },
    h("div", { className: "health-head" }, h("strong", { className: "small" }, "Deliveries"), ...buttons),
    chart, span, legend, figures, queue);
  async function show(range) {
    for (const b of buttons) b.setAttribute("aria-pressed", String(b.dataset.range === range));
    block.dataset.range = range;
    const r = RANGES[range];
    try {
      const since = new Date(Date.now() - r.back).toISOString();
      const stats = await api.get(`/v1/webhooks/${endpointId}/stats?since=${encodeURIComponent(since)}&bucket=${r.bucket}`);
      const t = totals(stats.buckets);
      // The worst bucket's percentiles: a chart's buckets cannot be merged into one p50.
      const latency = t.p50 === null ? "no attempts" : `p50 up to ${t.p50} ms · p99 up to ${t.p99} ms`;
      const summary = `${r.label}: ${t.successes} delivered, ${t.failures} failed; ${latency}`;
      chart.replaceChildren(deliveryChart(stats.buckets, summary));
      const first = stats.buckets[0];
      span.replaceChildren(h("span", {}, first ? new Date(first.start).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : ""), h("span", {}, "now"));
      figures.textContent = `${t.successes} delivered · ${t.failures} failed · ${latency}`;
      figures.dataset.failures = String(t.failures);
      queue.textContent = `${stats.waiting} waiting · last success ${stats.last_success_at ? new Date(stats.last_success_at).toLocaleString() : "never"}`;
    } catch (error) {
      report(error);
    }
  }
  show("hour");
  return block;
}

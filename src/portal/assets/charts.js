// Small inline SVG charts, drawn from data with DOM calls (no library, nothing fetched):
// an endpoint's deliveries per time bucket with its latency, and a sparkline.

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  for (const child of children) if (child) el.append(child);
  return el;
}

function title(text) {
  const t = document.createElementNS(SVG, "title");
  t.textContent = text;
  return t;
}

const WIDTH = 480;
const HEIGHT = 96;
const LATENCY_HEIGHT = 36;

// A chart of stats buckets (GET /v1/webhooks/{id}/stats): stacked bars of successes and
// failures, and below them p50 and p99 latency as two lines on a log scale. `summary` is the
// text a screen reader gets for the whole picture.
export function deliveryChart(buckets, summary) {
  const n = Math.max(buckets.length, 1);
  const step = WIDTH / n;
  const barWidth = Math.max(step - 1, 1);
  const most = Math.max(1, ...buckets.map((b) => b.attempts));
  const bars = [];
  buckets.forEach((b, i) => {
    const x = i * step;
    const okHeight = (b.successes / most) * HEIGHT;
    const failHeight = (b.failures / most) * HEIGHT;
    const label = `${new Date(b.start).toLocaleString()}: ${b.successes} delivered, ${b.failures} failed` +
      (b.p50_ms === null ? "" : `, p50 ${b.p50_ms} ms, p99 ${b.p99_ms} ms`);
    const group = svg("g", { class: "bucket", "data-failures": b.failures, "data-successes": b.successes }, title(label));
    if (b.successes) group.append(svg("rect", { class: "ok", x, y: HEIGHT - okHeight, width: barWidth, height: okHeight }));
    if (b.failures) {
      group.append(svg("rect", { class: "failed", x, y: HEIGHT - okHeight - failHeight, width: barWidth, height: failHeight }));
    }
    bars.push(group);
  });
  // Latency on a log scale from 1 ms to the slowest p99 seen.
  const slowest = Math.max(2, ...buckets.map((b) => b.p99_ms || 0));
  const y = (ms) => HEIGHT + 6 + LATENCY_HEIGHT - (Math.log(Math.max(ms, 1)) / Math.log(slowest)) * LATENCY_HEIGHT;
  const line = (field, cls) => {
    const points = buckets
      .map((b, i) => (b[field] === null ? null : `${(i + 0.5) * step},${y(b[field]).toFixed(1)}`))
      .filter(Boolean);
    return points.length ? svg("polyline", { class: cls, points: points.join(" ") }) : null;
  };
  return svg(
    "svg",
    { class: "chart", viewBox: `0 0 ${WIDTH} ${HEIGHT + 6 + LATENCY_HEIGHT}`, role: "img", "aria-label": summary,
      preserveAspectRatio: "none" },
    svg("line", { class: "axis", x1: 0, y1: HEIGHT, x2: WIDTH, y2: HEIGHT }),
    ...bars,
    line("p99_ms", "p99"),
    line("p50_ms", "p50"),
  );
}

// A sparkline of numbers, oldest first.
export function sparkline(values, summary) {
  const width = 240;
  const height = 40;
  const most = Math.max(1, ...values);
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - (v / most) * (height - 4)).toFixed(1)}`);
  return svg(
    "svg",
    { class: "sparkline", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": summary, preserveAspectRatio: "none" },
    svg("polyline", { points: points.join(" ") }),
  );
}

// Sums a chart's buckets into the figures its summary names; the percentiles are the worst
// bucket's (percentiles of buckets cannot be added up).
export function totals(buckets) {
  const sum = (field) => buckets.reduce((acc, b) => acc + b[field], 0);
  const p = (field) => {
    const seen = buckets.map((b) => b[field]).filter((v) => v !== null);
    return seen.length ? Math.max(...seen) : null;
  };
  return { attempts: sum("attempts"), successes: sum("successes"), failures: sum("failures"), p50: p("p50_ms"), p99: p("p99_ms") };
}

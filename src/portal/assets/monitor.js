// The Monitor tab: the instance's events newest first, from history (GET /v1/events?order=desc,
// scrolled back page by page as far as retention keeps) with live events on top; filters by
// type, outcome, customer number and time; a search by event id (= webhook id) or message id;
// each event's JSON and attempts on demand, and Resend.

import { $, h, attemptRow, attemptTable } from "./views.js";

const PAGE = 50;

const monitor = {
  api: null,
  report: () => {},
  entries: new Map(), // event id → list item
  before: null, // the next history page's cursor
  filters: {},
  searching: false,
  loading: false,
  // Each new list (filters applied, search made) gets a number; an answer for an older one is
  // dropped, so a slow page of the previous filters never lands in the new list.
  generation: 0,
};

export function initMonitor({ report }) {
  monitor.report = report;
  $("event-filters").addEventListener("submit", (e) => {
    e.preventDefault();
    applyFilters();
  });
  $("filter-clear").addEventListener("click", () => {
    $("event-filters").reset();
    applyFilters();
  });
  for (const id of ["filter-type", "filter-outcome", "filter-time"]) {
    $(id).addEventListener("change", applyFilters);
  }
  $("filter-time").addEventListener("change", showCustomRange);
  $("event-filters").addEventListener("reset", () => setTimeout(showCustomRange));
  $("load-older-events").addEventListener("click", loadOlder);
  // Scrolling near the end loads the next page by itself.
  const observer = new IntersectionObserver((seen) => {
    if (seen.some((s) => s.isIntersecting) && monitor.before && !monitor.loading) loadOlder();
  });
  observer.observe($("load-older-events"));
}

export function startMonitor(api) {
  monitor.api = api;
  applyFilters();
}

export function stopMonitor() {
  monitor.api = null;
  monitor.entries.clear();
  $("event-list").replaceChildren();
}

// "From … to …" shows two local date-time fields, applied with Apply.
function showCustomRange() {
  const custom = $("filter-time").value === "custom";
  $("filter-from-label").hidden = !custom;
  $("filter-to-label").hidden = !custom;
}

function readFilters() {
  const f = {};
  const type = $("filter-type").value;
  const outcome = $("filter-outcome").value;
  const number = $("filter-number").value.trim().replace(/^\+/, "").replace(/[\s()-]/g, "");
  const time = $("filter-time").value;
  if (type) f.type = type;
  if (outcome) f.outcome = outcome;
  if (number) f.number = number;
  if (time === "custom") {
    // datetime-local values are the browser's local time.
    if ($("filter-from").value) f.since = new Date($("filter-from").value).toISOString();
    if ($("filter-to").value) f.until = new Date($("filter-to").value).toISOString();
  } else if (time) {
    f.since = new Date(Date.now() - Number(time) * 1000).toISOString();
  }
  return f;
}

function describe(f) {
  const parts = [];
  if (f.type) parts.push(`type ${f.type}`);
  if (f.outcome) parts.push(`outcome ${f.outcome}`);
  if (f.number) parts.push(`customer ${f.number}`);
  if (f.since) parts.push(`since ${new Date(f.since).toLocaleString()}`);
  if (f.until) parts.push(`before ${new Date(f.until).toLocaleString()}`);
  return parts.length ? `Showing events with ${parts.join(", ")}. New events that match appear on top.` : "";
}

async function applyFilters() {
  if (!monitor.api) return;
  const generation = ++monitor.generation;
  const search = $("event-search").value.trim();
  monitor.entries.clear();
  $("event-list").replaceChildren();
  $("event-list").setAttribute("aria-busy", "true");
  monitor.before = null;
  monitor.searching = Boolean(search);
  if (search) {
    await find(search, generation);
  } else {
    monitor.filters = readFilters();
    $("filter-note").textContent = describe(monitor.filters);
    await loadPage(generation);
  }
  if (generation === monitor.generation) $("event-list").setAttribute("aria-busy", "false");
}

// An event id (the webhook-id a receiver saw) or a message id.
async function find(text, generation) {
  $("filter-note").textContent = `Search results for “${text}”. Clear the search to see the live list again.`;
  try {
    let found = [];
    if (text.startsWith("evt_")) {
      try {
        found = [await monitor.api.get(`/v1/events/${encodeURIComponent(text)}`)];
      } catch (error) {
        if (error.status !== 404) throw error;
      }
    } else {
      found = (await monitor.api.get(`/v1/events?order=desc&limit=${PAGE}&message_id=${encodeURIComponent(text)}`)).events;
    }
    if (generation !== monitor.generation) return;
    for (const e of found) showEvent(e, "end");
  } catch (error) {
    monitor.report(error);
  }
  updateEmpty();
}

function query(extra) {
  const params = new URLSearchParams({ order: "desc", limit: String(PAGE), ...monitor.filters, ...extra });
  return `/v1/events?${params}`;
}

async function loadPage(generation) {
  monitor.loading = true;
  try {
    const page = await monitor.api.get(query(monitor.before ? { before: monitor.before } : {}));
    if (generation !== monitor.generation) return;
    for (const e of page.events) showEvent(e, "end");
    monitor.before = page.next;
  } catch (error) {
    monitor.report(error);
  } finally {
    monitor.loading = false;
  }
  $("load-older-events").hidden = !monitor.before;
  updateEmpty();
}

async function loadOlder() {
  if (monitor.before) await loadPage(monitor.generation);
}

function updateEmpty() {
  const none = $("no-events");
  none.hidden = monitor.entries.size > 0;
  none.textContent = monitor.searching
    ? "No event matches the search."
    : Object.keys(monitor.filters).length ? "No event matches the filters." : "No events yet.";
}

// A live event (from /v1/stream): shown on top when it matches the filters.
export function liveEvent(e) {
  if (!monitor.api || monitor.searching) return;
  const f = monitor.filters;
  const number = e.payload.data && (e.payload.event === "message" ? e.payload.data.from : e.payload.data.to);
  if (f.type && f.type !== e.type) return;
  if (f.number && f.number !== number) return;
  if (f.outcome && f.outcome !== "pending") return;
  if (f.until && new Date(e.created_at) >= new Date(f.until)) return;
  showEvent({ ...e, outcome: "pending" }, "top");
  updateEmpty();
}

// A live attempt: the event's latest attempt and outcome, as far as this page knows.
export function liveAttempt(a) {
  const item = monitor.entries.get(a.event_id);
  if (!item) return;
  const label = item.querySelector(".delivery-state");
  label.textContent = a.outcome === "success" ? `✓ ${a.status_code ?? "ok"} · ${a.duration_ms} ms` : `✗ ${a.status_code ?? a.error}`;
  label.dataset.state = a.outcome;
  setOutcome(item, a.outcome === "success" ? "delivered" : "failing");
  // What this page knows from one attempt: a success, or a failure (retrying or, if it was the
  // last, dead: the list shows that after a reload).
  const area = item.querySelector(".attempt-area");
  const body = area.querySelector("tbody");
  if (body) body.append(attemptRow(a));
  else if (area.childElementCount) area.replaceChildren(attemptTable([a]));
}

const OUTCOME_NAMES = { delivered: "delivered", failing: "failing", dead: "dead", pending: "pending", none: "no endpoint" };

function setOutcome(item, outcome) {
  item.dataset.outcome = outcome;
  const badge = item.querySelector(".outcome");
  badge.textContent = OUTCOME_NAMES[outcome] || outcome;
  badge.dataset.outcome = outcome;
}

function showEvent(e, where) {
  if (monitor.entries.has(e.id)) return;
  const bodyId = `event-body-${e.id}`;
  const attempts = h("div", { className: "attempt-area" });
  const body = h("div", { className: "event-body", id: bodyId, hidden: true },
    h("pre", { className: "json", tabIndex: 0, "aria-label": "Event JSON" }, JSON.stringify(e.payload, null, 2)),
    attempts);
  const toggle = h("button", { className: "event-toggle link", "aria-expanded": "false", "aria-controls": bodyId },
    h("span", { className: `pill ${e.type.replace(".", "-")}` }, e.type),
    h("span", { className: "small" }, new Date(e.created_at).toLocaleString()),
    h("span", { className: "small ellipsis event-id" }, e.id));
  toggle.addEventListener("click", () => {
    const open = toggle.getAttribute("aria-expanded") !== "true";
    toggle.setAttribute("aria-expanded", String(open));
    body.hidden = !open;
    if (open) loadAttempts(e.id, attempts);
  });
  const item = h(
    "li",
    { className: "event", "data-event-id": e.id, "data-type": e.type },
    h("div", { className: "event-head" },
      toggle,
      h("span", { className: "outcome small" }),
      h("span", { className: "delivery-state small", "data-state": "none" }),
      h("button", { className: "resend", "aria-label": `Resend ${e.id}`, onclick: () => resend(e.id) }, "Resend")),
    body,
  );
  setOutcome(item, e.outcome || "pending");
  monitor.entries.set(e.id, item);
  if (where === "top") $("event-list").prepend(item);
  else $("event-list").append(item);
}

async function loadAttempts(eventId, area) {
  try {
    const { attempts } = await monitor.api.get(`/v1/events/${eventId}/attempts`);
    area.replaceChildren(attempts.length ? attemptTable(attempts) : h("p", { className: "muted" }, "No attempts yet (no endpoint subscribed, or waiting)."));
  } catch (error) {
    monitor.report(error);
  }
}

async function resend(eventId) {
  try {
    const { scheduled } = await monitor.api.post(`/v1/events/${eventId}/resend`);
    monitor.report(scheduled ? `Resending to ${scheduled} endpoint(s).` : "Nothing to resend: no endpoint takes this event.");
    const item = monitor.entries.get(eventId);
    if (item && scheduled) setOutcome(item, "pending");
  } catch (error) {
    monitor.report(error);
  }
}

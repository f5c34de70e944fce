// Small DOM helpers and the pieces of the page that are drawn from data: conversation rows,
// message bubbles with ticks, monitor entries, endpoint cards.

export const EVENT_CHOICES = [
  ["message", "Message Received"],
  ["ack.sent", "Sent"],
  ["ack.delivered", "Delivered"],
  ["ack.read", "Message Read"],
  ["ack.failed", "Failed"],
];

export function $(id) {
  return document.getElementById(id);
}

// Creates an element; `props` sets properties (and `data-*`/`aria-*` attributes), children
// are nodes or strings (always inserted as text, never as HTML).
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("data-") || key.startsWith("aria-")) el.setAttribute(key, value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el[key] = value;
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function time(seconds) {
  const date = new Date(seconds * 1000);
  const today = new Date();
  const sameDay = date.toDateString() === today.toDateString();
  return sameDay
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleDateString([], { day: "numeric", month: "short" });
}

const TICKS = { sent: "✓", delivered: "✓✓", read: "✓✓", failed: "!", accepted: "…" };

export function ticks(status) {
  return h("span", { className: `ticks ${status}`, title: status, "data-status": status }, TICKS[status] || "");
}

export function preview(message) {
  if (message.type === "image") return "[photo] " + (message.body || "");
  if (message.type === "button") return "[button] " + message.body;
  if (message.type === "buttons") return message.body + " [buttons]";
  return message.body;
}

export function conversationRow(c, active, onOpen) {
  const last = c.last_message;
  return h(
    "li",
    { className: "conversation" + (active ? " active" : ""), "data-number": c.number, onclick: () => onOpen(c.number) },
    h("div", { className: "conversation-head" },
      h("strong", {}, c.name ? `${c.name} · ${c.number}` : c.number),
      h("span", { className: "muted small" }, time(last.timestamp))),
    h("div", { className: "conversation-last" },
      last.direction === "outbound" ? ticks(last.status) : null,
      h("span", { className: "ellipsis" }, preview(last)),
      c.unread > 0 ? h("span", { className: "unread", "data-unread": c.unread }, String(c.unread)) : null),
  );
}

// Media held by Meta (it has an `id`) is fetched through botlinkd with the keys, so it
// starts without a source and is filled in by the page (`data-held` names where from).
function mediaView(m) {
  // A customer's file has a botlinkd `url`; the business's upload only its media id.
  const held = m.media.id
    ? m.media.url ? new URL(m.media.url, location.href).pathname : `/v1/media/${encodeURIComponent(m.media.id)}`
    : null;
  if (m.type === "image" || m.type === "sticker") {
    return h("img", {
      className: "media", alt: m.body || m.type, loading: "lazy",
      ...(held ? { "data-held": held } : { src: m.media.url }),
    });
  }
  const label = `${m.type}${m.media.filename ? ": " + m.media.filename : ""}`;
  return held
    ? h("button", { className: "link media-file", "data-held": held, "data-filename": m.media.filename || m.type }, `⬇ ${label}`)
    : h("a", { className: "media-file", href: m.media.url, target: "_blank", rel: "noopener" }, `⬇ ${label}`);
}

export function messageBubble(m) {
  const outbound = m.direction === "outbound";
  const parts = [];
  if (m.media && (m.media.url || m.media.id)) parts.push(mediaView(m));
  if (m.type === "button") {
    parts.push(h("div", { className: "button-reply" }, "▸ ", m.body));
  } else if (m.body) {
    parts.push(h("div", { className: "body" }, m.body));
  }
  if (m.buttons) {
    parts.push(h("div", { className: "buttons" }, m.buttons.map((b) => h("span", { className: "button-chip" }, b.title))));
  }
  if (m.type === "template" && m.template) {
    parts.push(h("div", { className: "muted small" }, `template ${m.template.name}`));
  }
  return h(
    "li",
    { className: `bubble ${outbound ? "out" : "in"}`, "data-message-id": m.message_id, "data-type": m.type },
    parts,
    h("div", { className: "meta" }, time(m.timestamp), outbound ? ticks(m.status) : null),
  );
}

export function attemptRow(a) {
  return h(
    "tr",
    { className: a.outcome, "data-outcome": a.outcome },
    h("td", {}, a.attempt),
    h("td", { className: "small" }, new Date(a.started_at).toLocaleTimeString()),
    h("td", { className: "small ellipsis", title: a.endpoint_id }, a.endpoint_id),
    h("td", {}, a.status_code === null ? "—" : a.status_code),
    h("td", {}, `${a.duration_ms} ms`),
    h("td", { className: "small ellipsis", title: a.error || a.response }, a.error || a.response || ""),
  );
}

export function attemptTable(attempts) {
  return h(
    "table",
    { className: "attempts" },
    h("thead", {}, h("tr", {}, ["#", "Time", "Endpoint", "Status", "Latency", "Response"].map((t) => h("th", {}, t)))),
    h("tbody", {}, attempts.map(attemptRow)),
  );
}

export function eventChecks(selected, prefix) {
  return EVENT_CHOICES.map(([value, label]) =>
    h("label", { className: "check" },
      h("input", { type: "checkbox", value, checked: selected.includes(value), name: `${prefix}-events` }),
      " ", label));
}

export function checkedEvents(container) {
  return [...container.querySelectorAll('input[type="checkbox"]:checked')].map((c) => c.value);
}

// The Cloud Chat Portal: log in with App Key + Auth Key, chat, watch events live, manage
// webhooks, and (on sandbox instances) write in as a customer.

import { Api, ApiError, forgetKeys, saveKeys, savedKeys } from "./api.js";
import { endpointHealth, loadOverview } from "./insights.js";
import { initMonitor, liveAttempt, liveEvent, startMonitor, stopMonitor } from "./monitor.js";
import { $, h, checkedEvents, conversationRow, eventChecks, messageBubble, ticks } from "./views.js";

const state = {
  api: null,
  instance: null,
  stopStream: null,
  conversations: [],
  open: null, // the customer number whose thread is shown
  olderBefore: null,
  refreshTimer: null,
  overviewTimer: null,
};

// ---- start, login, logout -------------------------------------------------------------

async function start() {
  wireStaticControls();
  const keys = savedKeys();
  if (keys) {
    await login(keys, { fromStorage: true });
  } else {
    showLogin();
  }
}

function showLogin(message = "") {
  $("main").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("app-key").focus();
}

async function login(keys, { fromStorage = false } = {}) {
  const api = new Api(keys);
  try {
    state.instance = await api.get("/v1/instance");
  } catch (error) {
    if (error.status === 401) {
      forgetKeys();
      showLogin(fromStorage ? "Your saved keys no longer work. Log in again." : "Wrong App Key or Auth Key.");
    } else {
      showLogin(error.message);
    }
    return;
  }
  state.api = api;
  saveKeys(keys);
  $("login").hidden = true;
  $("main").hidden = false;
  showInstance(state.instance);
  showTab("overview");
  state.stopStream = api.follow(onLiveItem, onLiveState);
  startMonitor(api);
  await Promise.all([loadConversations(), loadEndpoints(), loadOverview(api, report)]);
}

// The instance line, the simulator (sandbox only), and what needs an operator's attention.
function showInstance(i) {
  $("instance-info").textContent = `Instance ${i.instance_id} · ${i.phone_number} · ${i.channel}`;
  $("simulator-tab").hidden = i.channel !== "sandbox";
  const attention = $("attention");
  attention.textContent = i.attention ? `This instance needs attention: ${i.attention}` : "";
  attention.hidden = !i.attention;
}

// A failure that may have flagged the instance (a token Meta refused): read it again.
async function refreshInstance() {
  try {
    state.instance = await state.api.get("/v1/instance");
    showInstance(state.instance);
  } catch (error) {
    report(error);
  }
}

function logout() {
  if (state.stopStream) state.stopStream();
  forgetKeys();
  Object.assign(state, { api: null, instance: null, stopStream: null, conversations: [], open: null });
  $("attention").hidden = true;
  stopMonitor();
  $("message-list").replaceChildren();
  $("conversation-list").replaceChildren();
  $("app-key").value = "";
  $("auth-key").value = "";
  showLogin();
}

function wireStaticControls() {
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    login({ appKey: $("app-key").value.trim(), authKey: $("auth-key").value.trim() });
  });
  $("logout").addEventListener("click", logout);
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => showTab(tab.dataset.tab));
  }
  // The tab list is one stop for Tab; the arrow keys, Home and End move between its tabs.
  document.querySelector(".tabs").addEventListener("keydown", (e) => {
    const tabs = [...document.querySelectorAll(".tab")].filter((t) => !t.hidden);
    const at = tabs.indexOf(document.activeElement);
    if (at < 0) return;
    const next = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: tabs.length - 1 }[e.key];
    if (next === undefined) return;
    e.preventDefault();
    const tab = tabs[(next + tabs.length) % tabs.length];
    showTab(tab.dataset.tab);
    tab.focus();
  });
  $("overview-refresh").addEventListener("click", () => loadOverview(state.api, report));
  initMonitor({ report });
  $("composer").addEventListener("submit", sendReply);
  let searching;
  $("conversation-search").addEventListener("input", () => {
    clearTimeout(searching);
    searching = setTimeout(loadConversations, 250);
  });
  $("compose-type").addEventListener("change", updateComposer);
  $("load-older").addEventListener("click", loadOlder);
  $("new-endpoint-events").replaceChildren(...eventChecks(["message", "ack.read"], "new"));
  $("new-endpoint").addEventListener("submit", addEndpoint);
  $("simulator").addEventListener("submit", simulate);
  $("message-list").addEventListener("click", downloadHeld);
  $("sim-type").addEventListener("change", updateSimulator);
}

function showTab(name) {
  for (const tab of document.querySelectorAll(".tab")) {
    const selected = tab.dataset.tab === name;
    tab.classList.toggle("active", selected);
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
  }
  for (const panel of document.querySelectorAll(".tab-panel")) {
    panel.hidden = panel.id !== `tab-${name}`;
  }
  if (name === "overview" && state.api) loadOverview(state.api, report);
}

// While the Overview is shown, what arrives live updates its figures (at most every 2 s).
function scheduleOverviewRefresh() {
  if ($("tab-overview").hidden || state.overviewTimer) return;
  state.overviewTimer = setTimeout(() => {
    state.overviewTimer = null;
    if (state.api) loadOverview(state.api, report);
  }, 2000);
}

// Shows a problem plainly at the top of the page for a while.
function report(error) {
  const banner = $("banner");
  banner.textContent = error instanceof ApiError || error instanceof Error ? error.message : String(error);
  banner.hidden = false;
  clearTimeout(report.timer);
  report.timer = setTimeout(() => (banner.hidden = true), 6000);
}

// ---- live updates ---------------------------------------------------------------------

function onLiveState(text) {
  const el = $("live-state");
  el.textContent = text === "live" ? "● live" : `● ${text}`;
  el.className = "live-state " + text;
  if (text === "unauthorized") logout();
}

function onLiveItem(kind, data) {
  if (kind === "event") {
    liveEvent(data);
    scheduleOverviewRefresh();
    const payload = data.payload;
    if (payload.event === "message") {
      if (payload.data.from === state.open) {
        appendMessage(storedFromEvent(payload.data));
        markOpenConversationRead();
        // The customer wrote: the window is open for a day from their message.
        showWindow(new Date((payload.data.timestamp + 24 * 3600) * 1000).toISOString());
      } else {
        scheduleConversationRefresh();
      }
    } else if (payload.event === "ack") {
      updateTicks(payload.data.message_id, payload.data.status);
      scheduleConversationRefresh();
      if (payload.data.status === "failed" && state.instance.channel === "meta") refreshInstance();
    }
  } else if (kind === "attempt") {
    liveAttempt(data);
  }
}

// The agent is looking at the thread, so what arrives in it is read at once.
async function markOpenConversationRead() {
  const number = state.open;
  try {
    await state.api.post(`/v1/conversations/${number}/read`);
  } catch (error) {
    report(error);
  }
  scheduleConversationRefresh();
}

function storedFromEvent(d) {
  return { ...d, direction: "inbound", status: "received" };
}

function scheduleConversationRefresh() {
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(loadConversations, 150);
}

// ---- conversations and thread ---------------------------------------------------------

async function loadConversations() {
  if (!state.api) return;
  try {
    const search = $("conversation-search").value.trim();
    const query = search ? `&q=${encodeURIComponent(search)}` : "";
    const { conversations } = await state.api.get(`/v1/conversations?limit=100${query}`);
    state.conversations = conversations;
    renderConversations();
  } catch (error) {
    report(error);
  }
}

function renderConversations() {
  $("conversation-list").replaceChildren(
    ...state.conversations.map((c) => conversationRow(c, c.number === state.open, openConversation)),
  );
  const none = $("no-conversations");
  none.hidden = state.conversations.length > 0;
  none.textContent = $("conversation-search").value.trim()
    ? "No conversation matches the search."
    : "No conversations yet. Use the Simulator to write in as a customer.";
}

async function openConversation(number) {
  state.open = number;
  const c = state.conversations.find((x) => x.number === number);
  $("thread-title").textContent = c && c.name ? `${c.name} · ${number}` : number;
  $("composer").hidden = false;
  $("message-list").replaceChildren();
  try {
    const page = await state.api.get(`/v1/conversations/${number}/messages?limit=30`);
    showWindow(page.window_expires_at);
    $("message-list").replaceChildren(...page.messages.reverse().map(messageBubble));
    fillHeldMedia();
    state.olderBefore = page.next;
    $("load-older").hidden = !page.next;
    scrollThread();
    if (c && c.unread > 0) {
      await state.api.post(`/v1/conversations/${number}/read`);
      c.unread = 0;
    }
    renderConversations();
  } catch (error) {
    report(error);
  }
}

// WhatsApp's 24-hour customer-service window, as the thread's header says it: free-form
// replies only while it is open, templates always.
function showWindow(expiresAt) {
  const note = $("thread-window");
  note.hidden = false;
  const left = expiresAt ? new Date(expiresAt) - Date.now() : -1;
  note.dataset.open = String(left > 0);
  if (!expiresAt) {
    note.textContent = "The customer has not written yet: only a template can be sent.";
  } else if (left <= 0) {
    note.textContent = "Window closed: send a template.";
  } else if (left >= 3600 * 1000) {
    note.textContent = `Window open: closes in ${Math.floor(left / (3600 * 1000))} h.`;
  } else {
    note.textContent = `Window open: closes in ${Math.max(1, Math.round(left / 60000))} min.`;
  }
}

async function loadOlder() {
  if (!state.olderBefore) return;
  try {
    const page = await state.api.get(`/v1/conversations/${state.open}/messages?limit=30&before=${state.olderBefore}`);
    $("message-list").prepend(...page.messages.reverse().map(messageBubble));
    fillHeldMedia();
    state.olderBefore = page.next;
    $("load-older").hidden = !page.next;
  } catch (error) {
    report(error);
  }
}

function appendMessage(message) {
  if (document.querySelector(`[data-message-id="${CSS.escape(message.message_id)}"]`)) return;
  $("message-list").append(messageBubble(message));
  fillHeldMedia();
  scrollThread();
}

// Pictures Meta holds are fetched with the keys (an <img> cannot send them) and shown from
// memory; files are fetched the same way when clicked.
function fillHeldMedia() {
  for (const img of document.querySelectorAll("#message-list img[data-held]:not([src])")) {
    state.api.blobUrl(img.dataset.held).then((url) => (img.src = url)).catch(() => (img.alt = "(the picture could not be fetched)"));
  }
}

async function downloadHeld(event) {
  const button = event.target.closest("button[data-held]");
  if (!button) return;
  try {
    const link = h("a", { href: await state.api.blobUrl(button.dataset.held), download: button.dataset.filename });
    link.click();
  } catch (error) {
    report(error);
  }
}

function updateTicks(messageId, status) {
  const bubble = document.querySelector(`.bubble[data-message-id="${CSS.escape(messageId)}"]`);
  const old = bubble && bubble.querySelector(".ticks");
  if (old) old.replaceWith(ticks(status));
}

function scrollThread() {
  const thread = $("thread");
  thread.scrollTop = thread.scrollHeight;
}

function updateComposer() {
  const type = $("compose-type").value;
  $("compose-media").hidden = type !== "image";
  $("compose-file").hidden = type !== "image";
  $("compose-buttons").hidden = type !== "buttons";
  $("compose-body").placeholder = type === "image" ? "Caption (optional)" : "Type a message";
}

async function sendReply(event) {
  event.preventDefault();
  const type = $("compose-type").value;
  const body = $("compose-body").value;
  const request = { to: state.open, type, body };
  if (type === "image") {
    request.caption = body;
    delete request.body;
    const file = $("compose-file").files[0];
    if (file) {
      // An attached picture is uploaded first and sent by its media id.
      const form = new FormData();
      form.append("file", file);
      try {
        request.media_id = (await state.api.post("/v1/media", form)).media_id;
      } catch (error) {
        report(error);
        return;
      }
      $("compose-file").value = "";
    } else {
      request.media_url = $("compose-media").value.trim();
    }
  }
  if (type === "buttons") {
    request.buttons = $("compose-buttons").value.split(",").map((t) => t.trim()).filter(Boolean).map((title) => ({ title }));
  }
  try {
    const sent = await state.api.post("/v1/messages", request);
    const shown = {
      message_id: sent.message_id,
      direction: "outbound",
      type,
      body,
      status: sent.status,
      timestamp: Math.floor(Date.now() / 1000),
    };
    if (type === "image") shown.media = request.media_id ? { id: request.media_id } : { url: request.media_url };
    if (type === "buttons") shown.buttons = request.buttons;
    appendMessage(shown);
    $("compose-body").value = "";
    scheduleConversationRefresh();
  } catch (error) {
    report(error);
  }
}

// ---- webhooks -------------------------------------------------------------------------

async function loadEndpoints() {
  try {
    const { webhooks } = await state.api.get("/v1/webhooks");
    $("endpoint-list").replaceChildren(
      ...(webhooks.length ? webhooks.map(endpointCard) : [h("p", { className: "muted" }, "No endpoints yet.")]),
    );
  } catch (error) {
    report(error);
  }
}

// What the API calls each destination kind, as the card shows it.
const KIND_NAMES = { webhook: "Webhook", nats: "NATS", rabbitmq: "RabbitMQ", redis: "Redis" };

// A rate-limit field's value for the API: a whole number, or null for none.
function rateLimitOf(input) {
  const text = input.value.trim();
  return text === "" ? null : Number(text);
}

function endpointCard(ep) {
  const url = h("input", { value: ep.url, className: "endpoint-url", "aria-label": "URL" });
  const rate = h("input", {
    type: "number", min: "1", max: "100000", step: "1", placeholder: "none",
    value: ep.rate_limit ?? "", className: "endpoint-rate", "aria-label": "Rate limit, deliveries a second",
  });
  const kind = h("span", { className: `kind kind-${ep.kind}`, title: "Destination kind" }, KIND_NAMES[ep.kind] || ep.kind);
  const pace = h("span", { className: "pace small muted" }, ep.rate_limit ? `at most ${ep.rate_limit}/s` : "no rate limit");
  const checks = h("div", { className: "checks" }, eventChecks(ep.events, ep.id));
  const enabled = h("input", { type: "checkbox", checked: ep.enabled, className: "endpoint-enabled" });
  const secret = h("code", { className: "secret", "data-secret": "hidden" }, "whsec_••••••••");
  const result = h("p", { className: "test-result small" });
  const dead = h("div", { className: "dead-list" });
  const health = ep.disabled_reason
    ? h("p", { className: "endpoint-problem", role: "status" }, ep.disabled_reason)
    : ep.failing_since
      ? h("p", { className: "endpoint-problem small" }, `Every attempt has failed since ${new Date(ep.failing_since).toLocaleString()}.`)
      : null;
  const card = h(
    "div",
    { className: "card endpoint", "data-endpoint-id": ep.id, "data-kind": ep.kind },
    h("div", { className: "endpoint-head" }, kind, " ", pace),
    h("label", {}, "URL ", url),
    h("label", {}, "Rate limit ", rate, " deliveries a second"),
    checks,
    h("label", { className: "check" }, enabled, " Enabled"),
    health,
    h("div", { className: "secret-row" }, "Secret: ", secret,
      h("button", { className: "link reveal", onclick: () => {
        const shown = secret.dataset.secret === "shown";
        secret.textContent = shown ? "whsec_••••••••" : ep.secret;
        secret.dataset.secret = shown ? "hidden" : "shown";
      } }, "Reveal"),
      h("button", { className: "link rotate", onclick: () => rotate(ep.id) }, "Rotate")),
    endpointHealth(state.api, ep.id, report),
    h("div", { className: "actions" },
      h("button", { className: "save", onclick: () => saveEndpoint(ep.id, {
        url: url.value, events: checkedEvents(checks), enabled: enabled.checked, rate_limit: rateLimitOf(rate),
      }) }, "Save"),
      h("button", { className: "test", onclick: () => testEndpoint(ep.id, result) }, "Send test event"),
      h("button", { className: "show-dead", onclick: () => showDead(ep.id, dead) }, "Dead deliveries"),
      h("button", { className: "danger delete", onclick: () => deleteEndpoint(ep.id) }, "Delete")),
    result,
    dead,
  );
  return card;
}

// The events this endpoint never took, newest first, each with a resend button, and one
// button that resends them all (oldest first, so conversations keep their order).
async function showDead(endpointId, box) {
  try {
    const { deliveries } = await state.api.get(`/v1/deliveries/dead?endpoint_id=${encodeURIComponent(endpointId)}&limit=50`);
    if (!deliveries.length) {
      box.replaceChildren(h("p", { className: "muted small" }, "No dead deliveries."));
      return;
    }
    const rows = deliveries.map((d) => h("li", { className: "dead", "data-event-id": d.event_id },
      h("span", { className: "small" }, `${new Date(d.event_created_at).toLocaleString()} · ${d.event_type} · ${d.conversation} · `),
      h("span", { className: "small muted" }, d.last_error || ""),
      h("button", { className: "link resend-one", onclick: async () => {
        try {
          await state.api.post(`/v1/events/${d.event_id}/resend`, { endpoint_id: endpointId });
          await showDead(endpointId, box);
        } catch (error) {
          report(error);
        }
      } }, "Resend")));
    box.replaceChildren(
      h("div", { className: "dead-head" }, h("strong", {}, `Dead deliveries (${deliveries.length}${deliveries.length === 50 ? "+" : ""})`),
        h("button", { className: "resend-all", onclick: async () => {
          try {
            const r = await state.api.post("/v1/deliveries/dead/resend", { endpoint_id: endpointId });
            report(`${r.scheduled} deliveries scheduled again${r.more ? "; more remain, press again" : ""}.`);
            await showDead(endpointId, box);
          } catch (error) {
            report(error);
          }
        } }, "Resend all")),
      h("ul", { className: "dead-rows" }, rows));
  } catch (error) {
    report(error);
  }
}

async function addEndpoint(event) {
  event.preventDefault();
  try {
    await state.api.post("/v1/webhooks", {
      url: $("new-endpoint-url").value.trim(),
      events: checkedEvents($("new-endpoint-events")),
      rate_limit: rateLimitOf($("new-endpoint-rate")),
    });
    $("new-endpoint-url").value = "";
    $("new-endpoint-rate").value = "";
    await loadEndpoints();
  } catch (error) {
    report(error);
  }
}

// `change` holds url, events, enabled and rate_limit. A broker URL comes back with its
// password shown as ****; sent back like that, the server keeps the real one.
async function saveEndpoint(id, change) {
  try {
    await state.api.patch(`/v1/webhooks/${id}`, change);
    report("Saved.");
    await loadEndpoints();
  } catch (error) {
    report(error);
  }
}

async function rotate(id) {
  try {
    await state.api.post(`/v1/webhooks/${id}/rotate-secret`);
    report("New secret made. The old one keeps signing beside it for 24 hours: update your receiver before then.");
    await loadEndpoints();
  } catch (error) {
    report(error);
  }
}

async function testEndpoint(id, result) {
  result.textContent = "Sending…";
  try {
    const r = await state.api.post(`/v1/webhooks/${id}/test`);
    result.dataset.outcome = r.outcome;
    // A broker answers with its acknowledgement instead of an HTTP status.
    const answer = r.status_code ? `HTTP ${r.status_code}` : r.response;
    result.textContent = r.outcome === "success"
      ? `✓ Delivered: ${answer} in ${r.duration_ms} ms`
      : `✗ Failed: ${r.error || answer} (${r.duration_ms} ms)`;
  } catch (error) {
    result.textContent = "";
    report(error);
  }
}

async function deleteEndpoint(id) {
  if (!confirm("Delete this endpoint? Its undelivered events will not be sent.")) return;
  try {
    await state.api.delete(`/v1/webhooks/${id}`);
    await loadEndpoints();
  } catch (error) {
    report(error);
  }
}

// ---- simulator ------------------------------------------------------------------------

function updateSimulator() {
  const type = $("sim-type").value;
  $("sim-media-label").hidden = type !== "image";
  $("sim-button-label").hidden = type !== "button";
  $("sim-body-label").firstChild.textContent = type === "image" ? "Caption " : type === "button" ? "Button title " : "Text ";
}

async function simulate(event) {
  event.preventDefault();
  const type = $("sim-type").value;
  const request = { from: $("sim-from").value.trim(), type, body: $("sim-body").value, name: $("sim-name").value || undefined };
  if (type === "image") {
    request.media_url = $("sim-media").value.trim();
    request.caption = request.body;
    delete request.body;
  }
  if (type === "button") request.button_id = $("sim-button-id").value.trim() || undefined;
  try {
    const r = await state.api.post("/v1/sandbox/inbound", request);
    $("sim-result").textContent = `Sent ${r.message_id}`;
  } catch (error) {
    $("sim-result").textContent = "";
    report(error);
  }
}

start();

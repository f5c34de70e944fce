// End-to-end tests of the Cloud Chat Portal: the real botlinkd binary, a real webhook
// receiver, and Debian's Chromium driven by playwright-core. Screenshots of the main screens
// are taken along the way (written to docs/screenshots/ for the README and docs/portal.md with UPDATE_SCREENSHOTS=1).

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { createHmac } from "node:crypto";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const binary = process.env.BOTLINKD_BIN || join(root, "target/debug/botlinkd");
// Screenshots go to docs/screenshots/ with UPDATE_SCREENSHOTS=1, elsewhere to a scratch folder.
const shots = process.env.UPDATE_SCREENSHOTS
  ? join(root, "docs/screenshots")
  : mkdtempSync(join(tmpdir(), "botlinkd-shots-"));
const chromiumPath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const axeSource = readFileSync(join(dirname(fileURLToPath(import.meta.url)), "node_modules/axe-core/axe.min.js"), "utf8");

// Starts `botlinkd serve` in a fresh directory and reads the banner it prints.
// `graphUrl` stands in for Meta's Graph API.
async function startServer(graphUrl) {
  const dir = mkdtempSync(join(tmpdir(), "botlinkd-portal-"));
  const child = spawn(binary, [
    "serve", "--listen", "127.0.0.1:0", "--webhook-allow-cidrs", "127.0.0.0/8", "--meta-graph-url", graphUrl,
    "--sandbox-delivered-after", "400ms", "--sandbox-read-after", "900ms",
    "--retry-schedule", "1s,1s",
  ], { cwd: dir, env: { ...process.env, BOTLINKD_LOG: "warn" }, stdio: ["ignore", "pipe", "inherit"] });
  const banner = await new Promise((resolvePromise, reject) => {
    let text = "";
    const timer = setTimeout(() => reject(new Error("botlinkd printed no banner:\n" + text)), 20000);
    child.stdout.on("data", (chunk) => {
      text += chunk;
      if (text.includes("Portal:")) {
        clearTimeout(timer);
        resolvePromise(text);
      }
    });
    child.on("exit", (code) => reject(new Error(`botlinkd exited with ${code}:\n${text}`)));
  });
  const value = (label) => banner.split("\n").find((l) => l.trim().startsWith(label)).split(label)[1].trim();
  return {
    child,
    dir,
    base: banner.match(/listening on (http:\/\/\S+)/)[1],
    appKey: value("App Key:"),
    authKey: value("Auth Key:"),
    stop() {
      child.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// A 1×1 PNG, base64.
const PARCEL_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";
const PARCEL_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="240" height="160" viewBox="0 0 240 160">
<rect width="240" height="160" fill="#f4e3c1"/><rect x="70" y="40" width="100" height="80" fill="#c8955a" stroke="#8a5a2b" stroke-width="3"/>
<rect x="112" y="40" width="16" height="80" fill="#e8c48a"/><text x="120" y="145" font-family="sans-serif" font-size="14" text-anchor="middle" fill="#5a3a1a">Invoice #1001</text></svg>`;

// A webhook receiver that records every request (and serves a picture on GET). Under
// /v24.0/ it plays a Graph API that serves media but refuses every send (Meta's code 190).
async function startReceiver() {
  const received = [];
  const waiters = [];
  const server = createServer((req, res) => {
    const port = server.address().port;
    if (req.method === "GET" && req.url.startsWith("/v24.0/")) {
      const id = req.url.split("/").pop();
      res.writeHead(200, { "Content-Type": "application/json" })
        .end(JSON.stringify({ url: `http://127.0.0.1:${port}/media/${id}`, mime_type: "image/svg+xml", id }));
      return;
    }
    if (req.url.startsWith("/v24.0/")) {
      res.writeHead(401, { "Content-Type": "application/json" })
        .end(JSON.stringify({ error: { message: "Error validating access token: Session has expired", code: 190 } }));
      return;
    }
    if (req.method === "GET") {
      // A picture for messages with media.
      res.writeHead(200, { "Content-Type": "image/svg+xml" }).end(PARCEL_SVG);
      return;
    }
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      // `/gone` says the endpoint is gone; `/fail` fails while `failing` is set.
      const status = req.url === "/gone" ? 410 : req.url === "/fail" && receiver.failing ? 500 : 200;
      const entry = { headers: req.headers, json: JSON.parse(body), path: req.url, status };
      received.push(entry);
      res.writeHead(status).end(status === 200 ? "ok" : "no");
      for (const w of waiters.splice(0)) w();
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const receiver = {
    failing: true,
    url: `http://127.0.0.1:${server.address().port}/hook`,
    base: `http://127.0.0.1:${server.address().port}`,
    picture: `http://127.0.0.1:${server.address().port}/parcel.svg`,
    received,
    // Waits until `predicate` holds for some received request.
    async waitFor(predicate, timeout = 10000) {
      const deadline = Date.now() + timeout;
      for (;;) {
        const found = received.find(predicate);
        if (found) return found;
        if (Date.now() > deadline) throw new Error("receiver never got the expected webhook");
        await new Promise((r) => { waiters.push(r); setTimeout(r, 200); });
      }
    },
    close: () => server.close(),
  };
  return receiver;
}

// Hides the notice banner so that screenshots show the page itself.
async function hideBanner(page) {
  await page.evaluate(() => (document.getElementById("banner").hidden = true));
}

describe("Cloud Chat Portal", () => {
  let server, receiver, browser, page;

  const api = async (method, path, body) => {
    const response = await fetch(server.base + path, {
      method,
      headers: {
        Authorization: "Basic " + Buffer.from(`${server.appKey}:${server.authKey}`).toString("base64"),
        "Content-Type": "application/json",
      },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await response.text();
    return text ? JSON.parse(text) : null;
  };

  before(async () => {
    mkdirSync(shots, { recursive: true });
    receiver = await startReceiver();
    server = await startServer(receiver.base);
    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    });
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    page.on("pageerror", (error) => console.error("page error:", error));
  });

  after(async () => {
    await browser?.close();
    receiver?.close();
    server?.stop();
  });

  test("wrong keys are refused plainly, right keys log in and survive a reload", async () => {
    await page.goto(server.base + "/portal");
    await page.locator("#login-form").waitFor();
    await page.screenshot({ path: join(shots, "login.png") });
    await page.fill("#app-key", server.appKey);
    await page.fill("#auth-key", "not-the-key");
    await page.click("#login-button");
    await page.getByText("Wrong App Key or Auth Key.").waitFor();
    assert.equal(page.url().includes(server.authKey), false);

    await page.fill("#auth-key", server.authKey);
    await page.click("#login-button");
    await page.locator("#main").waitFor();
    await page.locator("#live-state.live").waitFor();
    assert.match(await page.textContent("#instance-info"), /sandbox/);

    await page.reload();
    await page.locator("#main").waitFor();
    await page.locator("#live-state.live").waitFor();
    const stored = await page.evaluate(() => localStorage.getItem("botlinkd.keys"));
    assert.ok(stored.includes(server.appKey));
  });

  test("webhook settings: add, refuse an internal URL, send a test event", async () => {
    await page.click('.tab[data-tab="webhooks"]');
    await page.fill("#new-endpoint-url", "http://10.1.2.3/hook");
    await page.click('#new-endpoint button[type="submit"]');
    await page.locator("#banner", { hasText: "internal address" }).waitFor();

    await page.fill("#new-endpoint-url", receiver.url);
    // Message Received and Message Read are ticked by default; add Sent and Delivered.
    await page.check('#new-endpoint-events input[value="ack.sent"]');
    await page.check('#new-endpoint-events input[value="ack.delivered"]');
    await page.click('#new-endpoint button[type="submit"]');
    const card = page.locator(".endpoint").first();
    await card.waitFor();
    assert.equal(await card.locator(".endpoint-url").inputValue(), receiver.url);
    await card.locator("button.test").click();
    await card.locator('.test-result[data-outcome="success"]').waitFor();
    await receiver.waitFor((r) => r.json.event === "test");
    await hideBanner(page);
    await page.screenshot({ path: join(shots, "webhooks.png") });
    await card.locator("button.reveal").click();
    assert.match(await card.locator(".secret").textContent(), /^whsec_/);
  });

  test("a simulated customer message appears live, and the reply's ticks advance", async () => {
    await page.click('.tab[data-tab="simulator"]');
    await page.fill("#sim-from", "447123456789");
    await page.fill("#sim-name", "Ann");
    await page.fill("#sim-body", "Hello, where is my order?");
    await hideBanner(page);
    await page.screenshot({ path: join(shots, "simulator.png") });
    await page.click("#sim-send");
    await page.locator("#sim-result", { hasText: "wamid." }).waitFor();

    await page.click('.tab[data-tab="chats"]');
    const row = page.locator('.conversation[data-number="447123456789"]');
    await row.locator(".unread").waitFor();
    await row.click();
    await page.locator(".bubble.in", { hasText: "Hello, where is my order?" }).waitFor();
    // The customer just wrote: the 24-hour window is open.
    await page.locator('#thread-window[data-open="true"]', { hasText: /closes in 2[34] h/ }).waitFor();
    const hook = await receiver.waitFor((r) => r.json.event === "message");
    assert.equal(hook.json.data.body, "Hello, where is my order?");

    // A message from "outside" the browser (the API) reaches the open thread live.
    const started = Date.now();
    await api("POST", "/v1/sandbox/inbound", { from: "447123456789", body: "Order #1001 please" });
    await page.locator(".bubble.in", { hasText: "Order #1001 please" }).waitFor();
    console.log(`# event to screen: ${Date.now() - started} ms`);

    await page.fill("#compose-body", "It ships today!");
    await page.click("#compose-send");
    const bubble = page.locator(".bubble.out", { hasText: "It ships today!" });
    await bubble.waitFor();
    await bubble.locator('.ticks[data-status="read"]').waitFor();

    await page.selectOption("#compose-type", "image");
    await page.fill("#compose-media", receiver.picture);
    await page.fill("#compose-body", "Your invoice");
    await page.click("#compose-send");
    await page.locator(".bubble.out[data-type=image] img.media").waitFor();

    // A picture attached from the computer is uploaded, sent by its media id, and shown.
    await page.setInputFiles("#compose-file", { name: "label.png", mimeType: "image/png", buffer: Buffer.from(PARCEL_PNG, "base64") });
    await page.fill("#compose-body", "Your label");
    await page.click("#compose-send");
    const attached = page.locator('.bubble.out[data-type=image]', { hasText: "Your label" }).locator('img.media[src^="blob:"]');
    await attached.waitFor();
    assert.ok(await attached.evaluate((img) => img.complete && img.naturalWidth > 0), "the uploaded picture is shown");

    await page.selectOption("#compose-type", "buttons");
    await page.fill("#compose-body", "Anything else?");
    await page.fill("#compose-buttons", "Track, Cancel");
    await page.click("#compose-send");
    await page.locator(".bubble.out[data-type=buttons] .button-chip", { hasText: "Cancel" }).waitFor();

    // The customer presses a button: shown as a button reply.
    await api("POST", "/v1/sandbox/inbound", { from: "447123456789", type: "button", body: "Track", button_id: "track" });
    await page.locator('.bubble.in[data-type="button"]', { hasText: "Track" }).waitFor();
    await page.locator('.bubble.out[data-type="buttons"] .ticks[data-status="read"]').waitFor();
    // The list can be searched by number or name.
    await api("POST", "/v1/sandbox/inbound", { from: "447000000555", name: "Zoe Quinn", body: "hi" });
    await page.locator('.conversation[data-number="447000000555"]').waitFor();
    await page.fill("#conversation-search", "zoe");
    await page.locator('.conversation[data-number="447123456789"]').waitFor({ state: "detached" });
    await page.locator('.conversation[data-number="447000000555"]').waitFor();
    await page.fill("#conversation-search", "4471234");
    await page.locator('.conversation[data-number="447000000555"]').waitFor({ state: "detached" });
    await page.locator('.conversation[data-number="447123456789"]').waitFor();
    await page.fill("#conversation-search", "");
    await page.locator('.conversation[data-number="447000000555"]').waitFor();
    // What arrives in the open conversation counts as read.
    await page.locator('.conversation[data-number="447123456789"]:not(:has(.unread))').waitFor();
    await page.screenshot({ path: join(shots, "chats.png") });
  });

  test("the monitor shows events with their attempts and resends", async () => {
    await page.click('.tab[data-tab="monitor"]');
    const entry = page.locator('.event[data-type="message"]').first();
    await entry.waitFor();
    await entry.locator('.outcome[data-outcome="delivered"]').waitFor();
    await entry.locator(".event-toggle").click();
    await entry.locator('.attempts tr[data-outcome="success"]').first().waitFor();
    assert.match(await entry.locator(".json").textContent(), /"event": "message"/);
    const eventId = await entry.getAttribute("data-event-id");
    const before = receiver.received.filter((r) => r.headers["webhook-id"] === eventId).length;
    await entry.locator("button.resend").click();
    await receiver.waitFor((r) => r.headers["webhook-id"] === eventId && receiver.received.filter((x) => x.headers["webhook-id"] === eventId).length > before);
    await hideBanner(page);
    await page.screenshot({ path: join(shots, "monitor.png") });
  });

  test("the monitor's history survives a reload, and its filters and search narrow it", async () => {
    const first = await api("POST", "/v1/sandbox/inbound", { from: "447700900301", body: "history one" });
    await api("POST", "/v1/sandbox/inbound", { from: "447700900302", body: "history two" });
    const reply = await api("POST", "/v1/messages", { to: "447700900301", body: "answer one" });
    await receiver.waitFor((r) => r.json.event === "ack" && r.json.data.message_id === reply.message_id && r.json.data.status === "read");
    await page.reload();
    await page.click('.tab[data-tab="monitor"]');
    // Events from before the page was opened are there, newest first.
    await page.locator(".event", { hasText: "history two" }).waitFor();
    await page.locator(".event", { hasText: "history one" }).waitFor();
    // The list is marked busy while a change of filters or a search loads it.
    const shown = async () => {
      await page.locator('#event-list[aria-busy="false"]').waitFor();
      return page.locator(".event").evaluateAll((items) => items.map((i) => ({
        type: i.dataset.type, outcome: i.dataset.outcome, text: i.querySelector(".json").textContent })));
    };

    await page.selectOption("#filter-type", "ack.read");
    let list = await shown();
    assert.ok(list.length > 0 && list.every((e) => e.type === "ack.read"), JSON.stringify(list));
    assert.ok(list.some((e) => e.text.includes(reply.message_id)));

    await page.selectOption("#filter-type", "");
    await page.fill("#filter-number", "+44 7700 900302");
    await page.click("#filter-apply");
    list = await shown();
    assert.deepEqual(list.map((e) => e.type), ["message"]);
    assert.match(list[0].text, /history two/);

    // Live events that match the filters arrive on top while filtered; others do not.
    await api("POST", "/v1/sandbox/inbound", { from: "447700900303", body: "someone else" });
    await api("POST", "/v1/sandbox/inbound", { from: "447700900302", body: "history three" });
    await page.locator(".event", { hasText: "history three" }).waitFor();
    assert.match(await page.locator(".event").first().textContent(), /history three/);
    assert.equal(await page.locator(".event", { hasText: "someone else" }).count(), 0);

    await page.fill("#filter-number", "");
    await page.selectOption("#filter-outcome", "delivered");
    await page.selectOption("#filter-time", "3600");
    list = await shown();
    assert.ok(list.length > 2 && list.every((e) => e.outcome === "delivered"), JSON.stringify(list.map((e) => e.outcome)));

    // A custom range that ended before the test's events holds none of them; one that runs to
    // now holds them all again.
    await page.selectOption("#filter-outcome", "");
    await page.selectOption("#filter-time", "custom");
    const local = (d) => new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
    await page.fill("#filter-from", local(new Date(Date.now() - 2 * 86400000)));
    await page.fill("#filter-to", local(new Date(Date.now() - 86400000)));
    await page.click("#filter-apply");
    assert.deepEqual(await shown(), []);
    await page.fill("#filter-to", local(new Date(Date.now() + 60000)));
    await page.click("#filter-apply");
    list = await shown();
    assert.ok(list.some((e) => e.text.includes("history three")), JSON.stringify(list.length));

    // Search by message id finds the message's event and its receipts.
    await page.click("#filter-clear");
    await page.fill("#event-search", reply.message_id);
    await page.click("#filter-apply");
    list = await shown();
    assert.ok(list.length >= 3 && list.every((e) => e.type.startsWith("ack.") && e.text.includes(reply.message_id)), JSON.stringify(list));
    await page.fill("#event-search", first.message_id);
    await page.click("#filter-apply");
    list = await shown();
    assert.equal(list.length, 1);
    assert.match(list[0].text, /history one/);
    await page.fill("#event-search", "wamid.nothing-like-this");
    await page.click("#filter-apply");
    assert.deepEqual(await shown(), []);
    await page.locator("#no-events", { hasText: "No event matches the search." }).waitFor();
    await page.click("#filter-clear");
    await page.locator(".event", { hasText: "history three" }).waitFor();
  });

  test("changing the event checkboxes changes what the receiver gets", async () => {
    await page.click('.tab[data-tab="webhooks"]');
    const card = page.locator(".endpoint").first();
    await card.locator('input[value="message"]').uncheck();
    await card.locator("button.save").click();
    await page.locator("#banner", { hasText: "Saved." }).waitFor();
    const count = receiver.received.filter((r) => r.json.event === "message").length;

    await api("POST", "/v1/sandbox/inbound", { from: "447000000009", body: "not for the webhook" });
    await page.click('.tab[data-tab="monitor"]');
    await page.locator('.event[data-type="message"]', { hasText: "not for the webhook" }).waitFor();
    // A reply in the same conversation still sends its receipts, and they are ordered after
    // the message: once the read receipt is in, the message would have arrived had it gone.
    const sent = await api("POST", "/v1/messages", { to: "447000000009", body: "hello" });
    await receiver.waitFor((r) => r.json.event === "ack" && r.json.data.message_id === sent.message_id && r.json.data.status === "read");
    assert.equal(receiver.received.filter((r) => r.json.event === "message").length, count);
  });

  test("a message-bus destination shows its kind, its rate limit and a masked password", async () => {
    await page.click('.tab[data-tab="webhooks"]');
    await page.fill("#new-endpoint-url", "amqp://shop:Sup3r-S3cret@127.0.0.1:5672/%2f?exchange=botlinkd_portal&routing_key=wa");
    await page.fill("#new-endpoint-rate", "25");
    await page.click('#new-endpoint button[type="submit"]');
    const card = page.locator('.endpoint[data-kind="rabbitmq"]');
    await card.waitFor();
    assert.equal(await card.locator(".kind").textContent(), "RabbitMQ");
    assert.equal(await card.locator(".pace").textContent(), "at most 25/s");
    const shown = await card.locator(".endpoint-url").inputValue();
    assert.match(shown, /^amqp:\/\/shop:\*\*\*\*@127\.0\.0\.1:5672\//);
    // Saved with the masked URL as shown, and the limit cleared: the server keeps the password.
    await card.locator(".endpoint-rate").fill("");
    await card.locator("button.save").click();
    await page.locator("#banner", { hasText: "Saved." }).waitFor();
    await page.locator('.endpoint[data-kind="rabbitmq"] .pace', { hasText: "no rate limit" }).waitFor();
    const [saved] = (await api("GET", "/v1/webhooks")).webhooks.filter((w) => w.kind === "rabbitmq");
    assert.equal(saved.url, shown);
    assert.equal(saved.rate_limit, null);
    await api("DELETE", `/v1/webhooks/${saved.id}`);
    await page.click('.tab[data-tab="monitor"]');
  });

  test("an endpoint that is gone says why, and dead deliveries are resent from the card", async () => {
    const failing = await api("POST", "/v1/webhooks", { url: receiver.base + "/fail", events: ["message"] });
    const gone = await api("POST", "/v1/webhooks", { url: receiver.base + "/gone", events: ["message"] });
    await api("POST", "/v1/sandbox/inbound", { from: "447700900555", body: "is anyone there?" });
    // /gone disables its endpoint at once; /fail dies after the two 1 s retries.
    for (let i = 0; ; i++) {
      const [dead, ep] = await Promise.all([
        api("GET", `/v1/deliveries/dead?endpoint_id=${failing.id}`), api("GET", `/v1/webhooks/${gone.id}`)]);
      if (dead.deliveries.length === 1 && ep.enabled === false) break;
      assert.ok(i < 100, "the delivery never died or the endpoint was never disabled");
      await new Promise((r) => setTimeout(r, 100));
    }
    receiver.failing = false;
    await page.reload();
    await page.click('.tab[data-tab="webhooks"]');
    const goneCard = page.locator(`.endpoint[data-endpoint-id="${gone.id}"]`);
    await goneCard.locator(".endpoint-problem", { hasText: "410 Gone" }).waitFor();
    const card = page.locator(`.endpoint[data-endpoint-id="${failing.id}"]`);
    // Its chart shows the failures, in the last hour and in the last 24 hours.
    await card.locator(".chart .bucket rect.failed").first().waitFor();
    assert.match(await card.locator(".health-figures").textContent(), /0 delivered · 3 failed/);
    assert.match(await card.locator(".chart").getAttribute("aria-label"), /Last hour: 0 delivered, 3 failed/);
    await card.locator('button.range[data-range="day"]').click();
    await card.locator('.chart[aria-label^="Last 24 hours: 0 delivered, 3 failed"]').waitFor();
    assert.match(await card.locator(".health-queue").textContent(), /0 waiting · last success never/);
    await card.screenshot({ path: join(shots, "endpoint-chart.png") });
    await card.locator("button.show-dead").click();
    await card.locator(".dead-rows li").first().waitFor();
    await page.screenshot({ path: join(shots, "dead-deliveries.png") });
    await card.locator("button.resend-all").click();
    const taken = await receiver.waitFor((r) => r.path === "/fail" && r.status === 200);
    assert.equal(taken.json.data.body, "is anyone there?");
    await card.locator(".dead-list", { hasText: "No dead deliveries." }).waitFor();
    await api("DELETE", `/v1/webhooks/${failing.id}`);
    await api("DELETE", `/v1/webhooks/${gone.id}`);
  });

  test("the overview counts what the test sent", async () => {
    await page.click('.tab[data-tab="overview"]');
    const figure = async (name) => (await page.locator(`.figure[data-figure="${name}"] .figure-value`).textContent()).trim();
    await page.locator('.figure[data-figure="messages_in"]').waitFor();
    const before = { in: Number(await figure("messages_in")), out: Number(await figure("messages_out")) };
    for (const body of ["count me 1", "count me 2", "count me 3"]) {
      await api("POST", "/v1/sandbox/inbound", { from: "447700900401", body });
    }
    const sent = await api("POST", "/v1/messages", { to: "447700900401", body: "counted" });
    await receiver.waitFor((r) => r.json.event === "ack" && r.json.data.message_id === sent.message_id && r.json.data.status === "read");
    // The page refreshes itself from the live events; the button does it at once.
    await page.click("#overview-refresh");
    await page.waitForFunction(({ n }) =>
      document.querySelector('.figure[data-figure="messages_in"] .figure-value').textContent.trim() === String(n), { n: before.in + 3 });
    assert.equal(Number(await figure("messages_out")), before.out + 1);
    const overview = await api("GET", `/v1/overview?since=${encodeURIComponent(new Date(new Date().setHours(0, 0, 0, 0)).toISOString())}`);
    assert.equal(await figure("deliveries_waiting"), String(overview.deliveries_waiting));
    assert.equal(await figure("webhook_success_percent"), `${overview.webhook_success_percent}%`);
    assert.equal(await figure("read_percent"), `${overview.read_percent}%`);
    assert.equal(await figure("endpoints_disabled"), String(overview.endpoints_disabled));
    assert.match(await page.locator("#overview-sparkline svg").getAttribute("aria-label"), /Messages per hour today/);
    await hideBanner(page);
    await page.screenshot({ path: join(shots, "overview.png") });
  });

  test("every tab works from the keyboard, and axe-core finds no serious problem on any", async () => {
    await page.click('.tab[data-tab="overview"]');
    await page.focus('.tab[data-tab="overview"]');
    await page.keyboard.press("ArrowRight");
    assert.equal(await page.evaluate(() => document.activeElement.dataset.tab), "chats");
    assert.equal(await page.locator("#tab-chats").isVisible(), true);
    await page.keyboard.press("ArrowRight");
    assert.equal(await page.locator("#tab-monitor").isVisible(), true);
    // Tab leaves the tab list (one stop), passes Log out, and reaches the Monitor's filters.
    await page.keyboard.press("Tab");
    await page.keyboard.press("Tab");
    assert.equal(await page.evaluate(() => document.activeElement.id), "filter-type");
    // An event opens with Enter.
    await page.locator(".event-toggle").first().focus();
    await page.keyboard.press("Enter");
    assert.equal(await page.locator(".event-toggle").first().getAttribute("aria-expanded"), "true");
    await page.keyboard.press("End");
    assert.equal(await page.evaluate(() => document.activeElement.dataset.tab ?? null), null, "End only moves within the tab list");

    // axe-core runs in a page of its own, allowed to inject its script (the portal's CSP refuses inline scripts).
    const context = await browser.newContext({ bypassCSP: true, viewport: { width: 1280, height: 800 } });
    const audited = await context.newPage();
    await audited.goto(server.base + "/portal/");
    await audited.locator("#login-form").waitFor();
    await audited.addScriptTag({ content: axeSource });
    const audit = async (name) => {
      const { violations } = await audited.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
      const bad = violations.filter((v) => v.impact === "serious" || v.impact === "critical");
      assert.deepEqual(bad.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).slice(0, 3).join("; ")})`), [], `on ${name}`);
    };
    await audit("the login page");
    await audited.fill("#app-key", server.appKey);
    await audited.fill("#auth-key", server.authKey);
    await audited.click("#login-button");
    await audited.locator("#main").waitFor();
    for (const tab of ["overview", "chats", "monitor", "webhooks", "simulator"]) {
      await audited.click(`.tab[data-tab="${tab}"]`);
      if (tab === "chats") await audited.locator(".conversation").first().click();
      if (tab === "monitor") {
        await audited.locator(".event").first().waitFor();
        await audited.locator(".event-toggle").first().click();
      }
      if (tab === "webhooks") await audited.locator(".endpoint .chart").first().waitFor();
      await audit(tab);
    }
    await context.close();
  });

  test("a meta instance: no simulator, a notice when Meta refuses its token, pictures fetched with the keys", async () => {
    const meta = { phone_number_id: "106540352242922", access_token: "EAAGexpiredtoken0000000000",
      app_secret: "app-secret", verify_token: "verify-token" };
    const switched = await api("PUT", "/v1/instance/channel", { channel: "meta", meta });
    assert.equal(switched.channel, "meta");
    assert.equal(JSON.stringify(switched).includes(meta.access_token), false, "the token is never shown");
    await page.reload();
    await page.locator("#instance-info", { hasText: "meta" }).waitFor();
    assert.equal(await page.locator("#simulator-tab").isHidden(), true);
    assert.equal(await page.locator("#attention").isHidden(), true);

    const sent = await api("POST", "/v1/messages", { to: "447123456789", body: "Your parcel is on its way" });
    assert.equal(sent.status, "accepted");
    const attention = page.locator("#attention");
    await attention.waitFor({ state: "visible" });
    assert.match(await attention.textContent(), /access token/);

    // A customer sends a picture through Meta; the thread shows it, fetched with the keys.
    const webhook = JSON.stringify({ object: "whatsapp_business_account", entry: [{ id: "1", changes: [{ field: "messages",
      value: { messaging_product: "whatsapp", metadata: { display_phone_number: "15550100000", phone_number_id: meta.phone_number_id },
        contacts: [{ profile: { name: "Maya" }, wa_id: "447700900123" }],
        messages: [{ from: "447700900123", id: "wamid.PORTALPICTURE1", timestamp: "1767000000", type: "image",
          image: { id: "9988776655", mime_type: "image/svg+xml", caption: "the dent" } }] } }] }] });
    const signature = "sha256=" + createHmac("sha256", meta.app_secret).update(webhook).digest("hex");
    const taken = await fetch(server.base + "/meta/webhook", {
      method: "POST", headers: { "Content-Type": "application/json", "X-Hub-Signature-256": signature }, body: webhook });
    assert.equal(taken.status, 200);
    await page.click('.tab[data-tab="chats"]');
    await page.locator('.conversation[data-number="447700900123"]').click();
    const picture = page.locator('.bubble[data-message-id="wamid.PORTALPICTURE1"] img.media');
    await picture.waitFor();
    await page.waitForFunction(() => {
      const img = document.querySelector('.bubble[data-message-id="wamid.PORTALPICTURE1"] img.media');
      return img && img.src.startsWith("blob:") && img.complete && img.naturalWidth > 0;
    });
    await api("PUT", "/v1/instance/channel", { channel: "sandbox" });
    await page.reload();
    await page.locator("#instance-info", { hasText: "sandbox" }).waitFor();
    assert.equal(await page.locator("#attention").isHidden(), true);
  });

  test("it works on a phone-sized screen, and logging out forgets the keys", async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.click('.tab[data-tab="chats"]');
    await page.locator('.conversation[data-number="447123456789"]').click();
    await page.locator(".bubble").first().waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
    assert.equal(overflow, false, "no horizontal scrolling on a phone");
    await page.screenshot({ path: join(shots, "phone.png") });
    await page.setViewportSize({ width: 1280, height: 800 });

    await page.click("#logout");
    await page.locator("#login-form").waitFor();
    assert.equal(await page.evaluate(() => localStorage.getItem("botlinkd.keys")), null);
  });
});

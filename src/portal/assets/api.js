// The portal's connection to botlinkd: JSON calls with HTTP Basic auth, and the live stream.
// Keys are kept in localStorage and only ever sent in the Authorization header.

const STORAGE_KEY = "botlinkd.keys";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function savedKeys() {
  try {
    const keys = JSON.parse(localStorage.getItem(STORAGE_KEY) || "null");
    return keys && keys.appKey && keys.authKey ? keys : null;
  } catch {
    return null;
  }
}

export function saveKeys(keys) {
  localStorage.setItem(STORAGE_KEY, JSON.stringify(keys));
}

export function forgetKeys() {
  localStorage.removeItem(STORAGE_KEY);
}

export class Api {
  constructor(keys) {
    this.authorization = "Basic " + btoa(`${keys.appKey}:${keys.authKey}`);
  }

  async call(method, path, body) {
    const init = { method, headers: { Authorization: this.authorization } };
    if (body instanceof FormData) {
      // The browser sets the multipart Content-Type with its boundary.
      init.body = body;
    } else if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch {
      throw new ApiError(0, "unreachable", "The server is unreachable. Is botlinkd running?");
    }
    const text = await response.text();
    const data = text ? safeJson(text) : null;
    if (!response.ok) {
      const error = data && data.error;
      throw new ApiError(
        response.status,
        (error && error.code) || "http_" + response.status,
        (error && error.message) || `The server answered HTTP ${response.status}.`,
      );
    }
    return data;
  }

  get(path) { return this.call("GET", path); }

  // A file behind the keys (a customer's media on the meta channel), as an object URL.
  async blobUrl(path) {
    const response = await fetch(path, { headers: { Authorization: this.authorization } });
    if (!response.ok) throw new ApiError(response.status, "http_" + response.status, `The file could not be fetched (HTTP ${response.status}).`);
    return URL.createObjectURL(await response.blob());
  }
  post(path, body) { return this.call("POST", path, body ?? {}); }
  patch(path, body) { return this.call("PATCH", path, body); }
  delete(path) { return this.call("DELETE", path); }

  // Follows /v1/stream, calling onItem(kind, data) for each item and onState(text) when the
  // connection changes. Reconnects with back-off and resumes from the last cursor, so no
  // event is missed. Returns a function that stops it.
  follow(onItem, onState) {
    let cursor = null;
    let stopped = false;
    let controller = null;
    const run = async () => {
      let delay = 500;
      while (!stopped) {
        controller = new AbortController();
        try {
          const query = cursor === null ? "" : `?after=${encodeURIComponent(cursor)}`;
          const response = await fetch("/v1/stream" + query, {
            headers: { Authorization: this.authorization, Accept: "text/event-stream" },
            signal: controller.signal,
          });
          if (response.status === 401) {
            onState("unauthorized");
            return;
          }
          if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
          onState("live");
          delay = 500;
          await readEvents(response.body, (kind, id, data) => {
            if (id) cursor = id;
            if (kind === "ready" && cursor === null) cursor = data.cursor;
            onItem(kind, data);
          });
        } catch (error) {
          if (stopped) return;
        }
        onState("reconnecting");
        await new Promise((resolve) => setTimeout(resolve, delay));
        delay = Math.min(delay * 2, 10000);
      }
    };
    run();
    return () => {
      stopped = true;
      if (controller) controller.abort();
    };
  }
}

// Parses a Server-Sent Events body: blocks separated by a blank line, `event:`, `id:` and
// `data:` fields.
async function readEvents(body, handle) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let kind = "message";
      let id = null;
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") kind = text;
        else if (field === "id") id = text;
        else if (field === "data") data.push(text);
      }
      if (data.length) handle(kind, id, safeJson(data.join("\n")));
    }
  }
}

function safeJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return { raw: text };
  }
}

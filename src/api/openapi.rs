//! The OpenAPI 3.1 document (`GET /openapi.json`), generated from the handlers' own
//! annotations and types so it cannot drift from the code, and a small docs page (`GET
//! /docs`) that renders it without loading anything from elsewhere. A test keeps the
//! checked-in copy (`docs/openapi.json`) identical to what the server serves.
//!
//! `ApiDoc` (utoipa's `OpenApi` derive) lists every handler; each handler carries a
//! `#[utoipa::path]` annotation with its parameters and answers, and the request and response
//! types derive `ToSchema`, so paths, parameters and body shapes come from the code. The
//! schema-only types of bodies the handlers build with `json!` are in [`super::schemas`]; they,
//! and the answer lists in the annotations, are written by hand and are what can drift. This
//! module depends on the handlers (it lists them); the handlers do not depend on it. Basic authentication is the
//! document's default security; `/healthz`, `/metrics` and the two `/meta/webhook` routes opt
//! out (`/api/create-message` does not, though it takes its keys in the body). `/docs` is a
//! static page whose inline script fetches `/openapi.json` and renders it with text nodes; its
//! own `Content-Security-Policy` allows that inline script and style and nothing from other
//! origins.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::app::App;

/// The routes.
pub fn router() -> Router<App> {
    Router::new()
        .route("/openapi.json", get(|| async { axum::Json(document()) }))
        .route("/docs", get(|| async { docs_page() }))
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "botlinkd",
        description = "Self-hostable WhatsApp business-messaging gateway. Authenticate every /v1 call with HTTP Basic: \
                       the App Key as user, the Auth Key as password. Errors are {\"error\": {\"code\", \"message\"}}. \
                       Webhooks are POSTed with the MessageEvent / AckEvent bodies, signed per Standard Webhooks."
    ),
    paths(
        super::webhooks::create,
        super::webhooks::list,
        super::webhooks::read,
        super::webhooks::change,
        super::webhooks::remove,
        super::webhooks::rotate_secret,
        super::webhooks::send_test,
        super::messages::send,
        super::messages::read,
        super::messages::create_message,
        super::media::upload,
        super::media::read,
        super::conversations::conversations,
        super::conversations::messages,
        super::conversations::mark_read,
        super::events::pull,
        super::events::read,
        super::events::attempts,
        super::events::resend,
        super::deliveries::list,
        super::deliveries::resend,
        super::insights::stats,
        super::insights::overview,
        super::stream::stream_events,
        super::templates::list,
        super::templates::sync_now,
        super::sandbox::inbound,
        super::sandbox::set_status,
        super::instance::read,
        super::meta::set_channel,
        super::meta::media,
        super::meta::verify,
        super::meta::receive,
        super::health::health,
        super::health::metrics,
    ),
    components(schemas(super::schemas::MessageEvent, super::schemas::AckEvent, super::schemas::ErrorBody)),
    modifiers(&BasicAuth),
    security(("basic" = [])),
    tags(
        (name = "webhooks", description = "Endpoints that receive the instance's events"),
        (name = "messages", description = "Sending"),
        (name = "history", description = "Conversations and their messages"),
        (name = "events", description = "The event feed: pull, stream, delivery attempts, resend"),
        (name = "templates", description = "Message templates: the catalogue template sends are checked against"),
        (name = "sandbox", description = "Simulated customers and receipts (sandbox instances)"),
        (name = "instance", description = "The instance the keys belong to"),
        (name = "meta", description = "Meta's webhook for instances on the meta channel (signed by Meta, no Basic auth)"),
        (name = "compatibility", description = "For scripts written against the App Key/Auth Key gateway API"),
        (name = "operations", description = "Health and metrics"),
    )
)]
struct ApiDoc;

struct BasicAuth;

impl Modify for BasicAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

fn docs_page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline'",
            ),
        ],
        DOCS_PAGE,
    )
}

const DOCS_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>botlinkd API</title>
<style>
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:960px;padding:1rem;color:#1d2329}
h2{border-bottom:1px solid #dde3e9;padding-bottom:.3rem;margin-top:2rem}
.op{border:1px solid #dde3e9;border-radius:8px;margin:.6rem 0;padding:.6rem .8rem}
.m{font-weight:700;text-transform:uppercase;font-size:.8rem;padding:.1rem .4rem;border-radius:4px;background:#e7f6f3;color:#128c7e}
code{background:#f3f5f7;padding:.05rem .3rem;border-radius:4px} .muted{color:#6b7785;font-size:.9rem}
pre{background:#f7f9fa;padding:.6rem;overflow:auto;font-size:.8rem}
</style></head><body>
<h1>botlinkd API</h1>
<p class="muted">Rendered from <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1). Every /v1 call uses HTTP Basic auth: App Key as user, Auth Key as password.</p>
<div id="doc">Loading…</div>
<script>
const el = (tag, text, cls) => { const e = document.createElement(tag); if (text) e.textContent = text; if (cls) e.className = cls; return e; };
const ref = (s) => s && s.$ref ? s.$ref.split("/").pop() : s && s.type ? s.type : "";
fetch("/openapi.json").then((r) => r.json()).then((api) => {
  const doc = document.getElementById("doc"); doc.replaceChildren(el("p", api.info.description, "muted"));
  const byTag = {};
  for (const [path, ops] of Object.entries(api.paths)) for (const [method, op] of Object.entries(ops)) {
    (byTag[(op.tags || ["other"])[0]] ||= []).push([method, path, op]);
  }
  for (const tag of api.tags || []) {
    if (!byTag[tag.name]) continue;
    doc.append(el("h2", tag.name), el("p", tag.description || "", "muted"));
    for (const [method, path, op] of byTag[tag.name]) {
      const box = el("div", "", "op"); const head = el("div");
      head.append(el("span", method, "m"), " ", el("code", path)); box.append(head);
      if (op.description || op.summary) box.append(el("p", op.description || op.summary));
      const params = (op.parameters || []).map((p) => `${p.name} (${p.in})${p.required ? "" : "?"}: ${p.description || ""}`);
      if (params.length) box.append(el("pre", params.join("\n")));
      const body = op.requestBody && Object.values(op.requestBody.content || {})[0];
      if (body) box.append(el("p", "Body: " + ref(body.schema), "muted"));
      const answers = Object.entries(op.responses || {}).map(([code, r]) => `${code} ${r.description}` + (r.content ? " → " + ref(Object.values(r.content)[0].schema) : ""));
      box.append(el("pre", answers.join("\n"))); doc.append(box);
    }
  }
  doc.append(el("h2", "Schemas"));
  for (const [name, schema] of Object.entries(api.components.schemas)) { doc.append(el("h3", name), el("pre", JSON.stringify(schema, null, 2))); }
});
</script></body></html>"#;

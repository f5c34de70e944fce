//! The Cloud Chat Portal: a static single-page app served by the binary itself.
//!
//! The files in `assets/` are compiled into the binary with `include_str!`, so `cargo build`
//! is the whole build and there is nothing to deploy beside the binary. The page talks to
//! the same `/v1` API as everyone else, with the keys the user typed (kept in the browser's
//! local storage, sent only in the `Authorization` header), and follows `/v1/stream` for live
//! updates, read with `fetch` rather than `EventSource` (which cannot send headers). There is
//! no bundler and no npm package (npm is used by the browser tests only).
//!
//! Every file is answered with a strict `Content-Security-Policy` (`default-src 'self'`, so
//! scripts, styles and API calls come only from this server; `img-src * data: blob:`, since
//! message images, customers' media URLs, may come from anywhere; no objects, base URI or
//! framing), `no-referrer` and `nosniff`. `/portal` and `/` redirect to `/portal/`.
//!
//! The app is plain ES modules without dependencies: `index.html` and `style.css`; `api.js`
//! (keys in `localStorage`, JSON calls, the stream resumed from the last cursor with
//! back-off); `views.js` (DOM pieces built as text nodes, never HTML strings); `app.js`
//! (login, the Chats, Monitor, Webhooks and Simulator tabs: `showInstance` writes the instance
//! line, hides the Simulator tab on `meta` and shows the attention bar; `refreshInstance`
//! reads `GET /v1/instance` again when a failed ack arrives on a `meta` instance;
//! `endpointCard` shows an endpoint's `disabled_reason` or, failing that, its
//! `failing_since`; `showDead` lists its newest 50 dead deliveries with a resend button each
//! and one for all).

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;

const INDEX: &str = include_str!("assets/index.html");
const STYLE: &str = include_str!("assets/style.css");
const API_JS: &str = include_str!("assets/api.js");
const APP_JS: &str = include_str!("assets/app.js");
const VIEWS_JS: &str = include_str!("assets/views.js");

/// The routes, for any router state.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/portal", get(|| async { Redirect::permanent("/portal/") }))
        .route("/portal/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route(
            "/portal/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/portal/api.js",
            get(|| async { asset("text/javascript; charset=utf-8", API_JS) }),
        )
        .route(
            "/portal/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/portal/views.js",
            get(|| async { asset("text/javascript; charset=utf-8", VIEWS_JS) }),
        )
        .route("/", get(|| async { Redirect::temporary("/portal/") }))
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            // Only this server's scripts and API; images (customers' media) from anywhere.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src * data: blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
            ),
        ],
        body,
    )
}

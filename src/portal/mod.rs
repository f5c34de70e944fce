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
//! back-off); `views.js` (DOM pieces built as text nodes, never HTML strings); `charts.js`
//! (inline SVG: an endpoint's deliveries and latency per bucket, a sparkline); `insights.js`
//! (the Overview tab and each endpoint card's health block); `monitor.js` (the Monitor:
//! history newest first with live events on top, filters, search, attempts, Resend); `app.js`
//! (login, tabs with arrow-key movement, the Chats, Webhooks and Simulator tabs: `showInstance` writes the instance
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

/// The scripts and the style sheet, by name under `/portal/`.
const FILES: [(&str, &str, &str); 7] = [
    ("style.css", "text/css; charset=utf-8", include_str!("assets/style.css")),
    ("api.js", JS, include_str!("assets/api.js")),
    ("app.js", JS, include_str!("assets/app.js")),
    ("views.js", JS, include_str!("assets/views.js")),
    ("monitor.js", JS, include_str!("assets/monitor.js")),
    ("insights.js", JS, include_str!("assets/insights.js")),
    ("charts.js", JS, include_str!("assets/charts.js")),
];

const JS: &str = "text/javascript; charset=utf-8";

/// The routes, for any router state.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new()
        .route("/portal", get(|| async { Redirect::permanent("/portal/") }))
        .route("/portal/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/", get(|| async { Redirect::temporary("/portal/") }));
    for (name, content_type, body) in FILES {
        router = router.route(
            &format!("/portal/{name}"),
            get(move || async move { asset(content_type, body) }),
        );
    }
    router
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

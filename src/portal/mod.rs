//! The Cloud Chat Portal: a static single-page app served by the binary itself.
//!
//! The files in `assets/` are compiled into the binary with `include_str!`, so `cargo build`
//! is the whole build and there is nothing to deploy beside the binary. The page talks to
//! the same `/v1` API as everyone else, with the keys the user typed (kept in the browser's
//! local storage, sent only in the `Authorization` header), and follows `/v1/stream` for live
//! updates.

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

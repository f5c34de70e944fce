//! The HTTP API (axum): one router per resource, merged here, with the body limit and the
//! JSON fallbacks for unknown routes and methods.
//!
//! This is the only module that knows HTTP request types; handlers parse input into domain
//! values and call [`crate::app::App`] or the store.
//!
//! [`router`] merges one router per resource, the OpenAPI router and the portal's, and adds
//! the body limit (`--max-body-bytes`), `limit_headers`, the trace layer and JSON answers for
//! unknown routes and methods. `limit_headers` answers 431 `headers_too_large` when a
//! request's target and headers take more than [`MAX_HEADER_BYTES`] (16 KiB): Basic
//! credentials included they normally take well under a kilobyte, and hyper's own limit, far
//! larger, only bounds what it reads. Request spans hold the method and path, never the query
//! string (an old script may put `authkey=` there). No route takes keys in a query string.

pub mod error;
pub mod extract;
pub mod limits;

mod conversations;
mod deliveries;
mod events;
mod health;
mod insights;
mod instance;
mod media;
pub(crate) mod messages;
mod meta;
mod openapi;
mod sandbox;
mod schemas;
mod stream;
mod templates;
mod webhooks;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use tower_http::trace::TraceLayer;

use self::error::ApiError;
use crate::app::App;

/// The whole API.
pub fn router(app: App) -> Router {
    let limit = app.config.max_body_bytes;
    Router::new()
        .merge(health::router())
        .merge(instance::router())
        .merge(meta::router())
        .merge(webhooks::router())
        .merge(messages::router())
        .merge(conversations::router())
        .merge(events::router())
        .merge(deliveries::router())
        .merge(insights::router())
        .merge(sandbox::router())
        .merge(stream::router())
        .merge(media::router())
        .merge(templates::router())
        .merge(openapi::router())
        .merge(crate::portal::router())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(limit_headers))
        // Spans name the method and path only: a query string could carry a key from an old
        // script (`/api/create-message?authkey=…`), and logs must never hold one.
        .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
            tracing::debug_span!("request", method = %request.method(), path = %request.uri().path())
        }))
        .with_state(app)
}

/// The most bytes a request's target and headers may take together.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Refuses requests whose target and headers are larger than [`MAX_HEADER_BYTES`] with a
/// JSON 431 (hyper's own, much larger, limit still guards the reading of them).
async fn limit_headers(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    let size = request.uri().to_string().len()
        + request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    if size > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("the request line and headers may take at most {MAX_HEADER_BYTES} bytes"),
        )
        .into_response();
    }
    next.run(request).await
}

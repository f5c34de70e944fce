//! Operations: `GET /healthz` (whether the server and its storage answer) and
//! `GET /metrics` (Prometheus text format). Neither needs keys.
//!
//! `/healthz` pings the store: on SQLite through the writer thread, so a stuck writer reports
//! 503; on PostgreSQL with `SELECT 1` on the pool. `/metrics` reads `Store::queue_stats` and
//! answers `Metrics::render` as `application/openmetrics-text; version=1.0.0`.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use super::extract::Json;
use crate::app::App;

/// The routes.
pub fn router() -> Router<App> {
    Router::new()
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
}

#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "Healthy", body = Object), (status = 503, description = "Storage unavailable", body = Object)))]
async fn health(State(app): State<App>) -> (StatusCode, Json<Value>) {
    match app.store.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ok"}))),
        Err(error) => {
            tracing::error!(error = %error, "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "storage": "down"})),
            )
        }
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Prometheus text format", content_type = "application/openmetrics-text", body = String)))]
async fn metrics(State(app): State<App>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match app.store.queue_stats().await {
        Ok(queue) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            app.metrics.render(&queue, app.live.watchers(), app.now()),
        )
            .into_response(),
        Err(error) => super::error::ApiError::from(error).into_response(),
    }
}

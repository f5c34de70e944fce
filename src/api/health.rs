//! `GET /healthz`: whether the server and its storage answer.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use super::extract::Json;
use crate::app::App;

/// The routes.
pub fn router() -> Router<App> {
    Router::new().route("/healthz", get(health))
}

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

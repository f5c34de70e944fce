//! `GET /v1/instance`: who these keys belong to (the portal's login check).

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::{Authed, Json};
use crate::app::App;
use crate::store::rfc3339;

/// The routes.
pub fn router() -> Router<App> {
    Router::new().route("/v1/instance", get(read))
}

async fn read(State(_app): State<App>, Authed(instance): Authed) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({
        "instance_id": instance.id.to_string(),
        "name": instance.name,
        "channel": instance.channel,
        "phone_number": instance.phone_number.as_str(),
        "created_at": rfc3339(instance.created_at),
    })))
}

//! `GET /v1/instance`: who these keys belong to (the portal's login check).

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;

use super::openapi::ErrorBody;

use super::error::ApiError;
use super::extract::{Authed, Json};
use crate::app::App;
use crate::store::rfc3339;

/// The routes.
pub fn router() -> Router<App> {
    Router::new().route("/v1/instance", get(read))
}

/// Who the keys belong to.
#[derive(Serialize, ToSchema)]
pub(super) struct InstanceView {
    #[schema(example = "10922")]
    instance_id: String,
    name: String,
    /// `sandbox` (more channels to come).
    channel: String,
    /// The business number, digits.
    phone_number: String,
    created_at: String,
}

#[utoipa::path(get, path = "/v1/instance", tag = "instance",
    responses((status = 200, description = "The instance", body = InstanceView), (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn read(State(_app): State<App>, Authed(instance): Authed) -> Result<Json<InstanceView>, ApiError> {
    Ok(Json(InstanceView {
        instance_id: instance.id.to_string(),
        name: instance.name,
        channel: instance.channel.as_str().to_string(),
        phone_number: instance.phone_number.to_string(),
        created_at: rfc3339(instance.created_at),
    }))
}

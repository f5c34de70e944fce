//! `GET /v1/instance`: who these keys belong to (the portal's login check), as
//! `InstanceView`: for `meta` also the settings with hints for the secrets, the callback URL
//! to give Meta, and `attention`.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;

use super::schemas::ErrorBody;

use super::error::ApiError;
use super::extract::{Authed, Json};
use crate::app::App;
use crate::channels::meta::MetaSettingsView;
use crate::instances::Instance;
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
    /// `sandbox` or `meta`.
    channel: String,
    /// The business number, digits.
    phone_number: String,
    created_at: String,
    /// For `meta`: the settings, secrets shown only by their last characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<MetaSettingsView>,
    /// For `meta`: the callback URL to paste into the Meta app's WhatsApp webhook settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    meta_webhook_url: Option<String>,
    /// Why the instance needs an operator (for example a token Meta refused); `null` when
    /// all is well.
    attention: Option<String>,
}

impl InstanceView {
    /// The view of an instance; `base_url` is where this server is reached.
    pub(super) fn of(instance: &Instance, base_url: &str) -> Self {
        Self {
            instance_id: instance.id.to_string(),
            name: instance.name.clone(),
            channel: instance.channel.as_str().to_string(),
            phone_number: instance.phone_number.to_string(),
            created_at: rfc3339(instance.created_at),
            meta: instance.meta.as_ref().map(|m| m.view()),
            meta_webhook_url: instance.meta.as_ref().map(|_| format!("{base_url}/meta/webhook")),
            attention: instance.attention.clone(),
        }
    }
}

#[utoipa::path(get, path = "/v1/instance", tag = "instance",
    responses((status = 200, description = "The instance", body = InstanceView), (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn read(State(app): State<App>, Authed(instance): Authed) -> Result<Json<InstanceView>, ApiError> {
    Ok(Json(InstanceView::of(&instance, app.base_url())))
}

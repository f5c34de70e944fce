//! `/v1/templates`: the message templates an instance may send (`GET`), and a sync of a
//! `meta` instance's catalogue from Meta now (`POST /v1/templates/sync`). See
//! `crate::templates` for where the catalogue comes from and how sends are checked.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::{Authed, Json};
use super::schemas::ErrorBody;
use crate::app::App;
use crate::channels::meta::templates::{SyncError, sync};
use crate::instances::{Channel, Instance};
use crate::messages::TemplateRef;
use crate::store::rfc3339;
use crate::templates::{Template, check_send, sandbox_catalogue};

/// The routes.
pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/templates", get(list))
        .route("/v1/templates/sync", post(sync_now))
}

/// The catalogue.
#[derive(Serialize, ToSchema)]
pub(super) struct Templates {
    templates: Vec<Template>,
    /// `built_in` (sandbox) or `meta` (synced from the WhatsApp Business Account).
    source: &'static str,
    /// When it was last synced from Meta, RFC 3339; `null` for the sandbox or before the first sync.
    synced_at: Option<String>,
}

/// An instance's catalogue: the sandbox's built-in one, or the stored copy of Meta's.
pub(crate) async fn catalogue(app: &App, instance: &Instance) -> Result<(Vec<Template>, Option<i64>), ApiError> {
    match instance.channel {
        Channel::Sandbox => Ok((sandbox_catalogue(), None)),
        Channel::Meta => Ok(app.store.list_templates(instance.id).await?),
    }
}

/// Checks a template send against the instance's catalogue. A `meta` catalogue that was
/// never synced is not checked: Meta itself refuses what it does not know.
pub(crate) async fn check_template_send(app: &App, instance: &Instance, wanted: &TemplateRef) -> Result<(), ApiError> {
    let (templates, synced_at) = catalogue(app, instance).await?;
    if instance.channel == Channel::Meta && synced_at.is_none() {
        return Ok(());
    }
    check_send(&templates, wanted).map_err(ApiError::from)
}

#[utoipa::path(get, path = "/v1/templates", tag = "templates",
    responses((status = 200, description = "The templates this instance may send", body = Templates), (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn list(State(app): State<App>, Authed(instance): Authed) -> Result<Json<Templates>, ApiError> {
    let (templates, synced_at) = catalogue(&app, &instance).await?;
    Ok(Json(Templates {
        templates,
        source: match instance.channel {
            Channel::Sandbox => "built_in",
            Channel::Meta => "meta",
        },
        synced_at: synced_at.map(rfc3339),
    }))
}

#[utoipa::path(post, path = "/v1/templates/sync", tag = "templates",
    responses((status = 200, description = "Synced from Meta: the catalogue now", body = Templates),
        (status = 409, description = "A sandbox instance, or no `waba_id` in the meta settings", body = ErrorBody),
        (status = 502, description = "Meta did not list the templates", body = ErrorBody),
        (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn sync_now(State(app): State<App>, Authed(instance): Authed) -> Result<Json<Templates>, ApiError> {
    match sync(&app, &instance).await {
        Ok(_) => list(State(app), Authed(instance)).await,
        Err(error @ (SyncError::NotMeta | SyncError::NoWabaId)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "cannot_sync_templates",
            error.to_string(),
        )),
        Err(error @ SyncError::Graph(_)) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "meta_unavailable",
            error.to_string(),
        )),
        Err(SyncError::Store(error)) => Err(error.into()),
    }
}

//! Sandbox-only calls: a simulated customer writes in (`POST /v1/sandbox/inbound`), and an
//! outgoing message is moved to delivered/read/failed by hand. Both answer 409
//! `not_a_sandbox` on a `meta` instance; `inbound` is exempt from the API rate limit.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use serde::Deserialize;
use utoipa::ToSchema;

use super::schemas::{ErrorBody, Inbound, StatusChanged};
use serde_json::json;

use super::error::ApiError;
use super::extract::{Authed, Json, Path};
use crate::app::App;
use crate::clock::Millis;
use crate::events::AckError;
use crate::instances::{Channel, Instance};
use crate::messages::{Direction, InboundRequest, MessageStatus};
use crate::store::StatusOutcome;

/// The routes.
pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/sandbox/inbound", post(inbound))
        .route("/v1/sandbox/messages/{id}/status", post(set_status))
}

fn require_sandbox(instance: &Instance) -> Result<(), ApiError> {
    match instance.channel {
        Channel::Sandbox => Ok(()),
        Channel::Meta => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_a_sandbox",
            "this instance is on the meta channel: its customers write through WhatsApp, and Meta reports receipts",
        )),
    }
}

#[utoipa::path(post, path = "/v1/sandbox/inbound", tag = "sandbox", request_body = InboundRequest,
    responses((status = 201, description = "The customer's message was received; its event is on its way", body = Inbound), (status = 422, description = "Invalid message", body = ErrorBody), (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn inbound(
    State(app): State<App>,
    Authed(instance): Authed,
    Json(body): Json<InboundRequest>,
) -> Result<impl IntoResponse, ApiError> {
    require_sandbox(&instance)?;
    let at = written_at(&app, body.timestamp)?;
    let message = body.validate()?;
    let (message_id, event) = app.receive(&instance, message, at).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"message_id": message_id, "event_id": event.id})),
    ))
}

/// How far back a simulated message may be dated.
const MAX_BACKDATE_MS: Millis = 30 * 24 * 3600 * 1000;

/// The time a simulated customer wrote: `timestamp` (unix seconds) if given, within the last
/// 30 days and not in the future (a minute of clock skew allowed).
fn written_at(app: &App, timestamp: Option<i64>) -> Result<Option<Millis>, ApiError> {
    let Some(seconds) = timestamp else { return Ok(None) };
    let now = app.now();
    let at = seconds.saturating_mul(1000);
    if at > now + 60_000 || at < now - MAX_BACKDATE_MS {
        return Err(ApiError::invalid(
            "invalid_timestamp",
            "`timestamp` is unix seconds within the last 30 days, not in the future",
        ));
    }
    Ok(Some(at))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StatusBody {
    /// delivered, read or failed.
    status: String,
    #[serde(default)]
    error: Option<AckError>,
}

#[utoipa::path(post, path = "/v1/sandbox/messages/{id}/status", tag = "sandbox", params(("id" = String, Path, description = "wamid.… of an outgoing message")), request_body = StatusBody,
    responses((status = 200, description = "Moved; its ack event is on its way", body = StatusChanged), (status = 404, description = "No such outgoing message", body = ErrorBody), (status = 409, description = "Statuses only move forward", body = ErrorBody), (status = 422, description = "Invalid status", body = ErrorBody), (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn set_status(
    State(app): State<App>,
    Authed(instance): Authed,
    Path(message_id): Path<String>,
    Json(body): Json<StatusBody>,
) -> Result<impl IntoResponse, ApiError> {
    require_sandbox(&instance)?;
    let status = match MessageStatus::parse(&body.status) {
        Some(s @ (MessageStatus::Delivered | MessageStatus::Read | MessageStatus::Failed)) => s,
        _ => {
            return Err(ApiError::invalid(
                "invalid_status",
                "`status` must be delivered, read or failed",
            ));
        }
    };
    let message = app
        .store
        .get_message(instance.id, &message_id)
        .await?
        .filter(|m| m.direction == Direction::Outbound)
        .ok_or_else(|| ApiError::not_found("outgoing message"))?;
    let error = match status {
        MessageStatus::Failed => Some(body.error.unwrap_or(AckError {
            code: 131026,
            title: "Message undeliverable (sandbox)".into(),
        })),
        _ => None,
    };
    match app
        .change_status(instance.id, &message_id, &message.to, status, error)
        .await?
    {
        StatusOutcome::Applied(event) => Ok(Json(
            json!({"message_id": message_id, "status": status, "event_id": event.id}),
        )),
        StatusOutcome::Stale(current) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "status_not_forward",
            format!(
                "the message is already `{}`; statuses only move forward",
                current.as_str()
            ),
        )),
        StatusOutcome::NotFound => Err(ApiError::not_found("outgoing message")),
    }
}

//! `/v1/webhooks`: an instance's endpoints — create, list, read, change, delete, rotate the
//! signing secret, send a test event.
//!
//! An endpoint is shown as `EndpointView` (with `disabled_reason`, `failing_since` and
//! `previous_secret_expires_at`); a rotation takes `grace_period_seconds` (0 to 604800,
//! default 86400; see `webhooks::signing`). A change wakes the engine and forgets the
//! endpoint's followers in this process (they carry its URL and secret as they were).
//! Disabling pauses the endpoint's deliveries rather than skipping them (see
//! `store::rules`); deleting an endpoint deletes its waiting and pending deliveries, and the
//! attempts already recorded stay.
//!
//! **Test events are their own conversation.** `POST /v1/webhooks/{id}/test` stores an event
//! of kind `test` whose delivery queue key is the event's own id, so it never waits behind
//! customer traffic. The delivery is claimed by the request itself and attempted at once
//! (`Engine::deliver_now`), even on a disabled endpoint; the answer reports that attempt, and
//! a failure is retried on the schedule like any delivery. Test events are excluded from the
//! pull feed and are not subject to filters.
//!
//! **Destinations.** The URL's scheme chooses the transport (`webhooks::destination`): the
//! answer shows it as `kind`, and shows the URL with a broker password masked (`****`). A
//! change that sends the masked URL back unchanged (as the portal does) keeps the stored one.
//! `rate_limit` (deliveries a second, 1 to 100000, `null` for none) paces the endpoint's
//! deliveries (see `delivery::pacing`).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::schemas::ErrorBody;

use super::error::ApiError;
use super::extract::{Authed, Json, Path, RawBody};
use crate::app::App;
use crate::clock::Millis;
use crate::events;
use crate::store::rfc3339;
use crate::webhooks::destination::masked;
use crate::webhooks::{
    AddressPolicy, DestinationKind, Endpoint, EndpointChange, EventFilter, NewEndpoint, SigningSecret, WebhookUrl,
};

/// The highest rate limit, deliveries a second.
const MAX_RATE_LIMIT: u32 = 100_000;

/// The routes.
pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/webhooks", post(create).get(list))
        .route("/v1/webhooks/{id}", get(read).patch(change).delete(remove))
        .route("/v1/webhooks/{id}/rotate-secret", post(rotate_secret))
        .route("/v1/webhooks/{id}/test", post(send_test))
}

/// A new webhook endpoint.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    /// Where events go: an http(s) URL, or `nats://HOST:PORT/SUBJECT`,
    /// `amqp://USER:PASS@HOST:PORT/VHOST?exchange=E&routing_key=K` or
    /// `redis://HOST:PORT/DB?stream=KEY[&maxlen=N]`. Internal addresses are refused.
    #[schema(example = "https://api.your-domain.com/whatsapp/callback")]
    url: String,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    /// At most this many deliveries a second (1 to 100000); left out or `null` for no limit.
    #[serde(default)]
    rate_limit: Option<u32>,
}

/// Changes to an endpoint; fields left out stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ChangeBody {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    /// A new rate limit, deliveries a second; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>)]
    rate_limit: Option<Option<u32>>,
}

/// A field given, even as `null` (a field left out stays `None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u32>>, D::Error> {
    Option::<u32>::deserialize(d).map(Some)
}

/// An endpoint as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct EndpointView {
    #[schema(example = "ep_01M89MQETEG4XJ18R5BS9RT2N4")]
    id: String,
    /// The URL, with a broker password shown as `****`.
    url: String,
    /// The transport the URL's scheme chooses.
    kind: DestinationKind,
    /// At most this many deliveries a second; `null` for no limit.
    rate_limit: Option<u32>,
    description: String,
    /// The events it receives: message, ack.sent, ack.delivered, ack.read, ack.failed.
    #[schema(value_type = Vec<String>, example = json!(["message", "ack.read"]))]
    events: EventFilter,
    /// A disabled endpoint is paused: its events queue up until it is enabled again.
    enabled: bool,
    /// Why botlinkd disabled it on its own (a 410 Gone, or every attempt failing for the
    /// configured period); `null` otherwise. Enabling it clears this.
    disabled_reason: Option<String>,
    /// Since when every attempt has failed, RFC 3339; `null` when the last one succeeded.
    failing_since: Option<String>,
    /// After a rotation: until when the previous secret still signs beside `secret`
    /// (`webhook-signature` then carries two `v1,` signatures), RFC 3339.
    previous_secret_expires_at: Option<String>,
    /// The Standard Webhooks signing secret.
    #[schema(value_type = String, example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    secret: SigningSecret,
    created_at: String,
    updated_at: String,
}

impl From<Endpoint> for EndpointView {
    fn from(e: Endpoint) -> Self {
        Self {
            id: e.id,
            kind: DestinationKind::of(&e.url),
            url: masked(&e.url),
            rate_limit: e.rate_limit,
            description: e.description,
            events: e.events,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            failing_since: e.failing_since.map(rfc3339),
            previous_secret_expires_at: e.previous_secret_until.map(rfc3339),
            secret: e.secret,
            created_at: rfc3339(e.created_at),
            updated_at: rfc3339(e.updated_at),
        }
    }
}

async fn checked_url(app: &App, url: &str) -> Result<WebhookUrl, ApiError> {
    let url = WebhookUrl::parse(url).map_err(|e| ApiError::invalid("invalid_url", e.to_string()))?;
    let policy = AddressPolicy::new(app.config.webhook_allow_cidrs.clone());
    url.check(&policy)
        .await
        .map_err(|e| ApiError::invalid("invalid_url", e.to_string()))?;
    Ok(url)
}

fn parse_filter(events: &[String]) -> Result<EventFilter, ApiError> {
    if events.is_empty() {
        return Err(ApiError::invalid(
            "invalid_events",
            "`events` must name at least one event, or be left out for all",
        ));
    }
    EventFilter::parse(events).map_err(|e| ApiError::invalid("invalid_events", e.to_string()))
}

fn check_rate_limit(rate_limit: Option<u32>) -> Result<Option<u32>, ApiError> {
    match rate_limit {
        Some(n) if !(1..=MAX_RATE_LIMIT).contains(&n) => Err(ApiError::invalid(
            "invalid_rate_limit",
            format!("`rate_limit` must be between 1 and {MAX_RATE_LIMIT} deliveries a second, or null for no limit"),
        )),
        other => Ok(other),
    }
}

fn check_description(description: &str) -> Result<(), ApiError> {
    if description.chars().count() > 512 {
        return Err(ApiError::invalid(
            "invalid_description",
            "`description` may be at most 512 characters",
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateBody,
    responses((status = 201, description = "Created", body = EndpointView), (status = 422, description = "Invalid or internal URL, unknown event", body = ErrorBody), (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn create(
    State(app): State<App>,
    Authed(instance): Authed,
    Json(body): Json<CreateBody>,
) -> Result<impl IntoResponse, ApiError> {
    let url = checked_url(&app, &body.url).await?;
    let events = match &body.events {
        Some(names) => parse_filter(names)?,
        None => EventFilter::all(),
    };
    let description = body.description.unwrap_or_default();
    check_description(&description)?;
    let new = NewEndpoint {
        instance_id: instance.id,
        url,
        description,
        events,
        enabled: body.enabled.unwrap_or(true),
        rate_limit: check_rate_limit(body.rate_limit)?,
    };
    let endpoint = app
        .store
        .create_endpoint(new, SigningSecret::generate(), app.now())
        .await?;
    Ok((StatusCode::CREATED, Json(EndpointView::from(endpoint))))
}

#[derive(Serialize, ToSchema)]
pub(super) struct EndpointList {
    webhooks: Vec<EndpointView>,
}

#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, description = "The instance's endpoints", body = EndpointList), (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn list(State(app): State<App>, Authed(instance): Authed) -> Result<Json<EndpointList>, ApiError> {
    let endpoints = app.store.list_endpoints(instance.id).await?;
    Ok(Json(EndpointList {
        webhooks: endpoints.into_iter().map(EndpointView::from).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path, description = "Endpoint id")),
    responses((status = 200, description = "The endpoint", body = EndpointView), (status = 404, description = "No such endpoint", body = ErrorBody), (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn read(
    State(app): State<App>,
    Authed(instance): Authed,
    Path(id): Path<String>,
) -> Result<Json<EndpointView>, ApiError> {
    let endpoint = app
        .store
        .get_endpoint(instance.id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    Ok(Json(endpoint.into()))
}

#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path, description = "Endpoint id")), request_body = ChangeBody,
    responses((status = 200, description = "Changed", body = EndpointView), (status = 404, description = "No such endpoint", body = ErrorBody), (status = 422, description = "Invalid change", body = ErrorBody), (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn change(
    State(app): State<App>,
    Authed(instance): Authed,
    Path(id): Path<String>,
    Json(body): Json<ChangeBody>,
) -> Result<Json<EndpointView>, ApiError> {
    let mut change = EndpointChange::default();
    if let Some(url) = &body.url
        && !is_masked_current(&app, instance.id, &id, url).await?
    {
        change.url = Some(checked_url(&app, url).await?);
    }
    if let Some(rate_limit) = body.rate_limit {
        change.rate_limit = Some(check_rate_limit(rate_limit)?);
    }
    if let Some(events) = &body.events {
        change.events = Some(parse_filter(events)?);
    }
    if let Some(description) = body.description {
        check_description(&description)?;
        change.description = Some(description);
    }
    change.enabled = body.enabled;
    let endpoint = app
        .store
        .update_endpoint(instance.id, &id, change, app.now())
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    app.engine.forget_endpoint(&endpoint.id);
    // Re-enabling lets paused deliveries go out.
    app.engine.wake();
    Ok(Json(endpoint.into()))
}

/// Whether `url` is the endpoint's stored URL as the API shows it, password masked: sent
/// back unchanged, it keeps the stored one rather than setting the password to `****`.
async fn is_masked_current(app: &App, instance_id: i64, id: &str, url: &str) -> Result<bool, ApiError> {
    if !url.contains("****") {
        return Ok(false);
    }
    let current = app.store.get_endpoint(instance_id, id).await?;
    Ok(current.is_some_and(|e| masked(&e.url) == url.trim() && masked(&e.url) != e.url))
}

#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path, description = "Endpoint id")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such endpoint", body = ErrorBody), (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn remove(
    State(app): State<App>,
    Authed(instance): Authed,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if app.store.delete_endpoint(instance.id, &id).await? {
        app.engine.forget_endpoint(&id);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("webhook"))
    }
}

/// How long the old secret keeps signing after a rotation, unless the body says.
const DEFAULT_GRACE_SECONDS: u64 = 24 * 3600;
/// The longest grace period.
const MAX_GRACE_SECONDS: u64 = 7 * 24 * 3600;

/// A rotation's options.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RotateBody {
    /// How long the old secret keeps signing beside the new one, 0 to 604800 seconds
    /// (default 86400: a day to update the receiver). 0 retires it at once.
    #[serde(default)]
    grace_period_seconds: Option<u64>,
}

#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate-secret", tag = "webhooks", params(("id" = String, Path, description = "Endpoint id")),
    request_body(content = Option<RotateBody>, description = "Optional: the grace period"),
    responses((status = 200, description = "The endpoint with its new secret", body = EndpointView), (status = 400, description = "Bad body", body = ErrorBody), (status = 404, description = "No such endpoint", body = ErrorBody), (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn rotate_secret(
    State(app): State<App>,
    Authed(instance): Authed,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<EndpointView>, ApiError> {
    let options: RotateBody = if body.iter().all(u8::is_ascii_whitespace) {
        RotateBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "invalid_body",
                format!("expected {{\"grace_period_seconds\": 86400}} or no body: {e}"),
            )
        })?
    };
    let grace = options.grace_period_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
    if grace > MAX_GRACE_SECONDS {
        return Err(ApiError::bad_request(
            "invalid_grace_period",
            format!("`grace_period_seconds` may be at most {MAX_GRACE_SECONDS} (7 days)"),
        ));
    }
    let now = app.now();
    let old_valid_until = (grace > 0).then(|| now + (grace * 1000) as Millis);
    let endpoint = app
        .store
        .rotate_endpoint_secret(instance.id, &id, SigningSecret::generate(), old_valid_until, now)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    app.engine.forget_endpoint(&endpoint.id);
    Ok(Json(endpoint.into()))
}

/// The result of sending a test event.
#[derive(Serialize, ToSchema)]
pub(super) struct TestResult {
    event_id: String,
    outcome: &'static str,
    status_code: Option<u16>,
    duration_ms: i64,
    response: String,
    error: Option<String>,
}

/// Sends a test event to this endpoint now and answers with the attempt's result. A failed
/// test event is retried on the schedule like any other delivery.
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", tag = "webhooks", params(("id" = String, Path, description = "Endpoint id")),
    responses((status = 200, description = "The attempt's result", body = TestResult), (status = 404, description = "No such endpoint", body = ErrorBody), (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn send_test(
    State(app): State<App>,
    Authed(instance): Authed,
    Path(id): Path<String>,
) -> Result<Json<TestResult>, ApiError> {
    let endpoint = app
        .store
        .get_endpoint(instance.id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    let event = events::test_event(instance.id, &endpoint.id, app.now());
    let event_id = event.id.clone();
    let due = app
        .store
        .record_test_event(instance.id, &endpoint.id, event, app.engine.lease_until())
        .await?;
    let result = app.engine.deliver_now(due).await?;
    Ok(Json(TestResult {
        event_id,
        outcome: if result.success { "success" } else { "failure" },
        status_code: result.status_code,
        duration_ms: result.duration_ms,
        response: result.response,
        error: result.error,
    }))
}

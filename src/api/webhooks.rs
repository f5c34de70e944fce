//! `/v1/webhooks`: an instance's endpoints — create, list, read, change, delete, rotate the
//! signing secret, send a test event.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{Authed, Json, Path};
use crate::app::App;
use crate::events;
use crate::store::rfc3339;
use crate::webhooks::{AddressPolicy, Endpoint, EndpointChange, EventFilter, NewEndpoint, SigningSecret, WebhookUrl};

/// The routes.
pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/webhooks", post(create).get(list))
        .route("/v1/webhooks/{id}", get(read).patch(change).delete(remove))
        .route("/v1/webhooks/{id}/rotate-secret", post(rotate_secret))
        .route("/v1/webhooks/{id}/test", post(send_test))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    url: String,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeBody {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
}

/// An endpoint as the API shows it.
#[derive(Serialize)]
pub struct EndpointView {
    id: String,
    url: String,
    description: String,
    events: EventFilter,
    enabled: bool,
    secret: SigningSecret,
    created_at: String,
    updated_at: String,
}

impl From<Endpoint> for EndpointView {
    fn from(e: Endpoint) -> Self {
        Self {
            id: e.id,
            url: e.url,
            description: e.description,
            events: e.events,
            enabled: e.enabled,
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

fn check_description(description: &str) -> Result<(), ApiError> {
    if description.chars().count() > 512 {
        return Err(ApiError::invalid(
            "invalid_description",
            "`description` may be at most 512 characters",
        ));
    }
    Ok(())
}

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
    };
    let endpoint = app
        .store
        .create_endpoint(new, SigningSecret::generate(), app.now())
        .await?;
    Ok((StatusCode::CREATED, Json(EndpointView::from(endpoint))))
}

#[derive(Serialize)]
struct EndpointList {
    webhooks: Vec<EndpointView>,
}

async fn list(State(app): State<App>, Authed(instance): Authed) -> Result<Json<EndpointList>, ApiError> {
    let endpoints = app.store.list_endpoints(instance.id).await?;
    Ok(Json(EndpointList {
        webhooks: endpoints.into_iter().map(EndpointView::from).collect(),
    }))
}

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

async fn change(
    State(app): State<App>,
    Authed(instance): Authed,
    Path(id): Path<String>,
    Json(body): Json<ChangeBody>,
) -> Result<Json<EndpointView>, ApiError> {
    let mut change = EndpointChange::default();
    if let Some(url) = &body.url {
        change.url = Some(checked_url(&app, url).await?);
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
    // Re-enabling lets paused deliveries go out.
    app.engine.wake();
    Ok(Json(endpoint.into()))
}

async fn remove(
    State(app): State<App>,
    Authed(instance): Authed,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if app.store.delete_endpoint(instance.id, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("webhook"))
    }
}

async fn rotate_secret(
    State(app): State<App>,
    Authed(instance): Authed,
    Path(id): Path<String>,
) -> Result<Json<EndpointView>, ApiError> {
    let endpoint = app
        .store
        .rotate_endpoint_secret(instance.id, &id, SigningSecret::generate(), app.now())
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    Ok(Json(endpoint.into()))
}

#[derive(Serialize)]
struct TestResult {
    event_id: String,
    outcome: &'static str,
    status_code: Option<u16>,
    duration_ms: i64,
    response: String,
    error: Option<String>,
}

/// Sends a test event to this endpoint now and answers with the attempt's result. A failed
/// test event is retried on the schedule like any other delivery.
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

//! Dead deliveries: `GET /v1/deliveries/dead` lists the events an endpoint never took (by
//! endpoint and time range), and `POST /v1/deliveries/dead/resend` delivers them again in
//! bulk, oldest first, so each conversation keeps its order. One event at a time is
//! `POST /v1/events/{id}/resend`.
//!
//! The listing selects by `endpoint_id` and by the event's time from `since` to before
//! `until` (RFC 3339 in UTC, else 400 `invalid_time`), newest first, `limit` 1 to 500, and
//! `next` is the last row's delivery id. The bulk resend takes the same selection, at most
//! `RESEND_BATCH` (1000) a call, oldest first, with `more` when some remain; each is resent by
//! the rule of a single resend. An unknown endpoint answers 404. A dead row stays in
//! `deliveries` until retention prunes its event; only the latest delivery of an event to an
//! endpoint counts, so an event that was resent is listed again only if the new delivery dies
//! too (the partial index `deliveries_dead` keeps the lookup to dead rows).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use super::extract::{Authed, Json, Query};
use super::schemas::ErrorBody;
use crate::app::App;
use crate::clock::Millis;
use crate::store::{DeadDelivery, DeadFilter};

/// The most dead deliveries one bulk resend schedules; call again while `more` is true.
const RESEND_BATCH: u32 = 1000;

/// The routes.
pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/deliveries/dead", get(list))
        .route("/v1/deliveries/dead/resend", post(resend))
}

/// Which dead deliveries: by endpoint and by when their events happened.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Selection {
    /// Only this endpoint's.
    #[serde(default)]
    endpoint_id: Option<String>,
    /// Only of events from this time on (RFC 3339, e.g. `2026-01-05T10:00:00Z`).
    #[serde(default)]
    since: Option<String>,
    /// Only of events before this time (RFC 3339).
    #[serde(default)]
    until: Option<String>,
}

/// The listing's selection and paging.
#[derive(Deserialize, IntoParams)]
pub(super) struct ListQuery {
    /// Only this endpoint's.
    #[serde(default)]
    endpoint_id: Option<String>,
    /// Only of events from this time on (RFC 3339, e.g. `2026-01-05T10:00:00Z`).
    #[serde(default)]
    since: Option<String>,
    /// Only of events before this time (RFC 3339).
    #[serde(default)]
    until: Option<String>,
    /// The `next` of the previous page.
    #[serde(default)]
    before: Option<String>,
    /// 1 to 500 (default 100).
    #[serde(default)]
    limit: Option<u32>,
}

/// A page of dead deliveries, newest first.
#[derive(Serialize, ToSchema)]
pub(super) struct DeadList {
    deliveries: Vec<DeadDelivery>,
    /// Pass as `before` for the next page; `null` on the last.
    next: Option<String>,
}

/// What a bulk resend scheduled.
#[derive(Serialize, ToSchema)]
pub(super) struct BulkResent {
    scheduled: usize,
    /// More dead deliveries match: call again.
    more: bool,
}

pub(super) fn instant(field: &str, value: Option<&str>) -> Result<Option<Millis>, ApiError> {
    value
        .map(|v| {
            humantime::parse_rfc3339_weak(v.trim())
                .map_err(|_| {
                    ApiError::bad_request(
                        "invalid_time",
                        format!("`{field}` must be an RFC 3339 time such as 2026-01-05T10:00:00Z"),
                    )
                })
                .map(|t| {
                    t.duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as Millis)
                        .unwrap_or(0)
                })
        })
        .transpose()
}

async fn filter(app: &App, instance_id: i64, selection: Selection) -> Result<DeadFilter, ApiError> {
    if let Some(endpoint_id) = &selection.endpoint_id {
        app.store
            .get_endpoint(instance_id, endpoint_id)
            .await?
            .ok_or_else(|| ApiError::not_found("webhook"))?;
    }
    Ok(DeadFilter {
        since: instant("since", selection.since.as_deref())?,
        until: instant("until", selection.until.as_deref())?,
        endpoint_id: selection.endpoint_id,
    })
}

#[utoipa::path(get, path = "/v1/deliveries/dead", tag = "events", params(ListQuery),
    responses((status = 200, description = "Dead deliveries, newest first", body = DeadList),
        (status = 400, description = "Bad time, limit or cursor", body = ErrorBody),
        (status = 404, description = "No such endpoint", body = ErrorBody),
        (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn list(
    State(app): State<App>,
    Authed(instance): Authed,
    Query(query): Query<ListQuery>,
) -> Result<Json<DeadList>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            "`limit` must be between 1 and 500",
        ));
    }
    let before = query
        .before
        .map(|b| b.parse::<i64>())
        .transpose()
        .map_err(|_| ApiError::bad_request("invalid_cursor", "`before` must be the `next` of a previous page"))?;
    let selection = Selection {
        endpoint_id: query.endpoint_id,
        since: query.since,
        until: query.until,
    };
    let filter = filter(&app, instance.id, selection).await?;
    let deliveries = app.store.list_dead(instance.id, &filter, before, limit).await?;
    let next = (deliveries.len() == limit as usize)
        .then(|| deliveries.last().map(|d| d.delivery_id.to_string()))
        .flatten();
    Ok(Json(DeadList { deliveries, next }))
}

#[utoipa::path(post, path = "/v1/deliveries/dead/resend", tag = "events", request_body = Selection,
    responses((status = 202, description = "Scheduled, oldest first", body = BulkResent),
        (status = 400, description = "Bad time", body = ErrorBody),
        (status = 404, description = "No such endpoint", body = ErrorBody),
        (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn resend(
    State(app): State<App>,
    Authed(instance): Authed,
    Json(selection): Json<Selection>,
) -> Result<impl IntoResponse, ApiError> {
    let filter = filter(&app, instance.id, selection).await?;
    let scheduled = app
        .store
        .resend_dead(instance.id, &filter, RESEND_BATCH, app.now())
        .await?;
    app.engine.wake();
    let more =
        scheduled >= RESEND_BATCH as usize && !app.store.list_dead(instance.id, &filter, None, 1).await?.is_empty();
    Ok((StatusCode::ACCEPTED, Json(BulkResent { scheduled, more })))
}

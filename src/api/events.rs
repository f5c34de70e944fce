//! The event feed and delivery records: `GET /v1/events` (pull with long-polling),
//! `GET /v1/events/{id}`, `GET /v1/events/{id}/attempts`, `POST /v1/events/{id}/resend`.
//!
//! **Pull cursor.** The cursor is the `events.seq` column. SQLite has one writer, so positions
//! are handed out in commit order; PostgreSQL makes them from transaction ids and reads only
//! below the oldest running transaction (see `store::postgres`), so either way a reader never
//! sees a later event before an earlier one commits. Positions are shared by all instances (and
//! on PostgreSQL are large numbers), so one instance's cursors have gaps; clients treat them as
//! opaque strings. Test events are left out. With `wait` (up to 30 s) the request waits on the
//! feed's `watch` value, subscribed before the read so that an event committed in between
//! still wakes it; at shutdown (`App::stopping`) it answers at once.
//!
//! **History.** `order=desc` browses newest first by the time each event was stored, paged
//! with `before` (the previous page's `next`; `null` when a page comes back short). Both orders take
//! the filters `type` (comma-separated), `number`, `message_id`, `outcome`, `since` and
//! `until` (see `store::history` for what each means and which index serves it). Every event
//! in an answer carries its `outcome`. An unknown `message_id` matches nothing (200, empty).
//!
//! **Resend appends.** A resend of a delivered or dead delivery adds a new delivery at the tail
//! of its conversation's queue, so per-conversation order still holds. A pending delivery that
//! is not leased is made due now instead, unless it is paused (a resend does not un-pause); a
//! waiting one is left alone. Attempt numbers carry on from the earlier delivery's, and the
//! new delivery gets the full retry schedule again (see `store::rules::resend_step`).

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::schemas::{ErrorBody, Resent};
use serde_json::value::RawValue;

use super::deliveries::instant;
use super::error::ApiError;
use super::extract::{Authed, Json, Path, Query, RawBody};
use crate::app::App;
use crate::events::{EventKind, EventRecord};
use crate::messages::Direction;
use crate::phone::PhoneNumber;
use crate::store::history::{self, EventQuery, HistoryEvent, HistoryOrder, Outcome};
use crate::store::{AttemptRecord, DeliveryStatus, rfc3339};

/// The longest a pull waits for new events.
const MAX_WAIT_SECONDS: u64 = 30;

/// The routes.
pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/events", get(pull))
        .route("/v1/events/{id}", get(read))
        .route("/v1/events/{id}/attempts", get(attempts))
        .route("/v1/events/{id}/resend", post(resend))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PullQuery {
    /// Oldest first after a cursor (`asc`, the default: the feed) or newest first (`desc`:
    /// browsing history, paged with `before`).
    #[serde(default)]
    order: Option<String>,
    /// `asc` only: the cursor to read after (`next` of the previous answer); 0 or left out: the start.
    #[serde(default)]
    after: Option<String>,
    /// `desc` only: the `next` of the previous page; left out: from the newest.
    #[serde(default)]
    before: Option<String>,
    /// How many, 1 to 1000 (default 100).
    #[serde(default)]
    limit: Option<u32>,
    /// `asc` only. Long-poll: wait up to this many seconds (at most 30) when there is nothing new.
    #[serde(default)]
    wait: Option<u64>,
    /// Only these types, comma-separated: `message`, `ack.sent`, `ack.delivered`, `ack.read`, `ack.failed`.
    #[serde(default, rename = "type")]
    kind: Option<String>,
    /// Only this customer's conversation (their number).
    #[serde(default)]
    number: Option<String>,
    /// Only the events carrying this message id: the message's event, its acks, and a
    /// customer's reply or reaction quoting it.
    #[serde(default)]
    message_id: Option<String>,
    /// Only events with this outcome: `delivered`, `failing`, `dead` or `pending`.
    #[serde(default)]
    outcome: Option<String>,
    /// Only events stored at or after this time (RFC 3339).
    #[serde(default)]
    since: Option<String>,
    /// Only events stored before this time (RFC 3339).
    #[serde(default)]
    until: Option<String>,
}

/// An event as the feed shows it.
#[derive(Serialize, ToSchema)]
pub(super) struct EventView {
    id: String,
    cursor: String,
    #[serde(rename = "type")]
    kind: &'static str,
    created_at: String,
    /// Where it stands towards the endpoints, the worst first: `dead`, `failing`, `pending`,
    /// `delivered`, or `none` when no endpoint takes it (or the only one that gave up on it was
    /// deleted). Always set here; left out on the
    /// live stream, whose events are new (their attempts follow as `attempt` items).
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'static str>,
    /// The exact webhook body (a `message`, `ack` or `test` event).
    #[schema(value_type = Object)]
    payload: Box<RawValue>,
}

impl TryFrom<EventRecord> for EventView {
    type Error = ApiError;
    fn try_from(e: EventRecord) -> Result<Self, ApiError> {
        let payload = RawValue::from_string(e.payload).map_err(|err| ApiError::internal(&err))?;
        Ok(Self {
            id: e.id,
            cursor: e.seq.to_string(),
            kind: e.kind.as_str(),
            created_at: rfc3339(e.created_at),
            outcome: None,
            payload,
        })
    }
}

impl TryFrom<HistoryEvent> for EventView {
    type Error = ApiError;
    fn try_from(h: HistoryEvent) -> Result<Self, ApiError> {
        let mut view = EventView::try_from(h.event)?;
        view.outcome = Some(h.outcome.as_str());
        Ok(view)
    }
}

#[derive(Serialize, ToSchema)]
pub(super) struct Feed {
    events: Vec<EventView>,
    /// Oldest first: the cursor to pass as `after` next time (always set). Newest first: the
    /// value to pass as `before` for the next page; `null` when this page was not full (a
    /// full last page is followed by an empty one).
    next: Option<String>,
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(code, message)
}

/// Reads the filters and paging of a request into a store query (`None`: nothing can match,
/// an unknown message).
async fn event_query(app: &App, instance_id: i64, q: &PullQuery, limit: u32) -> Result<Option<EventQuery>, ApiError> {
    let order = match q.order.as_deref().unwrap_or("asc") {
        "asc" => {
            if q.before.is_some() {
                return Err(bad(
                    "invalid_order",
                    "`before` pages newest first: use it with order=desc",
                ));
            }
            let after = match q.after.as_deref().filter(|a| !a.is_empty()) {
                None => 0,
                Some(a) => a.parse::<i64>().ok().filter(|a| *a >= 0).ok_or_else(|| {
                    bad(
                        "invalid_cursor",
                        "`after` must be a `cursor` or `next` value from this feed",
                    )
                })?,
            };
            HistoryOrder::Ascending { after }
        }
        "desc" => {
            if q.after.is_some() || q.wait.is_some() {
                return Err(bad(
                    "invalid_order",
                    "`after` and `wait` follow the feed oldest first; with order=desc, page with `before`",
                ));
            }
            let before = q
                .before
                .as_deref()
                .map(|b| {
                    history::parse_descending_cursor(b).ok_or_else(|| {
                        bad(
                            "invalid_cursor",
                            "`before` must be the `next` of a previous order=desc page",
                        )
                    })
                })
                .transpose()?;
            HistoryOrder::Descending { before }
        }
        _ => return Err(bad("invalid_order", "`order` is `asc` or `desc`")),
    };
    let mut kinds = Vec::new();
    for name in q
        .kind
        .iter()
        .flat_map(|k| k.split(','))
        .map(str::trim)
        .filter(|k| !k.is_empty())
    {
        let kind = EventKind::parse(name)
            .filter(|k| EventKind::SUBSCRIBABLE.contains(k))
            .ok_or_else(|| {
                bad(
                    "invalid_type",
                    format!(
                        "unknown event type `{name}`: use message, ack.sent, ack.delivered, ack.read or ack.failed"
                    ),
                )
            })?;
        kinds.push(kind);
    }
    let mut number = q
        .number
        .as_deref()
        .map(|n| PhoneNumber::parse(n).map(|p| p.as_str().to_string()))
        .transpose()
        .map_err(|e| bad("invalid_number", format!("`number`: {e}")))?;
    let outcome = q
        .outcome
        .as_deref()
        .map(|o| {
            Outcome::parse(o)
                .filter(|o| Outcome::FILTERABLE.contains(o))
                .ok_or_else(|| {
                    bad(
                        "invalid_outcome",
                        "`outcome` is `delivered`, `failing`, `dead` or `pending`",
                    )
                })
        })
        .transpose()?;
    let since = instant("since", q.since.as_deref())?;
    let until = instant("until", q.until.as_deref())?;
    let message_id = q.message_id.as_deref().map(str::trim).filter(|m| !m.is_empty());
    if let Some(message_id) = message_id {
        if message_id.len() > 200 || message_id.chars().any(char::is_control) {
            return Err(bad(
                "invalid_message_id",
                "`message_id` is at most 200 characters, without control characters",
            ));
        }
        // The message's events are all in its conversation: read only that one.
        let Some(message) = app.store.get_message(instance_id, message_id).await? else {
            return Ok(None);
        };
        let customer = if message.direction == Direction::Inbound {
            message.from
        } else {
            message.to
        };
        if number.as_ref().is_some_and(|n| *n != customer) {
            return Ok(None);
        }
        number = Some(customer);
    }
    Ok(Some(EventQuery {
        kinds,
        number,
        message_id: message_id.map(str::to_string),
        event_id: None,
        outcome,
        since,
        until,
        order,
        limit,
    }))
}

#[utoipa::path(get, path = "/v1/events", tag = "events", params(PullQuery),
    responses((status = 200, description = "Events, oldest first after the cursor (the feed) or newest first (order=desc), filtered", body = Feed), (status = 400, description = "Bad cursor, limit, wait, order or filter", body = ErrorBody), (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn pull(
    State(app): State<App>,
    Authed(instance): Authed,
    Query(q): Query<PullQuery>,
) -> Result<Json<Feed>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(bad("invalid_limit", "`limit` must be between 1 and 1000"));
    }
    let wait = q.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECONDS {
        return Err(bad(
            "invalid_wait",
            format!("`wait` may be at most {MAX_WAIT_SECONDS} seconds"),
        ));
    }
    let query = event_query(&app, instance.id, &q, limit).await?;
    let Some(query) = query else {
        let next = match q.order.as_deref() {
            Some("desc") => None,
            _ => Some(q.after.clone().filter(|a| !a.is_empty()).unwrap_or_else(|| "0".into())),
        };
        return Ok(Json(Feed {
            events: Vec::new(),
            next,
        }));
    };
    if let HistoryOrder::Descending { .. } = query.order {
        let events = app.store.event_history(instance.id, &query).await?;
        let next = (events.len() == limit as usize)
            .then(|| events.last().map(|e| history::descending_cursor(&e.event)))
            .flatten();
        let events = events.into_iter().map(EventView::try_from).collect::<Result<_, _>>()?;
        return Ok(Json(Feed { events, next }));
    }
    let HistoryOrder::Ascending { after } = query.order else {
        unreachable!("descending answered above")
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    // Subscribe before reading, so an event committed between the read and the wait still
    // wakes this request.
    let mut feed = app.subscribe_feed();
    let _watch = (wait > 0).then(|| app.watch(instance.id));
    loop {
        feed.borrow_and_update();
        let events = app.store.event_history(instance.id, &query).await?;
        let done = tokio::time::Instant::now() >= deadline || app.stopping.is_cancelled();
        if !events.is_empty() || done {
            let next = events.last().map(|e| e.event.seq).unwrap_or(after).to_string();
            let events = events.into_iter().map(EventView::try_from).collect::<Result<_, _>>()?;
            return Ok(Json(Feed {
                events,
                next: Some(next),
            }));
        }
        // Wait for new events, the deadline, or the server shutting down (then answer now).
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = feed.changed() => {}
            _ = app.stopping.cancelled() => {}
        }
    }
}

async fn find(app: &App, instance_id: i64, id: &str) -> Result<EventRecord, ApiError> {
    app.store
        .get_event(instance_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("event"))
}

#[derive(Serialize, ToSchema)]
pub(super) struct EventDetail {
    #[serde(flatten)]
    event: EventView,
    deliveries: Vec<DeliveryStatus>,
}

#[utoipa::path(get, path = "/v1/events/{id}", tag = "events", params(("id" = String, Path, description = "evt_…")),
    responses((status = 200, description = "The event and where it stands towards each endpoint", body = EventDetail), (status = 404, description = "No such event", body = ErrorBody), (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn read(
    State(app): State<App>,
    Authed(instance): Authed,
    Path(id): Path<String>,
) -> Result<Json<EventDetail>, ApiError> {
    let event = app
        .store
        .event_history(instance.id, &EventQuery::by_id(&id))
        .await?
        .pop()
        .ok_or_else(|| ApiError::not_found("event"))?;
    let deliveries = app.store.delivery_statuses(event.event.seq).await?;
    Ok(Json(EventDetail {
        event: event.try_into()?,
        deliveries,
    }))
}

#[derive(Serialize, ToSchema)]
pub(super) struct Attempts {
    attempts: Vec<AttemptRecord>,
    deliveries: Vec<DeliveryStatus>,
}

#[utoipa::path(get, path = "/v1/events/{id}/attempts", tag = "events", params(("id" = String, Path, description = "evt_…")),
    responses((status = 200, description = "Every delivery attempt of the event", body = Attempts), (status = 404, description = "No such event", body = ErrorBody), (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn attempts(
    State(app): State<App>,
    Authed(instance): Authed,
    Path(id): Path<String>,
) -> Result<Json<Attempts>, ApiError> {
    let event = find(&app, instance.id, &id).await?;
    let attempts = app.store.list_attempts(event.seq).await?;
    let deliveries = app.store.delivery_statuses(event.seq).await?;
    Ok(Json(Attempts { attempts, deliveries }))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ResendBody {
    #[serde(default)]
    endpoint_id: Option<String>,
}

#[utoipa::path(post, path = "/v1/events/{id}/resend", tag = "events", params(("id" = String, Path, description = "evt_…")),
    request_body(content = Option<ResendBody>, description = "Optional: one endpoint only"),
    responses((status = 202, description = "Scheduled", body = Resent), (status = 400, description = "Bad body", body = ErrorBody), (status = 404, description = "No such event or endpoint", body = ErrorBody), (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn resend(
    State(app): State<App>,
    Authed(instance): Authed,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<impl IntoResponse, ApiError> {
    let event = find(&app, instance.id, &id).await?;
    // The body is optional: `{}` or nothing resends to every endpoint.
    let body: ResendBody = if body.iter().all(u8::is_ascii_whitespace) {
        ResendBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "invalid_body",
                format!("expected {{\"endpoint_id\": \"ep_…\"}} or no body: {e}"),
            )
        })?
    };
    let endpoint_id = body.endpoint_id;
    if let Some(endpoint_id) = &endpoint_id {
        app.store
            .get_endpoint(instance.id, endpoint_id)
            .await?
            .ok_or_else(|| ApiError::not_found("webhook"))?;
    }
    let scheduled = app
        .store
        .resend_event(event.seq, endpoint_id.as_deref(), app.now())
        .await?;
    app.engine.wake();
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"event_id": event.id, "scheduled": scheduled})),
    ))
}

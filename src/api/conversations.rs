//! History: `/v1/conversations` (searchable by number or name with `q`) and
//! `/v1/conversations/{number}/messages`, newest first, paged with an opaque `before` position, and `POST /v1/conversations/{number}/read`
//! (through `App::mark_read`).
//!
//! **Unread counts.** `conversations.unread` counts inbound messages not yet answered or
//! marked read. It goes up by one with each inbound message and back to 0 with each outbound
//! one (a reply means the business read the conversation) or with `…/read`. Marking read
//! publishes no event; on `meta` it also queues a read receipt for the customer's newest
//! message, so their phone shows blue ticks.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::schemas::{ErrorBody, ReadMark};

use super::error::ApiError;
use super::extract::{Authed, Json, Path, Query};
use crate::app::App;
use crate::messages::StoredMessage;
use crate::phone::PhoneNumber;
use crate::store::{ConversationSummary, window_expires_at};

/// The routes.
pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/conversations", get(conversations))
        .route("/v1/conversations/{number}/messages", get(messages))
        .route("/v1/conversations/{number}/read", post(mark_read))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ConversationQuery {
    /// A `next` value from an earlier page.
    #[serde(default)]
    before: Option<String>,
    /// How many, 1 to 200 (default 50).
    #[serde(default)]
    limit: Option<u32>,
    /// Only conversations whose number or name contains this, 1 to 100 characters. Case is
    /// ignored for A to Z (on PostgreSQL for every letter); `%` and `_` are taken literally.
    #[serde(default)]
    q: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct Page {
    /// A `next` value from an earlier page.
    #[serde(default)]
    before: Option<String>,
    #[serde(default)]
    /// How many, 1 to 200 (default 50).
    limit: Option<u32>,
}

impl Page {
    fn parse(&self) -> Result<(Option<i64>, u32), ApiError> {
        let before = match self.before.as_deref().filter(|b| !b.is_empty()) {
            None => None,
            Some(b) => Some(b.parse::<i64>().map_err(|_| {
                ApiError::bad_request("invalid_cursor", "`before` must be a `next` value from an earlier page")
            })?),
        };
        let limit = self.limit.unwrap_or(50);
        if !(1..=200).contains(&limit) {
            return Err(ApiError::bad_request(
                "invalid_limit",
                "`limit` must be between 1 and 200",
            ));
        }
        Ok((before, limit))
    }
}

#[derive(Serialize, ToSchema)]
pub(super) struct Conversations {
    conversations: Vec<ConversationSummary>,
    /// Pass as `before` for the next page; `null` on the last page.
    next: Option<String>,
}

#[utoipa::path(get, path = "/v1/conversations", tag = "history", params(ConversationQuery),
    responses((status = 200, description = "Conversations, most recently active first", body = Conversations), (status = 400, description = "Bad paging", body = ErrorBody), (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn conversations(
    State(app): State<App>,
    Authed(instance): Authed,
    Query(query): Query<ConversationQuery>,
) -> Result<Json<Conversations>, ApiError> {
    let (before, limit) = Page {
        before: query.before,
        limit: query.limit,
    }
    .parse()?;
    let search = match query.q.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(q) if q.chars().count() <= 100 => Some(q.to_string()),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "`q` may be at most 100 characters",
            ));
        }
    };
    let conversations = app.store.list_conversations(instance.id, before, limit, search).await?;
    let next = (conversations.len() == limit as usize)
        .then(|| conversations.last().map(|c| c.last_message.seq.to_string()))
        .flatten();
    Ok(Json(Conversations { conversations, next }))
}

#[derive(Serialize, ToSchema)]
pub(super) struct Messages {
    messages: Vec<StoredMessage>,
    next: Option<String>,
    /// When the customer-service window closes (or closed), RFC 3339: 24 hours after the
    /// customer's last message; `null` if they never wrote. Outside it only templates go.
    window_expires_at: Option<String>,
}

#[utoipa::path(get, path = "/v1/conversations/{number}/messages", tag = "history",
    params(("number" = String, Path, description = "The customer's number, digits"), Page),
    responses((status = 200, description = "Messages, newest first", body = Messages), (status = 400, description = "Bad paging", body = ErrorBody), (status = 422, description = "Not a phone number", body = ErrorBody), (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn messages(
    State(app): State<App>,
    Authed(instance): Authed,
    Path(number): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<Messages>, ApiError> {
    let number = PhoneNumber::parse(&number).map_err(|e| ApiError::invalid("invalid_phone_number", e.to_string()))?;
    let (before, limit) = page.parse()?;
    let messages = app
        .store
        .list_messages(instance.id, number.as_str(), before, limit)
        .await?;
    let next = (messages.len() == limit as usize)
        .then(|| messages.last().map(|m| m.seq.to_string()))
        .flatten();
    let last_inbound_at = app.store.last_inbound_at(instance.id, number.as_str()).await?;
    Ok(Json(Messages {
        messages,
        next,
        window_expires_at: window_expires_at(last_inbound_at),
    }))
}

/// Marks a conversation read (its unread count drops to zero); on the meta channel the
/// customer's newest message also gets its blue ticks.
#[utoipa::path(post, path = "/v1/conversations/{number}/read", tag = "history",
    params(("number" = String, Path, description = "The customer's number, digits")),
    responses((status = 200, description = "Marked read", body = ReadMark), (status = 404, description = "No such conversation", body = ErrorBody), (status = 422, description = "Not a phone number", body = ErrorBody), (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn mark_read(
    State(app): State<App>,
    Authed(instance): Authed,
    Path(number): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let number = PhoneNumber::parse(&number).map_err(|e| ApiError::invalid("invalid_phone_number", e.to_string()))?;
    if !app.mark_read(&instance, &number).await? {
        return Err(ApiError::not_found("conversation"));
    }
    Ok(Json(serde_json::json!({"number": number.as_str(), "unread": 0})))
}

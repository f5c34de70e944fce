//! Schema-only types: the shapes of bodies the handlers build with `json!` (`ReadMark`,
//! `Resent`, `Inbound`, `StatusChanged`, `SseItem`, the compatibility answers, `ErrorBody`)
//! and of the two webhook bodies (`MessageEvent`, `AckEvent`), for the OpenAPI document
//! ([`super::openapi`]) and the handlers' `#[utoipa::path]` annotations. Nothing builds them
//! at run time; they are written by hand and checked against real answers by the API tests
//! and schemathesis.

use serde::Serialize;
use utoipa::ToSchema;

/// Every error of the `/v1` API.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
struct ErrorDetail {
    /// Machine-readable, e.g. `invalid_url`, `unauthorized`, `not_found`.
    code: String,
    /// What to fix, for people.
    message: String,
}

/// `POST /api/create-message` success.
#[derive(Serialize, ToSchema)]
pub struct CompatSuccess {
    #[schema(example = "Success")]
    message_status: String,
    data: CompatData,
}

#[derive(Serialize, ToSchema)]
struct CompatData {
    from: String,
    to: String,
    #[schema(example = 200)]
    status_code: u16,
    message_id: String,
}

/// `POST /api/create-message` failure, e.g. `{"error": "Invalid Auth and AppKey"}`.
#[derive(Serialize, ToSchema)]
pub struct CompatError {
    #[schema(example = "Invalid Auth and AppKey")]
    error: String,
    message_status: Option<String>,
}

/// One item of the `/v1/stream` Server-Sent Events.
#[derive(Serialize, ToSchema)]
pub struct SseItem {
    /// `ready`, `event` or `attempt`.
    event: String,
    /// JSON: `ready` {cursor}; `event` an event as in /v1/events; `attempt` a delivery attempt.
    data: String,
    /// For `event` items: the cursor, to resume from (`Last-Event-ID`).
    id: Option<String>,
}

/// A conversation marked read.
#[derive(Serialize, ToSchema)]
pub struct ReadMark {
    number: String,
    unread: i64,
}

/// A resend scheduled.
#[derive(Serialize, ToSchema)]
pub struct Resent {
    event_id: String,
    /// How many deliveries were scheduled.
    scheduled: u32,
}

/// A simulated customer message received.
#[derive(Serialize, ToSchema)]
pub struct Inbound {
    message_id: String,
    event_id: String,
}

/// A sandbox status applied.
#[derive(Serialize, ToSchema)]
pub struct StatusChanged {
    message_id: String,
    status: crate::messages::MessageStatus,
    event_id: String,
}

/// The `message` webhook: a customer wrote to the business number.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"event": "message", "instance_id": "10922", "data": {"from": "447123456789", "to": "15550123456",
    "type": "text", "body": "Hello, where is my order?", "message_id": "wamid.HBgLM...", "timestamp": 1678900000}}))]
pub struct MessageEvent {
    /// Always `message`.
    event: String,
    instance_id: String,
    data: MessageEventData,
}

#[derive(Serialize, ToSchema)]
struct MessageEventData {
    /// The customer's number, digits.
    from: String,
    /// The business number, digits.
    to: String,
    /// text, image, video, audio, document, sticker, button, list, location, contacts, reaction.
    #[serde(rename = "type")]
    kind: String,
    /// The text, caption or button title; empty where nothing fits.
    body: String,
    message_id: String,
    /// Unix seconds.
    timestamp: i64,
    /// The customer's profile name.
    name: Option<String>,
    /// For media: {url, caption, …}.
    #[schema(value_type = Option<Object>)]
    media: Option<serde_json::Value>,
    /// For a button reply: {id, title}.
    #[schema(value_type = Option<Object>)]
    button: Option<serde_json::Value>,
    /// For a list reply: {id, title}.
    #[schema(value_type = Option<Object>)]
    list: Option<serde_json::Value>,
    /// For a location: {latitude, longitude, name, address}.
    #[schema(value_type = Option<Object>)]
    location: Option<serde_json::Value>,
    /// For shared contacts: [{name, phone}].
    #[schema(value_type = Option<Vec<Object>>)]
    contacts: Option<serde_json::Value>,
    /// For a reaction: {message_id, emoji}.
    #[schema(value_type = Option<Object>)]
    reaction: Option<serde_json::Value>,
    /// For a quoted reply: {message_id}.
    #[schema(value_type = Option<Object>)]
    context: Option<serde_json::Value>,
}

/// The `ack` webhook: an outgoing message changed status.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"event": "ack", "instance_id": "10922", "data": {"message_id": "wamid.HBgLM...",
    "status": "read", "timestamp": 1678900055, "to": "447123456789"}}))]
pub struct AckEvent {
    /// Always `ack`.
    event: String,
    instance_id: String,
    data: AckEventData,
}

#[derive(Serialize, ToSchema)]
struct AckEventData {
    message_id: String,
    /// sent, delivered, read or failed.
    status: String,
    /// Unix seconds.
    timestamp: i64,
    /// The customer's number.
    to: String,
    /// For `failed`.
    error: Option<crate::events::AckError>,
}

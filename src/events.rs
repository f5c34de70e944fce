//! Events: immutable records of something that happened to an instance, and their exact
//! JSON payloads (the seed page's shapes, with optional fields added, never changed).
//!
//! A payload is serialised once, when the event is created, and stored as text; every
//! delivery attempt sends those same bytes under the same `webhook-id` (the event id); only
//! `webhook-timestamp` and the signature are new per attempt.
//!
//! [`EventKind`]'s names are also the filter names endpoints subscribe with. Every event
//! belongs to a conversation, the key of its delivery queues: the customer's number, so
//! `message` events and the `ack`s of messages sent to that customer share one queue and a
//! receiver sees a reply's acks in order with the customer's messages. A `test` event's key
//! is its own id, so it never waits behind customer traffic. `ack` data carries an extra `to`
//! field with the customer's number, so a receiver can route a receipt without looking the
//! message up; it is additive, the seed's three fields keep their names and types.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::clock::Millis;
use crate::ids;
use crate::messages::MessageStatus;

/// What an event is about; also the names an endpoint filters on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A customer's message (`message`).
    Message,
    /// An outgoing message left the server (`ack.sent`).
    AckSent,
    /// It reached the customer's phone (`ack.delivered`).
    AckDelivered,
    /// The customer read it (`ack.read`).
    AckRead,
    /// It could not be delivered (`ack.failed`).
    AckFailed,
    /// A test event sent by hand to one endpoint (`test`); never filtered, never pulled.
    Test,
}

impl EventKind {
    /// Every kind an endpoint can subscribe to.
    pub const SUBSCRIBABLE: [EventKind; 5] = [
        EventKind::Message,
        EventKind::AckSent,
        EventKind::AckDelivered,
        EventKind::AckRead,
        EventKind::AckFailed,
    ];

    /// The filter name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Message => "message",
            EventKind::AckSent => "ack.sent",
            EventKind::AckDelivered => "ack.delivered",
            EventKind::AckRead => "ack.read",
            EventKind::AckFailed => "ack.failed",
            EventKind::Test => "test",
        }
    }

    /// Parses a filter name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "message" => EventKind::Message,
            "ack.sent" => EventKind::AckSent,
            "ack.delivered" => EventKind::AckDelivered,
            "ack.read" => EventKind::AckRead,
            "ack.failed" => EventKind::AckFailed,
            "test" => EventKind::Test,
            _ => return None,
        })
    }

    /// A bit of its own, for filters stored as a number.
    pub fn bit(self) -> u8 {
        match self {
            EventKind::Message => 1,
            EventKind::AckSent => 2,
            EventKind::AckDelivered => 4,
            EventKind::AckRead => 8,
            EventKind::AckFailed => 16,
            EventKind::Test => 0,
        }
    }

    /// The ack kind for an outgoing message's status.
    pub fn for_status(status: MessageStatus) -> Option<Self> {
        match status {
            MessageStatus::Sent => Some(EventKind::AckSent),
            MessageStatus::Delivered => Some(EventKind::AckDelivered),
            MessageStatus::Read => Some(EventKind::AckRead),
            MessageStatus::Failed => Some(EventKind::AckFailed),
            MessageStatus::Received | MessageStatus::Accepted => None,
        }
    }
}

/// A new event, ready to be stored with its deliveries in one transaction.
#[derive(Clone, Debug)]
pub struct EventDraft {
    /// `evt_…`, also the `webhook-id`.
    pub id: String,
    /// Its kind.
    pub kind: EventKind,
    /// The customer number of the conversation it belongs to (ordering key).
    pub conversation: String,
    /// The exact JSON body every attempt sends.
    pub payload: String,
    /// When it happened.
    pub created_at: Millis,
}

/// A stored event.
#[derive(Clone, Debug)]
pub struct EventRecord {
    /// Position in the instance's feed (the pull cursor).
    pub seq: i64,
    /// `evt_…`
    pub id: String,
    /// The instance.
    pub instance_id: i64,
    /// Its kind.
    pub kind: EventKind,
    /// The customer number of its conversation.
    pub conversation: String,
    /// The JSON body.
    pub payload: String,
    /// When it happened.
    pub created_at: Millis,
}

#[derive(Serialize)]
struct Envelope<'a, D: Serialize> {
    event: &'a str,
    instance_id: String,
    data: D,
}

#[derive(Serialize)]
struct MessageData<'a> {
    from: &'a str,
    to: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    body: &'a str,
    message_id: &'a str,
    timestamp: i64,
    #[serde(flatten)]
    detail: &'a Map<String, Value>,
}

/// The facts a `message` event reports.
pub struct MessageFacts<'a> {
    /// The instance id.
    pub instance_id: i64,
    /// The customer's number.
    pub from: &'a str,
    /// The business number.
    pub to: &'a str,
    /// The type.
    pub kind: &'a str,
    /// Text, caption or button title.
    pub body: &'a str,
    /// `wamid.…`
    pub message_id: &'a str,
    /// Optional fields (`media`, `button`, `name`, `context`).
    pub detail: &'a Map<String, Value>,
}

/// Builds a `message` event.
pub fn message_event(facts: MessageFacts<'_>, now: Millis) -> EventDraft {
    let payload = Envelope {
        event: "message",
        instance_id: facts.instance_id.to_string(),
        data: MessageData {
            from: facts.from,
            to: facts.to,
            kind: facts.kind,
            body: facts.body,
            message_id: facts.message_id,
            timestamp: now / 1000,
            detail: facts.detail,
        },
    };
    EventDraft {
        id: ids::event_id(now),
        kind: EventKind::Message,
        conversation: facts.from.to_string(),
        payload: serde_json::to_string(&payload).expect("event payloads serialise"),
        created_at: now,
    }
}

/// The `error` of a failed ack.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct AckError {
    /// A numeric code (WhatsApp's where there is one).
    pub code: i64,
    /// A short description.
    pub title: String,
}

#[derive(Serialize)]
struct AckData<'a> {
    message_id: &'a str,
    status: &'a str,
    timestamp: i64,
    to: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a AckError>,
}

/// Builds an `ack` event for an outgoing message to `customer`. `None` for statuses that
/// publish nothing (`received`, `accepted`).
pub fn ack_event(
    instance_id: i64,
    message_id: &str,
    customer: &str,
    status: MessageStatus,
    error: Option<&AckError>,
    now: Millis,
) -> Option<EventDraft> {
    let kind = EventKind::for_status(status)?;
    let payload = Envelope {
        event: "ack",
        instance_id: instance_id.to_string(),
        data: AckData {
            message_id,
            status: status.as_str(),
            timestamp: now / 1000,
            to: customer,
            error,
        },
    };
    Some(EventDraft {
        id: ids::event_id(now),
        kind,
        conversation: customer.to_string(),
        payload: serde_json::to_string(&payload).expect("event payloads serialise"),
        created_at: now,
    })
}

/// Builds the test event `POST /v1/webhooks/{id}/test` sends to one endpoint.
pub fn test_event(instance_id: i64, endpoint_id: &str, now: Millis) -> EventDraft {
    let payload = Envelope {
        event: "test",
        instance_id: instance_id.to_string(),
        data: serde_json::json!({
            "endpoint_id": endpoint_id,
            "message": "This is a test event from botlinkd. Answer 2xx within 3 seconds.",
            "timestamp": now / 1000,
        }),
    };
    let id = ids::event_id(now);
    EventDraft {
        // Each test event is a conversation of its own: it never waits behind another.
        conversation: id.clone(),
        id,
        kind: EventKind::Test,
        payload: serde_json::to_string(&payload).expect("event payloads serialise"),
        created_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_event_has_the_seed_shape_in_order() {
        let detail = Map::new();
        let e = message_event(
            MessageFacts {
                instance_id: 10922,
                from: "447123456789",
                to: "15550123456",
                kind: "text",
                body: "Hello, where is my order?",
                message_id: "wamid.X",
                detail: &detail,
            },
            1_678_900_000_123,
        );
        assert_eq!(
            e.payload,
            r#"{"event":"message","instance_id":"10922","data":{"from":"447123456789","to":"15550123456","type":"text","body":"Hello, where is my order?","message_id":"wamid.X","timestamp":1678900000}}"#
        );
    }

    #[test]
    fn ack_event_has_the_seed_fields() {
        let e = ack_event(
            10922,
            "wamid.X",
            "447123456789",
            MessageStatus::Read,
            None,
            1_678_900_055_000,
        )
        .unwrap();
        let v: Value = serde_json::from_str(&e.payload).unwrap();
        assert_eq!(v["event"], "ack");
        assert_eq!(v["data"]["status"], "read");
        assert_eq!(v["data"]["timestamp"], 1_678_900_055);
        assert_eq!(e.kind, EventKind::AckRead);
    }
}

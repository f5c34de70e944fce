//! WhatsApp messages: what a customer sent us and what the business sends back.
//!
//! Requests are parsed here into validated values ([`InboundMessage`], [`OutboundMessage`])
//! before anything is stored, so the store and the event builders only ever see good data.
//!
//! A [`MessageStatus`] only moves forward ([`MessageStatus::can_advance_to`]):
//! `accepted → sent → delivered → read`, `read` may skip `delivered`, and `failed` may follow
//! anything except `read` (a customer's message is `received`). A status that does not move
//! forward publishes nothing (the sandbox's manual call answers 409; Meta's webhook counts it
//! as a duplicate), so a `delivered` that Meta reports after `read` is dropped.
//!
//! `accepted` exists only on `meta`: there a send is committed and queued, not yet with
//! WhatsApp, when the API answers. `sent` keeps its seed meaning (WhatsApp has the message),
//! so `ack.sent` waits for Meta's acceptance; `accepted` publishes no event and ranks below
//! `sent`, so the send worker's `sent` or Meta's own can move it forward.
//!
//! [`window`] holds the 24-hour customer-service window rule.

mod inbound;
mod outbound;
pub mod window;

use serde::{Deserialize, Serialize};

pub use inbound::{InboundMessage, InboundRequest};
pub use outbound::{Button, OutboundMessage, SendRequest, TemplateRef};

use crate::clock::Millis;

/// Which way a message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From the customer to the business.
    Inbound,
    /// From the business to the customer.
    Outbound,
}

impl Direction {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "inbound" => Some(Direction::Inbound),
            "outbound" => Some(Direction::Outbound),
            _ => None,
        }
    }
}

/// Where a message stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    /// An inbound message, received from the customer.
    Received,
    /// Accepted by botlinkd, not yet handed to WhatsApp.
    Accepted,
    /// Left the server.
    Sent,
    /// On the customer's phone.
    Delivered,
    /// Opened by the customer (blue ticks).
    Read,
    /// Could not be delivered.
    Failed,
}

impl MessageStatus {
    /// The stored and published name.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Received => "received",
            MessageStatus::Accepted => "accepted",
            MessageStatus::Sent => "sent",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Read => "read",
            MessageStatus::Failed => "failed",
        }
    }

    /// Parses a stored or requested name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "received" => MessageStatus::Received,
            "accepted" => MessageStatus::Accepted,
            "sent" => MessageStatus::Sent,
            "delivered" => MessageStatus::Delivered,
            "read" => MessageStatus::Read,
            "failed" => MessageStatus::Failed,
            _ => return None,
        })
    }

    /// Whether an outgoing message may move from `self` to `next`. Statuses only move
    /// forward (a late `delivered` after `read` is dropped, as WhatsApp itself does), `read`
    /// may skip `delivered`, and nothing follows `failed` or `read` except nothing.
    pub fn can_advance_to(self, next: MessageStatus) -> bool {
        use MessageStatus::*;
        match (self, next) {
            (Failed | Read | Received, _) => false,
            (_, Failed) => true,
            (_, Received | Accepted) => false,
            (current, next) => next.rank() > current.rank(),
        }
    }

    fn rank(self) -> u8 {
        match self {
            MessageStatus::Received | MessageStatus::Accepted => 0,
            MessageStatus::Sent => 1,
            MessageStatus::Delivered => 2,
            MessageStatus::Read => 3,
            MessageStatus::Failed => 4,
        }
    }
}

/// A stored message, as history shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct StoredMessage {
    /// `wamid.…`
    pub message_id: String,
    /// Inbound or outbound.
    pub direction: Direction,
    /// The sender's number.
    pub from: String,
    /// The recipient's number.
    pub to: String,
    /// The message type (`text`, `image`, `button`, `buttons`, `template`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// Text, caption or button title; empty where nothing fits.
    pub body: String,
    /// Current status.
    pub status: MessageStatus,
    /// When it was received or sent, Unix seconds.
    pub timestamp: i64,
    /// Type-specific detail (media, buttons, template, profile name), as extra fields.
    #[serde(flatten)]
    #[schema(ignore)]
    pub detail: serde_json::Map<String, serde_json::Value>,
    /// History paging position.
    #[serde(skip)]
    #[schema(ignore)]
    pub seq: i64,
    /// When it was stored, milliseconds.
    #[serde(skip)]
    #[schema(ignore)]
    pub created_at: Millis,
}

/// One validation failure, phrased for the API user.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct Invalid {
    /// Machine-readable code.
    pub code: &'static str,
    /// What to fix.
    pub message: String,
}

impl Invalid {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Checks a media URL: absolute http(s).
pub(crate) fn parse_media_url(field: &str, value: &str) -> Result<String, Invalid> {
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(u.to_string()),
        _ => Err(Invalid::new(
            "invalid_media_url",
            format!("`{field}` must be an absolute http:// or https:// URL"),
        )),
    }
}

/// Checks that a text is present and not longer than `max` characters.
pub(crate) fn check_text(field: &str, value: &str, max: usize) -> Result<(), Invalid> {
    if value.chars().count() > max {
        return Err(Invalid::new(
            "text_too_long",
            format!("`{field}` may be at most {max} characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod hostile_input;

#[cfg(test)]
mod tests {
    use super::MessageStatus::*;

    #[test]
    fn statuses_only_move_forward() {
        assert!(Sent.can_advance_to(Delivered));
        assert!(Sent.can_advance_to(Read));
        assert!(Delivered.can_advance_to(Failed));
        assert!(!Read.can_advance_to(Delivered));
        assert!(!Delivered.can_advance_to(Delivered));
        assert!(!Failed.can_advance_to(Read));
        assert!(!Read.can_advance_to(Failed));
    }
}

//! Meta's messages and statuses, turned into the facts of botlinkd's `message` and `ack`
//! events (the SPEC's shapes): `type`, `body` (text, caption, title or `""`) and optional
//! detail fields (`media`, `button`, `list`, `location`, `contacts`, `reaction`, `context`,
//! `name`). [`message`] also gives the message's wamid and time; [`status`] turns a status
//! into a `StatusUpdate` (`None` for `deleted`, `warning` and any other status than `sent`,
//! `delivered`, `read` and `failed`, which are ignored).
//!
//! **Unknown types are passed on.** Meta adds message types over time; refusing or dropping
//! them would lose customers' messages. A type botlinkd does not normalise (`unknown`) is
//! published under its own name (letters, digits and `_`, at most 32 characters; `unknown` if
//! nothing is left), with an empty `body`, Meta's object in `meta`, and Meta's reason in
//! `error` where it gave one. `normalise_tests.rs` runs this over the fixtures and a property
//! test over arbitrary JSON.

use serde_json::{Map, Value, json};

use super::graph::ack_error;
use super::payload::{Context, Media, Message, Status};
use crate::clock::Millis;
use crate::events::AckError;
use crate::messages::{InboundMessage, MessageStatus};
use crate::phone::PhoneNumber;

/// A customer's message, normalised.
#[derive(Debug)]
pub struct NormalisedMessage {
    /// Meta's id, kept as botlinkd's `message_id` (Meta's retries carry the same one).
    pub wamid: String,
    /// When the customer sent it.
    pub sent_at: Option<Millis>,
    /// The message.
    pub message: InboundMessage,
}

/// A status change, normalised.
#[derive(Debug, PartialEq)]
pub struct StatusUpdate {
    /// Meta's id of the message the business sent.
    pub wamid: String,
    /// The new status.
    pub status: MessageStatus,
    /// For `failed`: why.
    pub error: Option<AckError>,
    /// When it happened.
    pub at: Option<Millis>,
}

/// Normalises one message of Meta's `messages` array. `media_base` is the address media is
/// downloaded through (`{base}/v1/messages/{id}/media`).
pub fn message(raw: &Value, profile_name: Option<&str>, media_base: &str) -> Result<NormalisedMessage, String> {
    let m: Message = serde_json::from_value(raw.clone()).map_err(|e| format!("unreadable message: {e}"))?;
    let from = PhoneNumber::parse(&m.from).map_err(|_| format!("unreadable sender `{}`", m.from))?;
    let mut detail = Map::new();
    if let Some(name) = profile_name.filter(|n| !n.trim().is_empty()) {
        detail.insert("name".into(), Value::String(name.to_string()));
    }
    if let Some(context) = &m.context {
        add_context(&mut detail, context);
    }
    let media_url = format!(
        "{}/v1/messages/{}/media",
        media_base.trim_end_matches('/'),
        url::form_urlencoded::byte_serialize(m.id.as_bytes()).collect::<String>()
    );
    let (kind, body) = match m.kind.as_str() {
        "text" => ("text", m.text.as_ref().map(|t| t.body.clone()).unwrap_or_default()),
        kind @ ("image" | "video" | "audio" | "document" | "sticker") => {
            let media = match kind {
                "image" => &m.image,
                "video" => &m.video,
                "audio" => &m.audio,
                "document" => &m.document,
                _ => &m.sticker,
            };
            match media {
                Some(media) => {
                    detail.insert("media".into(), media_detail(media, &media_url));
                    (kind, media.caption.clone().unwrap_or_default())
                }
                None => return Ok(unknown(m, raw, from, detail)),
            }
        }
        "location" => match &m.location {
            Some(l) => {
                let mut location = json!({"latitude": l.latitude, "longitude": l.longitude});
                for (key, value) in [("name", &l.name), ("address", &l.address), ("url", &l.url)] {
                    if let Some(value) = value {
                        location[key] = Value::String(value.clone());
                    }
                }
                detail.insert("location".into(), location);
                ("location", l.name.clone().unwrap_or_default())
            }
            None => return Ok(unknown(m, raw, from, detail)),
        },
        "contacts" => {
            let cards: Vec<Value> = m
                .contacts
                .iter()
                .flatten()
                .map(|card| {
                    let name = card
                        .name
                        .as_ref()
                        .and_then(|n| n.formatted_name.clone().or_else(|| n.first_name.clone()))
                        .unwrap_or_default();
                    let phone = card
                        .phones
                        .first()
                        .and_then(|p| p.phone.clone().or_else(|| p.wa_id.clone()));
                    let mut contact = json!({"name": name});
                    if let Some(phone) = phone {
                        contact["phone"] = Value::String(phone);
                    }
                    if let Some(wa_id) = card.phones.first().and_then(|p| p.wa_id.clone()) {
                        contact["wa_id"] = Value::String(wa_id);
                    }
                    contact
                })
                .collect();
            let body = cards
                .first()
                .and_then(|c| c["name"].as_str())
                .unwrap_or_default()
                .to_string();
            detail.insert("contacts".into(), Value::Array(cards));
            ("contacts", body)
        }
        "reaction" => match &m.reaction {
            Some(r) => {
                let emoji = r.emoji.clone().unwrap_or_default();
                detail.insert(
                    "reaction".into(),
                    json!({"message_id": r.message_id, "emoji": emoji, "removed": emoji.is_empty()}),
                );
                ("reaction", emoji)
            }
            None => return Ok(unknown(m, raw, from, detail)),
        },
        "interactive" => match m.interactive.as_ref().map(|i| (i.kind.as_str(), i)) {
            Some(("button_reply", i)) if i.button_reply.is_some() => {
                let reply = i.button_reply.as_ref().expect("checked");
                detail.insert("button".into(), json!({"id": reply.id, "title": reply.title}));
                ("button", reply.title.clone())
            }
            Some(("list_reply", i)) if i.list_reply.is_some() => {
                let reply = i.list_reply.as_ref().expect("checked");
                let mut list = json!({"id": reply.id, "title": reply.title});
                if let Some(description) = &reply.description {
                    list["description"] = Value::String(description.clone());
                }
                detail.insert("list".into(), list);
                ("list", reply.title.clone())
            }
            _ => return Ok(unknown(m, raw, from, detail)),
        },
        // A template's quick-reply button: `payload` is what the template defined.
        "button" => match &m.button {
            Some(b) => {
                let id = b.payload.clone().unwrap_or_else(|| b.text.clone());
                detail.insert("button".into(), json!({"id": id, "title": b.text}));
                ("button", b.text.clone())
            }
            None => return Ok(unknown(m, raw, from, detail)),
        },
        _ => return Ok(unknown(m, raw, from, detail)),
    };
    Ok(NormalisedMessage {
        sent_at: m.timestamp.map(|s| s * 1000),
        wamid: m.id,
        message: InboundMessage {
            from,
            kind: kind.to_string(),
            body,
            detail,
        },
    })
}

/// A type botlinkd does not normalise (Meta's `unsupported`, `order`, `system`, or one added
/// later): published under its own name, with `body` empty, Meta's object in `meta`, and
/// Meta's reason in `error` where it gave one.
fn unknown(m: Message, raw: &Value, from: PhoneNumber, mut detail: Map<String, Value>) -> NormalisedMessage {
    let kind: String = m
        .kind
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(32)
        .collect();
    if let Some(e) = m.errors.as_ref().and_then(|e| e.first()) {
        detail.insert(
            "error".into(),
            json!(ack_error(e.code, e.title.as_deref(), e.message.as_deref())),
        );
    }
    detail.insert("meta".into(), raw.clone());
    NormalisedMessage {
        sent_at: m.timestamp.map(|s| s * 1000),
        wamid: m.id,
        message: InboundMessage {
            from,
            kind: if kind.is_empty() { "unknown".into() } else { kind },
            body: String::new(),
            detail,
        },
    }
}

fn add_context(detail: &mut Map<String, Value>, context: &Context) {
    if let Some(id) = &context.id {
        let mut quoted = json!({"message_id": id});
        if let Some(from) = &context.from {
            quoted["from"] = Value::String(from.clone());
        }
        detail.insert("context".into(), quoted);
    }
    if context.forwarded || context.frequently_forwarded {
        detail.insert(
            "forwarded".into(),
            Value::String(
                if context.frequently_forwarded {
                    "frequently"
                } else {
                    "once"
                }
                .into(),
            ),
        );
    }
}

fn media_detail(media: &Media, url: &str) -> Value {
    let mut out = json!({"id": media.id, "url": url});
    for (key, value) in [
        ("mime_type", &media.mime_type),
        ("sha256", &media.sha256),
        ("caption", &media.caption),
        ("filename", &media.filename),
    ] {
        if let Some(value) = value {
            out[key] = Value::String(value.clone());
        }
    }
    if media.voice == Some(true) {
        out["voice"] = Value::Bool(true);
    }
    if media.animated == Some(true) {
        out["animated"] = Value::Bool(true);
    }
    out
}

/// Normalises one entry of Meta's `statuses` array; `None` for statuses that are not a
/// delivery receipt (`deleted`, `warning`, ones added later).
pub fn status(s: &Status) -> Option<StatusUpdate> {
    let status = match s.status.as_str() {
        "sent" => MessageStatus::Sent,
        "delivered" => MessageStatus::Delivered,
        "read" => MessageStatus::Read,
        "failed" => MessageStatus::Failed,
        _ => return None,
    };
    let error = (status == MessageStatus::Failed).then(|| match s.errors.first() {
        Some(e) => ack_error(e.code, e.title.as_deref(), e.message.as_deref()),
        None => ack_error(0, None, None),
    });
    Some(StatusUpdate {
        wamid: s.id.clone(),
        status,
        error,
        at: s.timestamp.map(|t| t * 1000),
    })
}

#[cfg(test)]
#[path = "normalise_tests.rs"]
mod tests;

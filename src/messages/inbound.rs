//! A customer's message into an instance: the sandbox's `POST /v1/sandbox/inbound` body,
//! validated into an [`InboundMessage`]: text, media (image, video, audio, document,
//! sticker), button, list, location, contacts, reaction, and `reply_to` for a quoted reply,
//! into a body and the type-specific `detail` fields that the event and the history carry.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Invalid, check_text, parse_media_url};
use crate::phone::PhoneNumber;

/// The request body, as the client sends it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InboundRequest {
    /// The customer's number.
    pub from: String,
    /// `text`, `image`, `video`, `audio`, `document`, `sticker` or `button`.
    #[serde(rename = "type", default = "text_type")]
    pub kind: String,
    /// The text, or the title of the button the customer pressed.
    #[serde(default)]
    pub body: Option<String>,
    /// For media types: where the file is.
    #[serde(default)]
    pub media_url: Option<String>,
    /// For media types: the caption.
    #[serde(default)]
    pub caption: Option<String>,
    /// For `button`: the id of the pressed button.
    #[serde(default)]
    pub button_id: Option<String>,
    /// The customer's profile name.
    #[serde(default)]
    pub name: Option<String>,
    /// For `location`: `{latitude, longitude, name?, address?}`.
    #[serde(default)]
    pub location: Option<Location>,
    /// For `contacts`: the shared contact cards, `[{name, phone}]`.
    #[serde(default)]
    pub contacts: Option<Vec<Contact>>,
    /// For `reaction`: the message reacted to (the emoji goes in `body`).
    #[serde(default)]
    pub reaction_to: Option<String>,
    /// When the customer wrote, unix seconds (default: now). Back-dates the message, e.g. to
    /// try the 24-hour customer-service window: at most 30 days back, not in the future.
    #[serde(default)]
    pub timestamp: Option<i64>,
    /// A quoted reply: the id of the message the customer replied to.
    #[serde(default)]
    pub reply_to: Option<String>,
}

/// A shared location.
#[derive(Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// Degrees, −90 to 90.
    pub latitude: f64,
    /// Degrees, −180 to 180.
    pub longitude: f64,
    /// The place's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// A shared contact card.
#[derive(Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    /// The contact's name.
    pub name: String,
    /// Their number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

fn text_type() -> String {
    "text".to_string()
}

/// A validated inbound message.
#[derive(Clone, Debug)]
pub struct InboundMessage {
    /// The customer.
    pub from: PhoneNumber,
    /// The message type, as published.
    pub kind: String,
    /// Text, caption or button title (empty where nothing fits).
    pub body: String,
    /// Type-specific optional fields of the `message` event (`media`, `button`, `name`).
    pub detail: Map<String, Value>,
}

const MEDIA_TYPES: [&str; 5] = ["image", "video", "audio", "document", "sticker"];

impl InboundRequest {
    /// Validates the request.
    pub fn validate(self) -> Result<InboundMessage, Invalid> {
        let from =
            PhoneNumber::parse(&self.from).map_err(|e| Invalid::new("invalid_phone_number", format!("`from`: {e}")))?;
        let mut detail = Map::new();
        if let Some(name) = self.name.filter(|n| !n.trim().is_empty()) {
            check_text("name", &name, 256)?;
            detail.insert("name".into(), Value::String(name));
        }
        if let Some(quoted) = self.reply_to.filter(|q| !q.is_empty()) {
            check_text("reply_to", &quoted, 256)?;
            detail.insert("context".into(), json!({"message_id": quoted}));
        }
        let body = match self.kind.as_str() {
            "text" => {
                let body = self.body.unwrap_or_default();
                if body.trim().is_empty() {
                    return Err(Invalid::new("missing_body", "a text message needs a non-empty `body`"));
                }
                check_text("body", &body, 4096)?;
                body
            }
            kind if MEDIA_TYPES.contains(&kind) => {
                let url = self
                    .media_url
                    .ok_or_else(|| Invalid::new("missing_media_url", format!("a {kind} message needs `media_url`")))?;
                let url = parse_media_url("media_url", &url)?;
                let caption = self.caption.or(self.body).unwrap_or_default();
                check_text("caption", &caption, 1024)?;
                let mut media = Map::new();
                media.insert("url".into(), Value::String(url));
                if !caption.is_empty() {
                    media.insert("caption".into(), Value::String(caption.clone()));
                }
                detail.insert("media".into(), Value::Object(media));
                caption
            }
            "location" => {
                let location = self.location.ok_or_else(|| {
                    Invalid::new(
                        "missing_location",
                        "a location message needs `location` {latitude, longitude}",
                    )
                })?;
                if !(-90.0..=90.0).contains(&location.latitude) || !(-180.0..=180.0).contains(&location.longitude) {
                    return Err(Invalid::new(
                        "invalid_location",
                        "`latitude` must be within ±90 and `longitude` within ±180",
                    ));
                }
                let body = location.name.clone().unwrap_or_default();
                check_text("location.name", &body, 1024)?;
                detail.insert("location".into(), json!(location));
                body
            }
            "contacts" => {
                let contacts = self.contacts.filter(|c| !c.is_empty()).ok_or_else(|| {
                    Invalid::new(
                        "missing_contacts",
                        "a contacts message needs `contacts` [{name, phone}]",
                    )
                })?;
                if contacts.len() > 20 {
                    return Err(Invalid::new("invalid_contacts", "at most 20 contacts"));
                }
                let body = contacts[0].name.clone();
                check_text("contacts[].name", &body, 256)?;
                detail.insert("contacts".into(), json!(contacts));
                body
            }
            "reaction" => {
                let emoji = self.body.unwrap_or_default();
                let target = self.reaction_to.filter(|t| !t.is_empty()).ok_or_else(|| {
                    Invalid::new(
                        "missing_reaction_to",
                        "a reaction needs `reaction_to`, the message id reacted to",
                    )
                })?;
                check_text("body", &emoji, 16)?;
                check_text("reaction_to", &target, 256)?;
                detail.insert("reaction".into(), json!({"message_id": target, "emoji": emoji}));
                emoji
            }
            "list" => {
                let title = self.body.unwrap_or_default();
                if title.trim().is_empty() {
                    return Err(Invalid::new(
                        "missing_body",
                        "a list reply needs `body`, the title of the chosen row",
                    ));
                }
                check_text("body", &title, 256)?;
                let id = self.button_id.unwrap_or_else(|| title.clone());
                detail.insert("list".into(), json!({"id": id, "title": title}));
                title
            }
            "button" => {
                let title = self.body.unwrap_or_default();
                if title.trim().is_empty() {
                    return Err(Invalid::new(
                        "missing_body",
                        "a button reply needs `body`, the title of the pressed button",
                    ));
                }
                check_text("body", &title, 256)?;
                let id = self.button_id.unwrap_or_else(|| title.clone());
                detail.insert("button".into(), json!({"id": id, "title": title}));
                title
            }
            other => {
                return Err(Invalid::new(
                    "unsupported_type",
                    format!(
                        "unsupported message type `{other}`; use text, image, video, audio, document, sticker, \
                         button, list, location, contacts or reaction"
                    ),
                ));
            }
        };
        Ok(InboundMessage {
            from,
            kind: self.kind,
            body,
            detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(kind: &str) -> InboundRequest {
        InboundRequest {
            from: "447123456789".into(),
            kind: kind.into(),
            body: None,
            media_url: None,
            caption: None,
            button_id: None,
            name: None,
            location: None,
            contacts: None,
            reaction_to: None,
            reply_to: None,
            timestamp: None,
        }
    }

    #[test]
    fn image_body_is_the_caption() {
        let mut r = request("image");
        r.media_url = Some("https://example.com/a.jpg".into());
        r.caption = Some("my parcel".into());
        let m = r.validate().unwrap();
        assert_eq!(m.body, "my parcel");
        assert_eq!(m.detail["media"]["url"], "https://example.com/a.jpg");
    }

    #[test]
    fn image_without_caption_has_empty_body() {
        let mut r = request("image");
        r.media_url = Some("https://example.com/a.jpg".into());
        assert_eq!(r.validate().unwrap().body, "");
    }

    #[test]
    fn locations_contacts_reactions_and_lists_carry_their_details() {
        let mut r = request("location");
        r.location = Some(Location {
            latitude: 51.5,
            longitude: -0.12,
            name: Some("Shop".into()),
            address: None,
        });
        let m = r.validate().unwrap();
        assert_eq!(m.body, "Shop");
        assert_eq!(m.detail["location"]["latitude"], 51.5);
        let mut r = request("reaction");
        r.body = Some("👍".into());
        r.reaction_to = Some("wamid.X".into());
        assert_eq!(r.validate().unwrap().detail["reaction"]["message_id"], "wamid.X");
        let mut r = request("list");
        r.body = Some("Express".into());
        r.button_id = Some("ship_express".into());
        r.reply_to = Some("wamid.Q".into());
        let m = r.validate().unwrap();
        assert_eq!(m.detail["list"]["id"], "ship_express");
        assert_eq!(m.detail["context"]["message_id"], "wamid.Q");
        let mut r = request("location");
        r.location = Some(Location {
            latitude: 91.0,
            longitude: 0.0,
            name: None,
            address: None,
        });
        assert_eq!(r.validate().unwrap_err().code, "invalid_location");
        assert_eq!(request("contacts").validate().unwrap_err().code, "missing_contacts");
    }

    #[test]
    fn unknown_types_and_missing_fields_are_refused() {
        assert_eq!(request("hologram").validate().unwrap_err().code, "unsupported_type");
        assert_eq!(request("text").validate().unwrap_err().code, "missing_body");
        assert_eq!(request("image").validate().unwrap_err().code, "missing_media_url");
    }
}

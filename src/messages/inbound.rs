//! A customer's message into an instance: the sandbox's `POST /v1/sandbox/inbound` body,
//! validated into an [`InboundMessage`].

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Invalid, check_text, parse_media_url};
use crate::phone::PhoneNumber;

/// The request body, as the client sends it.
#[derive(Debug, Deserialize)]
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
                        "unsupported message type `{other}`; use text, image, video, audio, document, sticker or button"
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
    fn unknown_types_and_missing_fields_are_refused() {
        assert_eq!(request("hologram").validate().unwrap_err().code, "unsupported_type");
        assert_eq!(request("text").validate().unwrap_err().code, "missing_body");
        assert_eq!(request("image").validate().unwrap_err().code, "missing_media_url");
    }
}

//! A business's reply: the `POST /v1/messages` body, validated into an [`OutboundMessage`]
//! (text, image, reply buttons or template).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{Invalid, check_text, parse_media_url};
use crate::phone::PhoneNumber;

/// One reply button.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Button {
    /// What the webhook reports when the customer presses it (defaults to the title).
    #[serde(default)]
    pub id: Option<String>,
    /// The label, at most 20 characters (WhatsApp's limit).
    pub title: String,
}

/// A template to send, by name.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateRef {
    /// The approved template's name.
    pub name: String,
    /// Its language code.
    #[serde(default = "default_language")]
    pub language: String,
    /// Body parameters, in order.
    #[serde(default)]
    pub params: Vec<String>,
}

fn default_language() -> String {
    "en_US".to_string()
}

/// The request body, as the client sends it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The customer's number.
    pub to: String,
    /// `text` (default), `image`, `buttons` or `template`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// The text; for `buttons` the text above the buttons.
    #[serde(default)]
    pub body: Option<String>,
    /// For `image`: where the picture is.
    #[serde(default)]
    pub media_url: Option<String>,
    /// For `image`, instead of `media_url`: a file uploaded with `POST /v1/media`.
    #[serde(default)]
    pub media_id: Option<String>,
    /// For `image`: its caption.
    #[serde(default)]
    pub caption: Option<String>,
    /// For `buttons`: one to three reply buttons.
    #[serde(default)]
    pub buttons: Option<Vec<Button>>,
    /// For `template`.
    #[serde(default)]
    pub template: Option<TemplateRef>,
}

/// A validated outbound message.
#[derive(Clone, Debug)]
pub struct OutboundMessage {
    /// The customer.
    pub to: PhoneNumber,
    /// `text`, `image`, `buttons` or `template`.
    pub kind: String,
    /// Text, caption or template name.
    pub body: String,
    /// Type-specific detail kept in history (`media`, `buttons`, `template`).
    pub detail: Map<String, Value>,
}

impl SendRequest {
    /// Validates the request.
    pub fn validate(self) -> Result<OutboundMessage, Invalid> {
        let to =
            PhoneNumber::parse(&self.to).map_err(|e| Invalid::new("invalid_phone_number", format!("`to`: {e}")))?;
        let kind = self.kind.unwrap_or_else(|| {
            if self.media_url.is_some() || self.media_id.is_some() {
                "image"
            } else {
                "text"
            }
            .to_string()
        });
        let mut detail = Map::new();
        let body = match kind.as_str() {
            "text" => {
                let body = self.body.unwrap_or_default();
                if body.trim().is_empty() {
                    return Err(Invalid::new("missing_body", "a text message needs a non-empty `body`"));
                }
                check_text("body", &body, 4096)?;
                body
            }
            "image" => {
                let caption = self.caption.or(self.body).unwrap_or_default();
                check_text("caption", &caption, 1024)?;
                let media = match (self.media_url, self.media_id) {
                    (Some(url), None) => json!({"url": parse_media_url("media_url", &url)?, "caption": caption}),
                    (None, Some(id))
                        if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric()) =>
                    {
                        json!({"id": id, "caption": caption})
                    }
                    (None, Some(_)) => {
                        return Err(Invalid::new(
                            "invalid_media_id",
                            "`media_id` is an id from POST /v1/media",
                        ));
                    }
                    _ => {
                        return Err(Invalid::new(
                            "missing_media_url",
                            "an image message needs `media_url` or `media_id` (one of them)",
                        ));
                    }
                };
                detail.insert("media".into(), media);
                caption
            }
            "buttons" | "interactive" => {
                let body = self.body.unwrap_or_default();
                if body.trim().is_empty() {
                    return Err(Invalid::new(
                        "missing_body",
                        "a buttons message needs `body`, the text above the buttons",
                    ));
                }
                check_text("body", &body, 1024)?;
                let buttons = self.buttons.unwrap_or_default();
                if buttons.is_empty() || buttons.len() > 3 {
                    return Err(Invalid::new(
                        "invalid_buttons",
                        "`buttons` must hold one to three buttons",
                    ));
                }
                let mut list = Vec::with_capacity(buttons.len());
                for (i, b) in buttons.into_iter().enumerate() {
                    let title = b.title.trim().to_string();
                    if title.is_empty() || title.chars().count() > 20 {
                        return Err(Invalid::new(
                            "invalid_buttons",
                            format!("button {} needs a title of 1 to 20 characters", i + 1),
                        ));
                    }
                    let id = b.id.filter(|id| !id.is_empty()).unwrap_or_else(|| title.clone());
                    check_text("buttons[].id", &id, 256)?;
                    list.push(json!({"id": id, "title": title}));
                }
                detail.insert("buttons".into(), Value::Array(list));
                return Ok(OutboundMessage {
                    to,
                    kind: "buttons".into(),
                    body,
                    detail,
                });
            }
            "template" => {
                let template = self.template.ok_or_else(|| {
                    Invalid::new(
                        "missing_template",
                        "a template message needs `template` {name, language, params}",
                    )
                })?;
                if template.name.trim().is_empty() {
                    return Err(Invalid::new("missing_template", "`template.name` must not be empty"));
                }
                let name = template.name.clone();
                detail.insert(
                    "template".into(),
                    serde_json::to_value(&template).unwrap_or(Value::Null),
                );
                name
            }
            other => {
                return Err(Invalid::new(
                    "unsupported_type",
                    format!("unsupported message type `{other}`; use text, image, buttons or template"),
                ));
            }
        };
        Ok(OutboundMessage { to, kind, body, detail })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(json: serde_json::Value) -> Result<OutboundMessage, Invalid> {
        serde_json::from_value::<SendRequest>(json).unwrap().validate()
    }

    #[test]
    fn buttons_are_limited_to_three_short_titles() {
        let ok = send(json!({"to":"447123456789","type":"buttons","body":"Pick","buttons":[{"title":"A"},{"id":"b","title":"B"}]})).unwrap();
        assert_eq!(ok.detail["buttons"][0]["id"], "A");
        let four = json!({"to":"447123456789","type":"buttons","body":"Pick","buttons":[{"title":"A"},{"title":"B"},{"title":"C"},{"title":"D"}]});
        assert_eq!(send(four).unwrap_err().code, "invalid_buttons");
        let long = json!({"to":"447123456789","type":"buttons","body":"Pick","buttons":[{"title":"a title that is far too long"}]});
        assert_eq!(send(long).unwrap_err().code, "invalid_buttons");
    }

    #[test]
    fn type_defaults_from_the_fields() {
        assert_eq!(send(json!({"to":"447123456789","body":"hi"})).unwrap().kind, "text");
        assert_eq!(
            send(json!({"to":"447123456789","media_url":"https://x.test/a.png"}))
                .unwrap()
                .kind,
            "image"
        );
    }
}

//! The webhooks Meta sends for a WhatsApp Business Account, as documented for the Cloud
//! API: `entry[].changes[].value` with `metadata`, `contacts`, `messages` and `statuses`.
//!
//! Parsing is lenient where Meta may grow (unknown fields are ignored, every type-specific
//! object is optional) and strict only where botlinkd cannot go on without a value (a
//! message's `id`, `from` and `type`).

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// The whole webhook body.
#[derive(Debug, Deserialize)]
pub struct Notification {
    /// `whatsapp_business_account`.
    #[serde(default)]
    pub object: String,
    /// One entry per business account.
    #[serde(default)]
    pub entry: Vec<Entry>,
}

/// One business account's changes.
#[derive(Debug, Deserialize)]
pub struct Entry {
    /// The business account id.
    #[serde(default)]
    pub id: String,
    /// The changes, each for one field.
    #[serde(default)]
    pub changes: Vec<Change>,
}

/// One change; botlinkd reads the `messages` field. Its value is kept as JSON until then,
/// so a field botlinkd does not read can have any shape.
#[derive(Debug, Deserialize)]
pub struct Change {
    /// `messages` for messages and statuses.
    #[serde(default)]
    pub field: String,
    /// The content.
    #[serde(default)]
    pub value: Value,
}

impl Change {
    /// The messages and statuses of a `messages` change; `None` for other fields, `Err` for
    /// a `messages` value that cannot be read.
    pub fn messages(&self) -> Option<Result<ChangeValue, serde_json::Error>> {
        (self.field == "messages").then(|| ChangeValue::deserialize(&self.value))
    }
}

/// The messages and statuses of one business number.
#[derive(Debug, Deserialize)]
pub struct ChangeValue {
    /// Which number they are for.
    pub metadata: Option<Metadata>,
    /// The customers' profiles.
    #[serde(default)]
    pub contacts: Vec<Profile>,
    /// Customers' messages, kept as JSON so that types Meta adds later can still be passed on.
    #[serde(default)]
    pub messages: Vec<Value>,
    /// Status changes of messages the business sent.
    #[serde(default)]
    pub statuses: Vec<Status>,
    /// Errors about the account or webhook itself.
    #[serde(default)]
    pub errors: Vec<MetaError>,
}

/// The business number a change is for.
#[derive(Debug, Deserialize)]
pub struct Metadata {
    /// The number as shown.
    #[serde(default)]
    pub display_phone_number: String,
    /// The Cloud API's id of the number: how botlinkd finds the instance.
    pub phone_number_id: String,
}

/// A customer's profile.
#[derive(Debug, Deserialize)]
pub struct Profile {
    /// Their WhatsApp id (their number).
    #[serde(default)]
    pub wa_id: String,
    /// Their profile.
    pub profile: Option<ProfileName>,
}

/// A profile's name.
#[derive(Debug, Deserialize)]
pub struct ProfileName {
    /// The name the customer set.
    #[serde(default)]
    pub name: String,
}

/// One message from a customer.
#[derive(Debug, Deserialize)]
pub struct Message {
    /// The customer's number.
    pub from: String,
    /// Meta's `wamid.…`.
    pub id: String,
    /// Unix seconds, sent as a string.
    #[serde(default, deserialize_with = "lenient_seconds")]
    pub timestamp: Option<i64>,
    /// The type.
    #[serde(rename = "type")]
    pub kind: String,
    /// A quoted reply or a forward.
    pub context: Option<Context>,
    /// For `text`.
    pub text: Option<Text>,
    /// For `image`.
    pub image: Option<Media>,
    /// For `video`.
    pub video: Option<Media>,
    /// For `audio` (voice notes too).
    pub audio: Option<Media>,
    /// For `document`.
    pub document: Option<Media>,
    /// For `sticker`.
    pub sticker: Option<Media>,
    /// For `location`.
    pub location: Option<Location>,
    /// For `contacts`.
    pub contacts: Option<Vec<ContactCard>>,
    /// For `reaction`.
    pub reaction: Option<Reaction>,
    /// For `interactive` (reply buttons and lists).
    pub interactive: Option<Interactive>,
    /// For `button` (a template's quick-reply button).
    pub button: Option<TemplateButton>,
    /// For `unsupported`: why Meta could not pass the message on.
    pub errors: Option<Vec<MetaError>>,
}

/// What a message quotes or was forwarded from.
#[derive(Debug, Deserialize)]
pub struct Context {
    /// The sender of the quoted message.
    pub from: Option<String>,
    /// The quoted message's id.
    pub id: Option<String>,
    /// Forwarded.
    #[serde(default)]
    pub forwarded: bool,
    /// Forwarded many times.
    #[serde(default)]
    pub frequently_forwarded: bool,
}

/// A text.
#[derive(Debug, Deserialize)]
pub struct Text {
    /// The text.
    #[serde(default)]
    pub body: String,
}

/// A media attachment, fetched later through the Graph API by its id.
#[derive(Debug, Deserialize)]
pub struct Media {
    /// The media id.
    pub id: String,
    /// Its MIME type.
    pub mime_type: Option<String>,
    /// Its SHA-256.
    pub sha256: Option<String>,
    /// The caption (image, video, document).
    pub caption: Option<String>,
    /// The file name (document).
    pub filename: Option<String>,
    /// A voice note (audio).
    pub voice: Option<bool>,
    /// An animated sticker.
    pub animated: Option<bool>,
}

/// A shared location.
#[derive(Debug, Deserialize)]
pub struct Location {
    /// Degrees.
    pub latitude: f64,
    /// Degrees.
    pub longitude: f64,
    /// The place's name.
    pub name: Option<String>,
    /// Its address.
    pub address: Option<String>,
    /// A link to it.
    pub url: Option<String>,
}

/// A shared contact card.
#[derive(Debug, Deserialize)]
pub struct ContactCard {
    /// The name parts.
    pub name: Option<ContactName>,
    /// The numbers.
    #[serde(default)]
    pub phones: Vec<ContactPhone>,
}

/// A contact card's name.
#[derive(Debug, Deserialize)]
pub struct ContactName {
    /// The whole name.
    pub formatted_name: Option<String>,
    /// The first name.
    pub first_name: Option<String>,
}

/// A contact card's number.
#[derive(Debug, Deserialize)]
pub struct ContactPhone {
    /// The number as written.
    pub phone: Option<String>,
    /// Its WhatsApp id, when it has one.
    pub wa_id: Option<String>,
}

/// A reaction to a message.
#[derive(Debug, Deserialize)]
pub struct Reaction {
    /// The message reacted to.
    pub message_id: String,
    /// The emoji; missing or empty when a reaction is taken back.
    pub emoji: Option<String>,
}

/// An answer to an interactive message.
#[derive(Debug, Deserialize)]
pub struct Interactive {
    /// `button_reply`, `list_reply`, or a type added later.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The pressed reply button.
    pub button_reply: Option<Reply>,
    /// The chosen list row.
    pub list_reply: Option<Reply>,
}

/// A reply button or list row.
#[derive(Debug, Deserialize)]
pub struct Reply {
    /// The id the business gave it.
    #[serde(default)]
    pub id: String,
    /// Its title.
    #[serde(default)]
    pub title: String,
    /// A list row's description.
    pub description: Option<String>,
}

/// A template's quick-reply button, pressed.
#[derive(Debug, Deserialize)]
pub struct TemplateButton {
    /// The payload the template defined.
    pub payload: Option<String>,
    /// The button's text.
    #[serde(default)]
    pub text: String,
}

/// A status change of a message the business sent.
#[derive(Debug, Deserialize)]
pub struct Status {
    /// The message's `wamid.…` (as Meta's send answer gave it).
    pub id: String,
    /// `sent`, `delivered`, `read`, `failed` (or a status added later).
    pub status: String,
    /// Unix seconds, sent as a string.
    #[serde(default, deserialize_with = "lenient_seconds")]
    pub timestamp: Option<i64>,
    /// The customer.
    pub recipient_id: Option<String>,
    /// For `failed`: why.
    #[serde(default)]
    pub errors: Vec<MetaError>,
}

/// An error as Meta reports it in webhooks.
#[derive(Clone, Debug, Deserialize)]
pub struct MetaError {
    /// Meta's numeric code (131047, 130429, …).
    #[serde(default)]
    pub code: i64,
    /// A short title.
    pub title: Option<String>,
    /// A longer message.
    pub message: Option<String>,
}

/// Unix seconds sent as `"1678900000"` or `1678900000`; anything else is `None`.
fn lenient_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    })
}

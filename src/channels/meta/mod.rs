//! The `meta` channel: the WhatsApp Business Cloud API.
//!
//! - [`signature`] checks Meta's `X-Hub-Signature-256` on the webhooks it sends us;
//! - [`payload`] is the shape of those webhooks and [`normalise`] turns their messages and
//!   statuses into botlinkd's `message` and `ack` facts;
//! - [`intake`] is the use case behind `POST /meta/webhook`: verify, route by phone-number
//!   id, store (de-duplicated by wamid), answer;
//! - [`graph`] is the client of the Graph API (send, mark as read, media) and the
//!   classification of its errors;
//! - [`outbound`] builds the Graph request for a business's message, and [`sender`] is the
//!   worker that sends queued messages with retries and the number's pace;
//! - [`templates`] syncs the WhatsApp Business Account's message templates;
//! - [`media`] downloads and keeps customers' media when their messages arrive.
//!
//! An instance on this channel has [`MetaSettings`] (the Phone number ID and three
//! `Secret`s: access token, app secret, verify token), checked by `MetaSettings::new` (a
//! numeric id; secrets of 1 to 1024 printable characters), stored as JSON in `instances.meta`
//! (`to_stored` / `from_stored`) and shown as `MetaSettingsView` (the id and hints). The Phone
//! number ID is stored again in `meta_phone_number_id`, which is unique, so one number belongs
//! to one instance. Everything above the channel (events, deliveries, history, the feed, the
//! portal) is the sandbox's; only the way messages come in and go out differs.
//!
//! **In:** `POST /meta/webhook` feeds Meta's messages and statuses into the same use cases as
//! the sandbox ([`intake`]). **Out:** `App::send` stores the message `accepted` with a
//! `channel_sends` row holding the Graph request, and [`sender`] posts it and records what
//! came of it through `App::change_status`. Each way keeps at-least-once: intake answers only
//! after its commits, the worker deletes a row only after Meta's answer is recorded.
//!
//! **Attention.** `instances.attention` is `null` or a sentence for the operator. It is set
//! only by the send worker when Meta refuses the token or the number, and cleared by every
//! channel switch (`set_channel`, from `PUT /v1/instance/channel` or
//! `botlinkd instance set-channel`). While it is set, both send routes answer 409
//! `channel_needs_attention`; intake goes on.

pub mod graph;
pub mod intake;
pub mod media;
pub mod normalise;
pub mod outbound;
pub mod payload;
pub mod sender;
pub mod signature;
pub mod templates;

pub use crate::instances::meta_settings::{MetaSettings, MetaSettingsView};

/// The wait before the next try of something Meta refused for now: `base` doubled per earlier
/// failure, at most `max` (the send worker and the media keeper both back off this way).
pub fn backoff(base: std::time::Duration, failures: u32, max: std::time::Duration) -> std::time::Duration {
    base.saturating_mul(2u32.saturating_pow(failures.min(16))).min(max)
}

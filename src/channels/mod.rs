//! Channels: where an instance's messages really come from and go to.
//!
//! The `sandbox` channel is built in ([`crate::sandbox`]); the `meta` channel speaks the
//! WhatsApp Business Cloud API ([`meta`]). Everything above a channel (events, delivery,
//! history, the portal) is the same for both.

pub mod meta;

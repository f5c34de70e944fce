//! WhatsApp's customer-service window: a business may send free-form messages (text, images,
//! buttons) to a customer only within 24 hours of the customer's last message; outside it,
//! only an approved template reaches them, and Meta refuses anything else (error 131047).
//!
//! botlinkd keeps each conversation's `last_inbound_at` (the customer's own time for their
//! message: Meta's `timestamp`, or the sandbox's back-dated `timestamp`) and refuses a
//! free-form send outside the window before anything is queued, on both channels. A send
//! accepted inside the window can still fail later on `meta` (the window may close while it
//! waits in the queue); that arrives as `ack.failed` with Meta's 131047 as before.

use crate::clock::Millis;

/// How long the window stays open after the customer's last message.
pub const WINDOW_MS: Millis = 24 * 3600 * 1000;

/// When the window closes (closed), given the customer's last message; `None` if the
/// customer never wrote.
pub fn expires_at(last_inbound_at: Option<Millis>) -> Option<Millis> {
    last_inbound_at.map(|at| at + WINDOW_MS)
}

/// Whether a message of this kind needs the window open: everything but a template.
pub fn needs_window(kind: &str) -> bool {
    kind != "template"
}

/// Why a free-form send is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The customer has never written to this number.
    NeverOpened,
    /// The window closed at this time.
    Since(Millis),
}

/// Checks a send of `kind` at `now` against the conversation's window.
pub fn check(kind: &str, last_inbound_at: Option<Millis>, now: Millis) -> Result<(), Closed> {
    if !needs_window(kind) {
        return Ok(());
    }
    match expires_at(last_inbound_at) {
        None => Err(Closed::NeverOpened),
        Some(closes) if closes <= now => Err(Closed::Since(closes)),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_form_needs_a_message_from_the_last_24_hours_and_templates_always_pass() {
        let wrote = 1_000_000;
        assert_eq!(check("text", Some(wrote), wrote + WINDOW_MS - 1), Ok(()));
        assert_eq!(
            check("image", Some(wrote), wrote + WINDOW_MS),
            Err(Closed::Since(wrote + WINDOW_MS))
        );
        assert_eq!(check("buttons", None, wrote), Err(Closed::NeverOpened));
        assert_eq!(check("template", None, wrote), Ok(()));
        assert_eq!(check("template", Some(0), wrote + WINDOW_MS * 3), Ok(()));
        assert_eq!(expires_at(None), None);
    }
}

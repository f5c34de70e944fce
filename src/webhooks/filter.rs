//! The set of event kinds an endpoint receives.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::events::EventKind;

/// A set of [`EventKind`]s, stored as a bit set.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EventFilter(u8);

/// An unknown event name in a filter.
#[derive(Debug, thiserror::Error)]
#[error("unknown event `{0}`; use message, ack.sent, ack.delivered, ack.read or ack.failed")]
pub struct UnknownEvent(pub String);

impl EventFilter {
    /// Every subscribable event (the default).
    pub fn all() -> Self {
        Self(EventKind::SUBSCRIBABLE.iter().fold(0, |acc, k| acc | k.bit()))
    }

    /// Parses names like `["message", "ack.read"]`; `ack` stands for every ack.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, UnknownEvent> {
        let mut bits = 0;
        for name in names {
            let name = name.as_ref().trim();
            if name == "ack" || name == "ack.*" {
                bits |= EventKind::AckSent.bit()
                    | EventKind::AckDelivered.bit()
                    | EventKind::AckRead.bit()
                    | EventKind::AckFailed.bit();
                continue;
            }
            match EventKind::parse(name) {
                Some(kind) if kind != EventKind::Test => bits |= kind.bit(),
                _ => return Err(UnknownEvent(name.to_string())),
            }
        }
        Ok(Self(bits))
    }

    /// Whether an event of this kind goes to the endpoint.
    pub fn accepts(self, kind: EventKind) -> bool {
        kind == EventKind::Test || self.0 & kind.bit() != 0
    }

    /// The stored form.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// From the stored form.
    pub fn from_bits(bits: u8) -> Self {
        Self(bits & Self::all().0)
    }

    /// The names, in the canonical order.
    pub fn names(self) -> Vec<&'static str> {
        EventKind::SUBSCRIBABLE
            .iter()
            .filter(|k| self.accepts(**k))
            .map(|k| k.as_str())
            .collect()
    }
}

impl fmt::Debug for EventFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Serialize for EventFilter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.names().serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_round_trip_and_match() {
        let f = EventFilter::parse(&["message", "ack.read"]).unwrap();
        assert!(f.accepts(EventKind::Message));
        assert!(f.accepts(EventKind::AckRead));
        assert!(!f.accepts(EventKind::AckSent));
        assert_eq!(EventFilter::from_bits(f.bits()), f);
        assert_eq!(f.names(), vec!["message", "ack.read"]);
        assert!(EventFilter::parse(&["nope"]).is_err());
        assert_eq!(EventFilter::parse(&["ack"]).unwrap().names().len(), 4);
    }
}

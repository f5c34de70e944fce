//! Secrets botlinkd must keep usable (a Meta access token is sent to Meta, an app secret
//! checks Meta's signatures) but must never show: `Debug` prints `Secret(***)`, there is no
//! `Serialize`, and comparisons ([`Secret::matches`]) run in constant time. All the API ever
//! shows of one is [`Secret::hint`]: the last four characters of a secret of 16 or more, `…`
//! otherwise.
//!
//! Meta's secrets are kept as given, in `instances.meta`. Auth Keys only need comparing and
//! are stored hashed, but the access token must be presented to Meta and the app secret is an
//! HMAC key (the verify token is stored the same way, to keep one form). The database, its
//! backups and the PostgreSQL credentials are therefore what protects them. Apart from being
//! stored, only the token leaves the process, towards Meta as a Bearer header; the app secret
//! and the verify token are only checked against what Meta sends.

use std::fmt;

use subtle::ConstantTimeEq;

/// A secret string.
#[derive(Clone)]
pub struct Secret(String);

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.matches(&other.0)
    }
}

impl Eq for Secret {}

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the few places that must use it (an `Authorization` header,
    /// an HMAC key, the stored form).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` equals the secret, compared in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }

    /// Enough of the secret for a person to tell which one is set: its last four
    /// characters, and only when it is long enough that they give nothing away.
    pub fn hint(&self) -> String {
        let chars: Vec<char> = self.0.chars().collect();
        if chars.len() < 16 {
            return "…".to_string();
        }
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("…{tail}")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn secrets_never_print_and_hint_only_long_ones() {
        let token = Secret::new("EAAG-a-long-access-token-9f3k");
        assert_eq!(format!("{token:?}"), "Secret(***)");
        assert_eq!(token.hint(), "…9f3k");
        assert_eq!(Secret::new("short").hint(), "…");
        assert!(token.matches("EAAG-a-long-access-token-9f3k"));
        assert!(!token.matches("EAAG-a-long-access-token-9f3x"));
    }
}

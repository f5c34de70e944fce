//! Standard Webhooks signing: `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{ts}.{body}")>`
//! where the key is the base64-decoded part of the `whsec_…` secret. [`SigningSecret`]
//! prints as `SigningSecret(***)`.
//!
//! **Two signatures during a rotation, for a day.** Standard Webhooks allows several
//! space-separated signatures in `webhook-signature`, and its libraries accept a delivery when
//! any one matches. So after a rotation the previous secret signs too, for a grace period
//! (`grace_period_seconds`, a day by default, a week at most, `0` for a secret that leaked):
//! the new secret's signature, a space, and the old one's. The operator rotates first and
//! updates receivers afterwards, without a delivery failing verification in between. Only one
//! previous secret is kept, and whether it still signs is decided when a delivery is claimed
//! (`previous_secret_until > now`).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::{Serialize, Serializer};
use sha2::Sha256;

use crate::ids;

/// A `whsec_…` secret; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret {
    text: String,
    key: Vec<u8>,
}

/// A stored secret that is not `whsec_` + base64.
#[derive(Debug, thiserror::Error)]
#[error("a signing secret is `whsec_` followed by base64")]
pub struct MalformedSecret;

impl SigningSecret {
    /// A new random secret.
    pub fn generate() -> Self {
        Self::parse(&ids::webhook_secret()).expect("generated secrets are well formed")
    }

    /// Parses `whsec_<base64>`.
    pub fn parse(text: &str) -> Result<Self, MalformedSecret> {
        let encoded = text.strip_prefix("whsec_").ok_or(MalformedSecret)?;
        let key = STANDARD.decode(encoded).map_err(|_| MalformedSecret)?;
        if key.is_empty() {
            return Err(MalformedSecret);
        }
        Ok(Self {
            text: text.to_string(),
            key,
        })
    }

    /// The secret as the user sees it.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The `webhook-signature` header value for one attempt.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(***)")
    }
}

impl Serialize for SigningSecret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the Standard Webhooks specification's test vectors.
    #[test]
    fn matches_the_specification_example() {
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(format!("{secret:?}"), "SigningSecret(***)");
    }
}

//! `X-Hub-Signature-256`: Meta signs every webhook with HMAC-SHA256 of the raw body, keyed
//! with the app secret, sent as `sha256=<hex>`. Checked in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::Secret;

/// Why a signature header was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// No header came.
    #[error("the `X-Hub-Signature-256` header is missing")]
    Missing,
    /// The header is not `sha256=` followed by 64 hex digits.
    #[error("the `X-Hub-Signature-256` header is not `sha256=<hex>`")]
    Malformed,
    /// It is well formed but no known app secret made it.
    #[error("the `X-Hub-Signature-256` signature does not match the body")]
    Mismatch,
}

/// A parsed `X-Hub-Signature-256` header.
#[derive(Debug)]
pub struct HubSignature([u8; 32]);

impl HubSignature {
    /// Parses the header's value.
    pub fn parse(header: Option<&str>) -> Result<Self, SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let hex = header.trim().strip_prefix("sha256=").ok_or(SignatureError::Malformed)?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SignatureError::Malformed);
        }
        let mut digest = [0u8; 32];
        for (i, byte) in digest.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| SignatureError::Malformed)?;
        }
        Ok(Self(digest))
    }

    /// Whether `app_secret` signed `body` (constant time).
    pub fn signed_by(&self, app_secret: &Secret, body: &[u8]) -> bool {
        let mut mac = Hmac::<Sha256>::new_from_slice(app_secret.expose().as_bytes()).expect("HMAC takes any key");
        mac.update(body);
        mac.verify_slice(&self.0).is_ok()
    }
}

/// The header value `app_secret` gives `body` (for tests and the stand-in tools).
pub fn sign(app_secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"object":"whatsapp_business_account","entry":[]}"#;

    #[test]
    fn a_good_signature_verifies_and_any_change_fails() {
        let secret = Secret::new("app-secret");
        let header = sign("app-secret", BODY);
        let signature = HubSignature::parse(Some(&header)).unwrap();
        assert!(signature.signed_by(&secret, BODY));
        assert!(!signature.signed_by(&Secret::new("other-secret"), BODY));
        let mut altered = BODY.to_vec();
        altered[10] ^= 1;
        assert!(!signature.signed_by(&secret, &altered));
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert_eq!(HubSignature::parse(None).unwrap_err(), SignatureError::Missing);
        for bad in [
            "",
            "sha1=abcd",
            "sha256=",
            "sha256=zz",
            &format!("sha256={}", "g".repeat(64)),
        ] {
            assert_eq!(
                HubSignature::parse(Some(bad)).unwrap_err(),
                SignatureError::Malformed,
                "{bad}"
            );
        }
        // A multi-byte character must not panic the hex slicing.
        let tricky = format!("sha256={}éa", "a".repeat(61));
        assert!(HubSignature::parse(Some(&tricky)).is_err());
    }
}

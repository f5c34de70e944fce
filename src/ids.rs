//! Generation of public identifiers and credentials.
//!
//! Identifiers carry a prefix that says what they name (`evt_`, `ep_`, `wamid.`), so a value
//! pasted into a support ticket explains itself. All randomness comes from the OS-seeded
//! thread RNG, which is a CSPRNG.
//!
//! Every identifier botlinkd makes (events, endpoints, its own message ids) starts with the
//! time in milliseconds, so new rows land at the end of the indexes that find them by id
//! rather than on a random page. Keys and `whsec_…` secrets are random throughout.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore;

use crate::clock::Millis;

const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A sortable id: 10 characters of millisecond time, then 16 random ones (Crockford base32).
fn sortable(now: Millis) -> String {
    let mut out = String::with_capacity(26);
    let t = now.max(0) as u64;
    for i in (0..10).rev() {
        out.push(ALPHABET[((t >> (i * 5)) & 31) as usize] as char);
    }
    let mut random = [0u8; 10];
    rand::thread_rng().fill_bytes(&mut random);
    let r = u128::from_be_bytes({
        let mut b = [0u8; 16];
        b[6..].copy_from_slice(&random);
        b
    });
    for i in (0..16).rev() {
        out.push(ALPHABET[((r >> (i * 5)) & 31) as usize] as char);
    }
    out
}

/// A new event id; also the `webhook-id` header of every attempt of that event.
pub fn event_id(now: Millis) -> String {
    format!("evt_{}", sortable(now))
}

/// A new webhook endpoint id.
pub fn endpoint_id(now: Millis) -> String {
    format!("ep_{}", sortable(now))
}

/// A new WhatsApp-style message id. Like every id botlinkd makes it starts with the time, so
/// new ids land at the end of the index that finds messages by id (a random id would dirty a
/// random page of it on every insert).
pub fn message_id(now: Millis) -> String {
    format!("wamid.HBgL{}", sortable(now))
}

/// A new media id for a file uploaded to a sandbox instance: 16 random digits, shaped like
/// Meta's.
pub fn media_id() -> String {
    let mut bytes = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{:016}", u64::from_be_bytes(bytes) % 10_000_000_000_000_000)
}

/// A long random key (App Key or Auth Key): 32 random bytes, URL-safe base64.
pub fn api_key() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A new Standard Webhooks signing secret, `whsec_` followed by base64 of 24 random bytes.
pub fn webhook_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("whsec_{}", STANDARD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sortable_ids_sort_by_time() {
        let a = event_id(1_700_000_000_000);
        let b = event_id(1_700_000_000_001);
        assert!(a < b, "{a} should sort before {b}");
        assert_eq!(a.len(), "evt_".len() + 26);
    }

    #[test]
    fn message_ids_sort_by_time() {
        let a = message_id(1_700_000_000_000);
        let b = message_id(1_700_000_000_001);
        assert!(a < b, "{a} should sort before {b}");
        assert!(a.starts_with("wamid.HBgL"));
    }

    #[test]
    fn secrets_have_the_standard_webhooks_shape() {
        let s = webhook_secret();
        let raw = STANDARD.decode(s.strip_prefix("whsec_").unwrap()).unwrap();
        assert_eq!(raw.len(), 24);
    }
}

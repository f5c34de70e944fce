//! Instances: one business WhatsApp number each, with its channel and credentials.
//!
//! The App Key identifies an instance; the Auth Key proves it. Auth Keys are 32 random bytes,
//! so a single SHA-256 is enough to store them safely (there is no low-entropy password to
//! protect against guessing, which is what slow hashes are for); the hash ([`AuthKeyHash`])
//! is compared in constant time, and [`AuthKey`] prints as `AuthKey(***)`. App Keys are stored
//! in clear because they identify; signing secrets are stored in clear because signing needs
//! them, and the API shows them to the instance's owner.
//!
//! An [`Instance`] has a [`Channel`] (`sandbox` or `meta`, switched with a
//! [`ChannelChange`]), its `meta` settings (never serialised: they hold secrets), and
//! `attention`: `null`, or a sentence for the operator saying why the instance needs one (see
//! `channels::meta`).

pub mod meta_settings;

use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::clock::Millis;
use crate::ids;
use crate::phone::PhoneNumber;

pub use meta_settings::MetaSettings;

/// Where an instance's messages really come from and go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// The built-in simulator.
    Sandbox,
    /// The WhatsApp Business Cloud API.
    Meta,
}

impl Channel {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sandbox => "sandbox",
            Channel::Meta => "meta",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sandbox" => Some(Channel::Sandbox),
            "meta" => Some(Channel::Meta),
            _ => None,
        }
    }
}

/// An instance as stored (without its Auth Key, which is only ever stored hashed).
#[derive(Clone, Debug, Serialize)]
pub struct Instance {
    /// Numeric id, shown as a string (`"10922"`).
    #[serde(serialize_with = "serialize_id")]
    pub id: i64,
    /// A human name.
    pub name: String,
    /// The channel.
    pub channel: Channel,
    /// The business number (the `to` of inbound messages).
    pub phone_number: PhoneNumber,
    /// The public half of the credentials.
    pub app_key: String,
    /// Creation time.
    pub created_at: Millis,
    /// The Cloud API settings, for the `meta` channel (never serialised: secrets).
    #[serde(skip)]
    pub meta: Option<MetaSettings>,
    /// Why the instance needs an operator (an access token Meta refused), if it does.
    pub attention: Option<String>,
}

fn serialize_id<S: serde::Serializer>(id: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&id.to_string())
}

impl Instance {
    /// The id as it appears in payloads.
    pub fn id_string(&self) -> String {
        self.id.to_string()
    }
}

/// An Auth Key, whose `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey(String);

impl AuthKey {
    /// Wraps a key given by a client.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key itself, for the one place that prints it to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Its stored form.
    pub fn hash(&self) -> AuthKeyHash {
        AuthKeyHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthKey(***)")
    }
}

/// SHA-256 of an Auth Key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthKeyHash(pub [u8; 32]);

impl AuthKeyHash {
    /// Constant-time comparison with the hash of a presented key.
    pub fn matches(&self, presented: &AuthKey) -> bool {
        self.0.ct_eq(&presented.hash().0).into()
    }
}

/// A fresh App Key / Auth Key pair.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The public half.
    pub app_key: String,
    /// The secret half.
    pub auth_key: AuthKey,
}

impl Credentials {
    /// New random keys.
    pub fn generate() -> Self {
        Self {
            app_key: ids::api_key(),
            auth_key: AuthKey::new(ids::api_key()),
        }
    }
}

/// What creating an instance needs.
#[derive(Clone, Debug)]
pub struct NewInstance {
    /// A human name.
    pub name: String,
    /// The channel.
    pub channel: Channel,
    /// The business number.
    pub phone_number: PhoneNumber,
    /// Its credentials (only the hash of the Auth Key is stored).
    pub credentials: Credentials,
    /// The Cloud API settings, for the `meta` channel.
    pub meta: Option<MetaSettings>,
}

/// A switch of an instance's channel (settings included); clears any attention flag.
#[derive(Clone, Debug)]
pub struct ChannelChange {
    /// The channel.
    pub channel: Channel,
    /// The business number.
    pub phone_number: PhoneNumber,
    /// The Cloud API settings, for `meta` (and only for it).
    pub meta: Option<MetaSettings>,
}

/// A random sandbox business number in the fictional 1-555-01xx range.
pub fn sandbox_number() -> PhoneNumber {
    use rand::Rng;
    let n: u32 = rand::thread_rng().gen_range(0..10_000);
    PhoneNumber::parse(&format!("1555010{n:04}")).expect("valid sandbox number")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_keys_match_only_themselves() {
        let key = AuthKey::new("secret-one");
        let hash = key.hash();
        assert!(hash.matches(&AuthKey::new("secret-one")));
        assert!(!hash.matches(&AuthKey::new("secret-two")));
        assert_eq!(format!("{key:?}"), "AuthKey(***)");
    }
}

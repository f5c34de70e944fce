//! Webhook endpoints: where an instance's events go, which events, and how they are signed.
//!
//! - [`filter`]: the event filter an endpoint subscribes with.
//! - [`address`]: the SSRF guard, which decides which IP addresses webhooks may reach.
//! - [`target`]: endpoint URL parsing and the creation-time check of where it resolves.
//! - [`destination`]: what the URL's scheme chooses (HTTP, NATS, RabbitMQ, Redis), and
//!   the masking of broker passwords for display.
//! - [`signing`]: Standard Webhooks secrets and signatures.
//! - [`crate::store::health`]: when a failing endpoint is disabled on its own.
//!
//! An [`Endpoint`] also carries its health (`disabled_reason`, `failing_since`) and the
//! rotation's `previous_secret_until`.

pub mod address;
pub mod destination;
pub mod filter;
pub mod signing;
pub mod target;

use serde::Serialize;

use crate::clock::Millis;
pub use address::AddressPolicy;
pub use destination::{Destination, DestinationKind};
pub use filter::EventFilter;
pub use signing::SigningSecret;
pub use target::WebhookUrl;

/// A stored endpoint.
#[derive(Clone, Debug, Serialize)]
pub struct Endpoint {
    /// `ep_…`
    pub id: String,
    /// The owning instance.
    #[serde(skip)]
    pub instance_id: i64,
    /// Where events are posted.
    pub url: String,
    /// A note for humans.
    pub description: String,
    /// Which events it receives.
    pub events: EventFilter,
    /// Whether deliveries go out.
    pub enabled: bool,
    /// Why botlinkd disabled it on its own (410 Gone, or failing for too long).
    pub disabled_reason: Option<String>,
    /// When its current run of failed attempts began (`None` after a success).
    pub failing_since: Option<Millis>,
    /// The signing secret (`whsec_…`).
    pub secret: SigningSecret,
    /// Until when the secret before the last rotation still signs beside it.
    pub previous_secret_until: Option<Millis>,
    /// At most this many deliveries a second, if set.
    pub rate_limit: Option<u32>,
    /// Creation time, milliseconds.
    pub created_at: Millis,
    /// Last change, milliseconds.
    pub updated_at: Millis,
}

/// What creating an endpoint needs.
#[derive(Clone, Debug)]
pub struct NewEndpoint {
    /// The owning instance.
    pub instance_id: i64,
    /// Where events are posted.
    pub url: WebhookUrl,
    /// A note for humans.
    pub description: String,
    /// Which events it receives.
    pub events: EventFilter,
    /// Whether deliveries go out.
    pub enabled: bool,
    /// At most this many deliveries a second, if set.
    pub rate_limit: Option<u32>,
}

/// A change to an endpoint; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct EndpointChange {
    /// New URL.
    pub url: Option<WebhookUrl>,
    /// New description.
    pub description: Option<String>,
    /// New filter.
    pub events: Option<EventFilter>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// A new rate limit (`Some(None)` removes it).
    pub rate_limit: Option<Option<u32>>,
}

/// Property tests of what users give as an endpoint: whatever arrives, each parser answers
/// with a value or an error, never a panic, and an accepted URL is one the engine can send to
/// (1500 cases each; docs/RELIABILITY.md lists them).
#[cfg(test)]
mod hostile_input {
    use proptest::prelude::*;

    use super::{EventFilter, SigningSecret, WebhookUrl};

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

        #[test]
        fn endpoint_urls_have_a_known_scheme_and_a_host_or_are_refused(s in ".{0,60}", tail in "[a-z0-9./:@%?#=&\\[\\]-]{0,40}") {
            let inputs = ["http", "https", "nats", "amqp", "redis"].map(|scheme| format!("{scheme}://{tail}"));
            for input in std::iter::once(s.clone()).chain(inputs) {
                if let Ok(url) = WebhookUrl::parse(&input) {
                    prop_assert!(matches!(url.as_url().scheme(), "http" | "https" | "nats" | "amqp" | "redis"));
                    prop_assert!(url.as_url().host().is_some());
                }
            }
        }

        #[test]
        fn event_filters_and_secrets_never_panic(names in prop::collection::vec(".{0,12}", 0..6), s in ".{0,60}") {
            let _ = EventFilter::parse(&names);
            let _ = SigningSecret::parse(&s);
            let _ = SigningSecret::parse(&format!("whsec_{s}"));
        }
    }
}

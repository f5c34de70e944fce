//! Webhook endpoints: where an instance's events go, which events, and how they are signed.
//!
//! - [`filter`]: the event filter an endpoint subscribes with.
//! - [`address`]: the SSRF guard, which decides which IP addresses webhooks may reach.
//! - [`target`]: webhook URL parsing and the creation-time check of where it resolves.
//! - [`signing`]: Standard Webhooks secrets and signatures.
//! - [`health`]: when a failing endpoint is disabled on its own.
//!
//! An [`Endpoint`] also carries its health (`disabled_reason`, `failing_since`) and the
//! rotation's `previous_secret_until`.

pub mod address;
pub mod filter;
pub mod health;
pub mod signing;
pub mod target;

use serde::Serialize;

use crate::clock::Millis;
pub use address::AddressPolicy;
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
}

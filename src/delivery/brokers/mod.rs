//! Destinations beyond HTTP: a delivery published to NATS JetStream, a RabbitMQ exchange or a
//! Redis stream, with the same body and the same Standard Webhooks headers a webhook gets.
//!
//! - [`nats`]: JetStream publish, `Nats-Msg-Id` the event id, waiting for the stream's ack.
//! - [`amqp`]: RabbitMQ publish, persistent and mandatory, waiting for the publisher confirm.
//! - [`redis`]: `XADD` of the fields `webhook-id`, `webhook-timestamp`, `webhook-signature`
//!   and `body`.
//!
//! **Connections.** One per endpoint, kept between attempts and shared by its concurrent
//! attempts (each kind's handle multiplexes). A connection that fails is dropped and made
//! again by a later attempt; after a failed connect, attempts fail at once for a back-off
//! (1 s, doubling to 60 s) instead of each trying again, so a broker that is down costs failed
//! attempts and later retries on the schedule, never a blocked engine: every attempt, connect
//! included, is bounded by the attempt timeout, and other endpoints have their own links.
//!
//! **The SSRF guard.** The broker's host is resolved here and every address is checked with
//! the [`AddressPolicy`], as for HTTP; the client then connects to the checked IP address,
//! never to a name it would resolve on its own, and NATS is told to ignore the servers a
//! cluster advertises.
//!
//! **Secrets.** Credentials come from the URL and go only to the broker: errors are written
//! here, from the client's error kinds, and never carry the URL.

pub mod amqp;
pub mod nats;
pub mod redis;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::webhooks::destination::Broker;
use crate::webhooks::{AddressPolicy, Destination};

/// The first back-off after a failed connect.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What is published: the event's exact bytes and its signature headers.
pub struct Signed<'a> {
    /// `webhook-id`: the event id.
    pub id: &'a str,
    /// `webhook-timestamp`, unix seconds.
    pub timestamp: i64,
    /// `webhook-signature`.
    pub signature: &'a str,
    /// The body.
    pub body: &'a [u8],
}

/// A connection of one of the kinds.
#[derive(Clone)]
enum Link {
    Nats(nats::Link),
    Amqp(amqp::Link),
    Redis(redis::Link),
}

/// An endpoint's connection, or when the next connect may be tried.
struct Slot {
    url: String,
    link: Option<Link>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
}

/// The connections of every broker endpoint.
pub struct Brokers {
    policy: Arc<AddressPolicy>,
    timeout: Duration,
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
}

impl Brokers {
    /// No connections yet.
    pub fn new(policy: Arc<AddressPolicy>, timeout: Duration) -> Self {
        Self {
            policy,
            timeout,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes one delivery; answers the broker's acknowledgement, or why it failed.
    pub async fn publish(
        &self,
        endpoint_id: &str,
        url: &str,
        destination: &Destination,
        message: &Signed<'_>,
    ) -> Result<String, String> {
        let link = self.link(endpoint_id, url, destination).await?;
        let published = match (&link, destination) {
            (Link::Nats(link), Destination::Nats { subject, .. }) => link.publish(subject, message).await,
            (
                Link::Amqp(link),
                Destination::Amqp {
                    exchange, routing_key, ..
                },
            ) => link.publish(exchange, routing_key, message).await,
            (Link::Redis(link), Destination::Redis { stream, maxlen, .. }) => {
                link.publish(stream, *maxlen, message).await
            }
            _ => Err(Failure::Broken("the connection does not match the destination".into())),
        };
        match published {
            Ok(ack) => Ok(ack),
            Err(Failure::Refused(error)) => Err(error),
            Err(Failure::Broken(error)) => {
                self.drop_link(endpoint_id).await;
                Err(error)
            }
        }
    }

    /// Closes an endpoint's connection (its URL changed, or it was deleted).
    pub fn forget(&self, endpoint_id: &str) {
        self.slots.lock().expect("slots lock").remove(endpoint_id);
    }

    async fn slot(&self, endpoint_id: &str, url: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.slots.lock().expect("slots lock");
        let slot = slots.entry(endpoint_id.to_string()).or_insert_with(|| {
            Arc::new(tokio::sync::Mutex::new(Slot {
                url: url.to_string(),
                link: None,
                failures: 0,
                retry_at: None,
                last_error: String::new(),
            }))
        });
        slot.clone()
    }

    async fn drop_link(&self, endpoint_id: &str) {
        let slot = self.slots.lock().expect("slots lock").get(endpoint_id).cloned();
        if let Some(slot) = slot {
            slot.lock().await.link = None;
        }
    }

    /// The endpoint's connection, made if there is none and the back-off allows.
    async fn link(&self, endpoint_id: &str, url: &str, destination: &Destination) -> Result<Link, String> {
        let slot = self.slot(endpoint_id, url).await;
        let mut slot = slot.lock().await;
        if slot.url != url {
            // Changed in another process: the old connection goes.
            *slot = Slot {
                url: url.to_string(),
                link: None,
                failures: 0,
                retry_at: None,
                last_error: String::new(),
            };
        }
        if let Some(link) = &slot.link {
            return Ok(link.clone());
        }
        if let Some(at) = slot.retry_at
            && Instant::now() < at
        {
            return Err(format!(
                "not connected: {} (trying again in {} s)",
                slot.last_error,
                at.saturating_duration_since(Instant::now()).as_secs().max(1)
            ));
        }
        let connected = tokio::time::timeout(self.timeout, self.connect(destination)).await;
        match connected.unwrap_or_else(|_| Err(format!("connect timed out after {} ms", self.timeout.as_millis()))) {
            Ok(link) => {
                slot.link = Some(link.clone());
                slot.failures = 0;
                slot.retry_at = None;
                Ok(link)
            }
            Err(error) => {
                let backoff = FIRST_BACKOFF.saturating_mul(1 << slot.failures.min(6)).min(MAX_BACKOFF);
                slot.failures += 1;
                slot.retry_at = Some(Instant::now() + backoff);
                slot.last_error = error.clone();
                Err(error)
            }
        }
    }

    async fn connect(&self, destination: &Destination) -> Result<Link, String> {
        let Some(broker) = destination.broker() else {
            return Err("not a broker destination".into());
        };
        let address = self.resolve(broker).await?;
        match destination {
            Destination::Nats { .. } => nats::Link::connect(address, broker, self.timeout).await.map(Link::Nats),
            Destination::Amqp { vhost, .. } => amqp::Link::connect(address, broker, vhost).await.map(Link::Amqp),
            Destination::Redis { db, .. } => redis::Link::connect(address, broker, *db).await.map(Link::Redis),
            Destination::Http(_) => Err("not a broker destination".into()),
        }
    }

    /// The broker's first permitted address.
    async fn resolve(&self, broker: &Broker) -> Result<SocketAddr, String> {
        let found: Vec<SocketAddr> = tokio::net::lookup_host((broker.host.as_str(), broker.port))
            .await
            .map_err(|_| format!("connection failed: {} does not resolve", broker.host))?
            .collect();
        match found.iter().find(|a| self.policy.permits(a.ip())) {
            Some(address) => Ok(*address),
            None => Err(match found.first() {
                Some(a) => format!("blocked: {} resolves to {}, an internal address", broker.host, a.ip()),
                None => format!("connection failed: {} does not resolve", broker.host),
            }),
        }
    }
}

/// Why a publish failed.
pub enum Failure {
    /// The broker answered and refused (no stream, unroutable): the connection stays.
    Refused(String),
    /// The connection is broken or in doubt: it is dropped and made again later.
    Broken(String),
}

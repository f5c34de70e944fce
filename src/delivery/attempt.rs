//! One delivery attempt: a signed `POST` of the event's exact bytes, limited to the whole
//! exchange taking at most the configured timeout (3 s by default); or, for an endpoint whose
//! URL names a broker, the same bytes and signature published through [`super::brokers`]
//! (the attempt then has no `status_code`; `response` is the broker's acknowledgement).
//!
//! The HTTP client is shared, so connections to an endpoint are kept alive and reused. Its
//! DNS resolver applies the [`AddressPolicy`] to every address it returns, and IP-literal
//! URLs are checked here before connecting, so the guard holds at connect time whatever the
//! URL resolved to when the endpoint was saved. Redirects are never followed: a 3xx is a
//! failed attempt like any other non-2xx (following one would let a receiver send the
//! delivery somewhere the guard never checked). The client ignores proxy environment
//! variables (`no_proxy()`): a proxy would resolve and connect on its own, around the guard.
//!
//! During a secret rotation's grace period the claim also returns the previous secret, and
//! `webhook-signature` carries the new secret's signature, a space, and the old one's. Up to
//! 64 KiB of an answer is read; the first 1 KiB is kept with the attempt (as text, lossy
//! UTF-8), with the receiver's `Retry-After` on a 429 or 503. Errors are described without
//! the URL, which may carry a token in its query.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Host;

use super::brokers::{Brokers, Signed};
use crate::clock::Clock;
use crate::store::{AttemptResult, DueDelivery};
use crate::webhooks::{AddressPolicy, Destination, WebhookUrl};

/// How much of a receiver's answer is kept with the attempt.
pub const RESPONSE_EXCERPT_BYTES: usize = 1024;
/// How much of an answer is read at most (the rest is dropped with the connection).
const RESPONSE_READ_LIMIT: usize = 64 * 1024;

/// Makes delivery attempts.
#[derive(Clone)]
pub struct Attempter {
    client: reqwest::Client,
    policy: Arc<AddressPolicy>,
    timeout: Duration,
    clock: Clock,
    brokers: Arc<Brokers>,
}

/// The client's resolver: the system's, with internal addresses removed.
struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> = found.iter().copied().filter(|a| policy.permits(a.ip())).collect();
            if permitted.is_empty() {
                let shown = found
                    .first()
                    .map(|a| a.ip().to_string())
                    .unwrap_or_else(|| "nothing".into());
                return Err(format!("blocked: {host} resolves to {shown}, an internal address").into());
            }
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}

impl Attempter {
    /// A client with the address policy, the exchange timeout and the clock that stamps
    /// attempts.
    pub fn new(policy: AddressPolicy, timeout: Duration, clock: Clock) -> Self {
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver { policy: policy.clone() }))
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve and connect for us, around the address guard.
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(concat!("botlinkd/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds with static settings");
        Self {
            client,
            brokers: Arc::new(Brokers::new(policy.clone(), timeout)),
            policy,
            timeout,
            clock,
        }
    }

    /// Drops a broker endpoint's connection (its URL changed, or it is gone).
    pub fn forget_endpoint(&self, endpoint_id: &str) {
        self.brokers.forget(endpoint_id);
    }

    /// Makes one attempt. The result's `retry_at` is left `None`; the engine decides it.
    pub async fn attempt(&self, d: &DueDelivery) -> AttemptResult {
        let started_at = self.clock.now_ms();
        let started = Instant::now();
        let outcome = if d.url.starts_with("http") {
            self.exchange(d, started_at / 1000).await
        } else {
            // Boxed: the broker clients' futures are large, and every attempt task (up to
            // `max_in_flight` of them) would otherwise carry their size, webhooks included.
            Box::pin(self.publish(d, started_at / 1000)).await
        };
        let duration_ms = started.elapsed().as_millis() as i64;
        let (status_code, response, error, retry_after) = match outcome {
            Ok(Answer::Published(ack)) => (None, ack, None, None),
            Ok(Answer::Http(answer)) => {
                let status = answer.status;
                let error = (!(200..300).contains(&status)).then(|| format!("receiver answered HTTP {status}"));
                (Some(status), answer.excerpt, error, answer.retry_after)
            }
            Err(error) => (None, String::new(), Some(error), None),
        };
        AttemptResult {
            delivery_id: d.delivery_id,
            event_seq: d.event_seq,
            event_id: d.event_id.clone(),
            instance_id: d.instance_id,
            endpoint_id: d.endpoint_id.clone(),
            attempt: d.attempt,
            started_at,
            duration_ms,
            success: error.is_none(),
            status_code,
            response,
            error,
            retry_at: None,
            retry_after,
            lease_until: d.lease_until,
            disable_after: None,
            follower: None,
        }
    }

    /// A broker destination's attempt: the publish and its acknowledgement, within the
    /// timeout.
    async fn publish(&self, d: &DueDelivery, timestamp: i64) -> Result<Answer, String> {
        let url = WebhookUrl::parse(&d.url).map_err(|e| format!("invalid endpoint URL: {e}"))?;
        let destination = Destination::parse(url.as_url()).map_err(|e| format!("invalid endpoint URL: {e}"))?;
        let signature = self.signature(d, timestamp);
        let message = Signed {
            id: &d.event_id,
            timestamp,
            signature: &signature,
            body: d.payload.as_bytes(),
        };
        let publish = self.brokers.publish(&d.endpoint_id, &d.url, &destination, &message);
        match tokio::time::timeout(self.timeout, publish).await {
            Ok(result) => result.map(Answer::Published),
            Err(_) => Err(timeout_message(self.timeout)),
        }
    }

    /// `webhook-signature`: during a rotation's grace period the old secret signs too
    /// (Standard Webhooks receivers accept any one of several space-separated signatures).
    fn signature(&self, d: &DueDelivery, timestamp: i64) -> String {
        let mut signature = d.secret.sign(&d.event_id, timestamp, d.payload.as_bytes());
        if let Some(previous) = &d.previous_secret {
            signature.push(' ');
            signature.push_str(&previous.sign(&d.event_id, timestamp, d.payload.as_bytes()));
        }
        signature
    }

    async fn exchange(&self, d: &DueDelivery, timestamp: i64) -> Result<Answer, String> {
        let url = reqwest::Url::parse(&d.url).map_err(|_| "invalid endpoint URL".to_string())?;
        let literal: Option<IpAddr> = match url.host() {
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal.filter(|ip| !self.policy.permits(*ip)) {
            return Err(format!("blocked: {ip} is an internal address"));
        }
        let signature = self.signature(d, timestamp);
        let request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &d.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(d.payload.as_bytes().to_vec());
        let exchange = async {
            let mut response = request.send().await.map_err(describe)?;
            let status = response.status().as_u16();
            // A receiver that is overloaded or down for maintenance may say when to come back.
            let retry_after = matches!(status, 429 | 503)
                .then(|| {
                    response
                        .headers()
                        .get("retry-after")?
                        .to_str()
                        .ok()?
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .flatten()
                .map(Duration::from_secs);
            let mut body = Vec::new();
            while body.len() < RESPONSE_READ_LIMIT {
                match response.chunk().await.map_err(describe)? {
                    Some(chunk) => body.extend_from_slice(&chunk),
                    None => break,
                }
            }
            body.truncate(RESPONSE_EXCERPT_BYTES);
            Ok::<_, String>(Answer::Http(HttpAnswer {
                status,
                excerpt: String::from_utf8_lossy(&body).into_owned(),
                retry_after,
            }))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(timeout_message(self.timeout)),
        }
    }
}

/// What the destination answered.
enum Answer {
    /// A web server's answer.
    Http(HttpAnswer),
    /// A broker's acknowledgement.
    Published(String),
}

/// What a web server answered.
struct HttpAnswer {
    status: u16,
    excerpt: String,
    retry_after: Option<Duration>,
}

fn timeout_message(limit: Duration) -> String {
    format!("timeout: no complete answer within {} ms", limit.as_millis())
}

/// A short, URL-free description of a client error (URLs may carry tokens in their query).
fn describe(error: reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_body() || error.is_decode() {
        "answer broken off"
    } else {
        "request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(&error);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

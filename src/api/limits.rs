//! Rate limits at the HTTP edge, per process:
//! - **authentication failures** per client address (wrong App Key/Auth Key, a wrong Meta
//!   verify token on `GET /meta/webhook`): a burst of 20, then one more every 3 seconds;
//!   past that, every authentication from the address is answered 429 until the bucket
//!   refills, so guessing keys is slow (about 1,200 tries an hour) and cannot load the
//!   database. A person who mistypes a key does not meet the limit. The right keys are refused
//!   too while the address is out of tries; otherwise a correct guess would still be told
//!   apart from a wrong one, and the limit would not slow guessing. `POST /meta/webhook` is
//!   exempt: behind a reverse proxy Meta shares the proxy's address with every client, and
//!   one client's wrong keys must not turn Meta away;
//! - **API calls** per instance (`--api-rate-limit`, 200 a second with a burst of twice
//!   that by default), so that one instance's runaway client cannot take the server from the
//!   others, except the sandbox's simulated customers, which stand in for WhatsApp's own
//!   traffic (not limited on the `meta` channel either; the benchmarks and the fault suite load
//!   the server through them).
//!
//! Both are token buckets ([`Buckets`]) kept in memory, per process, which keeps them off the
//! database: `take` spends a token, `check` only looks, and once 10,000 keys are kept those
//! whose bucket has refilled are forgotten. [`ClientIp`] is the connection's address only,
//! never `X-Forwarded-For`, which any client can set; behind a reverse proxy every client has
//! the proxy's address, so the authentication limit is then shared by all of them.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

/// Failed authentications allowed in a burst from one address.
const AUTH_FAILURE_BURST: f64 = 20.0;
/// Failed authentications one address regains per second.
const AUTH_FAILURE_RATE: f64 = 1.0 / 3.0;
/// Buckets kept before full ones are forgotten.
const MAX_BUCKETS: usize = 10_000;

/// A token bucket per key.
#[derive(Debug)]
pub struct Buckets<K> {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    /// Buckets that hold `burst` tokens and regain `rate` a second.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key`, or says how long until one is there.
    pub fn take(&self, key: &K) -> Result<(), Duration> {
        self.with(key, |bucket| {
            if bucket.tokens >= 1.0 {
                bucket.tokens -= 1.0;
                Ok(())
            } else {
                Err(self.wait(bucket.tokens))
            }
        })
    }

    /// Whether `key` has a token left, without taking it.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.with(key, |bucket| {
            if bucket.tokens >= 1.0 {
                Ok(())
            } else {
                Err(self.wait(bucket.tokens))
            }
        })
    }

    fn wait(&self, tokens: f64) -> Duration {
        Duration::from_secs_f64(((1.0 - tokens) / self.rate).max(0.001))
    }

    fn with<T>(&self, key: &K, f: impl FnOnce(&mut Bucket) -> T) -> T {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_BUCKETS {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * self.rate).min(self.burst);
        bucket.at = now;
        f(bucket)
    }
}

/// The limits of one server.
#[derive(Debug)]
pub struct Limits {
    /// Failed authentications per client address.
    pub auth_failures: Buckets<IpAddr>,
    /// API calls per instance (`None`: unlimited).
    pub api_calls: Option<Buckets<i64>>,
}

impl Limits {
    /// The limits, with `api_per_second` calls a second per instance (burst twice that).
    pub fn new(api_per_second: Option<u32>) -> Self {
        Self {
            auth_failures: Buckets::new(AUTH_FAILURE_RATE, AUTH_FAILURE_BURST),
            api_calls: api_per_second.map(|rate| Buckets::new(f64::from(rate), f64::from(rate) * 2.0)),
        }
    }
}

/// The address a request came from, when the server knows it.
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(parts)))
    }
}

/// The address a request came from, when the server knows it.
pub fn client_ip(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_says_how_long_to_wait() {
        let buckets = Buckets::new(1.0, 3.0);
        for _ in 0..3 {
            assert!(buckets.take(&"a").is_ok());
        }
        let wait = buckets.take(&"a").unwrap_err();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(buckets.check(&"a").is_err());
        assert!(buckets.take(&"b").is_ok(), "keys do not share a bucket");
    }
}

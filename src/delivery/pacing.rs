//! Rate limits per endpoint: an endpoint's `rate_limit` (deliveries a second) paces its
//! attempts, which wait for their turn rather than fail.
//!
//! **The pace.** Every claim reads the endpoint's limit with the delivery
//! ([`DueDelivery::rate_limit`]), so a change applies from the next claim on, in every
//! process. Before each attempt of a limited endpoint, [`Pacing::wait_turn`] reserves a slot
//! with [`Store::reserve_pace`] (a generic cell rate: slots one interval apart, none in the
//! past) and sleeps until it starts. On SQLite the slots live in the one serving process's
//! memory; on PostgreSQL they are a row per endpoint (`pacing`), so every process draws from
//! one pace and the limit holds across them, to within the processes' clock skew (the slots
//! are wall-clock times) and the scheduling of a sleep. A reservation the store cannot make
//! (the database is away) waits one interval instead.
//!
//! **What may be claimed.** An attempt holds a lease while it waits, so a limited endpoint
//! keeps at most [`Pacing::in_flight_cap`] attempts (twice its rate, at least 2) in flight
//! per process: none waits much more than two seconds per process sharing the pace, far
//! inside the lease. The claim loop skips endpoints at their cap (known from the last
//! claims of them), and a claim or hand-over that brings more is handed back to the queue
//! (`Store::release_claims`), due again about when the attempts in flight are done.
//! Per-conversation order is untouched: a conversation's next delivery only leaves after the
//! one before it succeeded, however long either waited.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Clock;
use crate::store::{DueDelivery, Store};

/// The limits of the endpoints this process claimed from, and the waiting for turns.
pub struct Pacing {
    store: Arc<dyn Store>,
    clock: Clock,
    limits: Mutex<HashMap<String, u32>>,
}

impl Pacing {
    /// No limits known yet.
    pub fn new(store: Arc<dyn Store>, clock: Clock) -> Self {
        Self {
            store,
            clock,
            limits: Mutex::new(HashMap::new()),
        }
    }

    /// Notes the limit a claim read of the delivery's endpoint.
    pub fn note(&self, d: &DueDelivery) {
        let mut limits = self.limits.lock().expect("limits lock");
        match d.rate_limit {
            Some(rate) => {
                limits.insert(d.endpoint_id.clone(), rate);
            }
            None => {
                limits.remove(&d.endpoint_id);
            }
        }
    }

    /// An endpoint's limit as last claimed, deliveries a second.
    pub fn limit(&self, endpoint_id: &str) -> Option<u32> {
        self.limits.lock().expect("limits lock").get(endpoint_id).copied()
    }

    /// How many attempts of a limited endpoint one process keeps in flight.
    pub fn in_flight_cap(rate: u32, per_endpoint: usize) -> usize {
        (rate as usize).saturating_mul(2).clamp(2, per_endpoint.max(2))
    }

    /// How long a delivery handed back waits before it is due again: about as long as the
    /// attempts in flight take to get their turns.
    pub fn release_delay(rate: u32, per_endpoint: usize) -> Duration {
        Duration::from_micros(Self::in_flight_cap(rate, per_endpoint) as u64 * interval_us(rate) as u64)
    }

    /// Waits for the delivery's endpoint's next slot; at once for an endpoint without a
    /// limit. Answers whether it waited.
    pub async fn wait_turn(&self, d: &DueDelivery) -> bool {
        let Some(rate) = d.rate_limit else {
            return false;
        };
        let interval = interval_us(rate);
        let now_us = self.clock.now_ms() * 1000;
        let wait_us = match self.store.reserve_pace(&d.endpoint_id, interval, now_us).await {
            // Measured again after the reservation: a slow round trip to the store must not
            // push the attempt past its slot and towards the next one.
            Ok(slot) => slot - self.clock.now_ms() * 1000,
            Err(error) => {
                tracing::warn!(error = %error, endpoint_id = %d.endpoint_id, "reserving a paced slot failed; waiting one interval");
                interval
            }
        };
        if wait_us > 0 {
            tokio::time::sleep(Duration::from_micros(wait_us as u64)).await;
        }
        true
    }
}

/// One slot's length, microseconds.
fn interval_us(rate: u32) -> i64 {
    1_000_000 / i64::from(rate.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_delays_follow_the_rate() {
        assert_eq!(Pacing::in_flight_cap(1, 64), 2);
        assert_eq!(Pacing::in_flight_cap(10, 64), 20);
        assert_eq!(Pacing::in_flight_cap(1000, 64), 64);
        assert_eq!(Pacing::release_delay(1, 64), Duration::from_secs(2));
        assert_eq!(Pacing::release_delay(10, 64), Duration::from_secs(2));
        assert_eq!(interval_us(3), 333_333);
    }
}

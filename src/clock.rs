//! The one source of "now" for everything that schedules: retries, leases, sandbox receipts.
//!
//! Production uses the system clock. Tests use a [`Clock::manual`] clock that they move
//! forward themselves ([`Clock::advance`]), so retry schedules are checked without sleeping.
//!
//! Time is [`Millis`] (an `i64` of milliseconds since the Unix epoch) wherever it is stored or
//! scheduled: table columns, leases, `next_at`, retry times, the time part of ids. It becomes
//! RFC 3339 only where it is shown (`store::rfc3339`, clamped to the year 9999), and seconds
//! in event payloads. Durations measured inside the process (attempt times, timeouts, rate
//! buckets, cache ages) use `std::time::Instant` and are not moved by a manual clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// A clock that is either the system's or moved by hand.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Self {
        Self { manual: None }
    }

    /// A clock that stands still at `start` until [`Clock::advance`] moves it.
    pub fn manual(start: Millis) -> Self {
        Self {
            manual: Some(Arc::new(AtomicI64::new(start))),
        }
    }

    /// Whether this clock is moved by hand (background loops then leave timing to the test).
    pub fn is_manual(&self) -> bool {
        self.manual.is_some()
    }

    /// Now, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> Millis {
        match &self.manual {
            Some(at) => at.load(Ordering::SeqCst),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as Millis)
                .unwrap_or_default(),
        }
    }

    /// Moves a manual clock forward; does nothing to the system clock.
    pub fn advance(&self, by: std::time::Duration) {
        if let Some(at) = &self.manual {
            at.fetch_add(by.as_millis() as Millis, Ordering::SeqCst);
        }
    }
}

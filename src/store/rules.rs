//! The delivery rules both backends keep, stated once in Rust; `sqlite` and `postgres` only
//! translate them into their SQL and map rows.
//!
//! A delivery is one event on its way to one endpoint. Its [`DeliveryState`] is stored as a
//! small integer. At most one delivery of an (endpoint, conversation) queue is `Pending` (the
//! head); the rest are `Waiting` behind it, oldest first by row id. What an attempt's outcome
//! does is [`after_attempt`]; when a head finishes (delivered or dead) the oldest waiting
//! delivery of its queue becomes the head, due at once unless its endpoint is disabled
//! ([`due_at`]). What a resend does is [`resend_step`]; how a delivery is shown is
//! [`delivery_status`]. The idempotency comparison (same key, same body) lives in
//! `App::replay`, and retention's cut-offs in housekeeping: neither is in SQL.
//!
//! The states: **waiting**, behind the head of its queue, never claimed. **pending**, the
//! head: due when `next_at <= now` and its endpoint is enabled; a claim sets `lease_until` and
//! moves `next_at` to the lease's end, so the row is due again only if nobody reports back.
//! **delivered**: a 2xx arrived within the limit. **dead**: the schedule is exhausted (12
//! attempts with the default); the queue's next delivery is promoted, so one dead event does
//! not block its conversation forever. Any other outcome (timeout, connection error, SSRF
//! refusal, 3xx, 4xx, 5xx) adds one to `failures`, clears the lease and sets `next_at` to the
//! retry time the engine computed, or to [`PAUSED`] if the endpoint was disabled meanwhile.
//!
//! A completion counts only under its own lease: it matches the pending state and the
//! `lease_until` the claim set. An outcome for a delivery that is no longer pending (its
//! endpoint was deleted, for example) or whose lease ran out and was replaced by a newer claim
//! is recorded as an attempt and changes nothing else. The lease is at least four times the
//! attempt timeout, so this happens only when an outcome could not be recorded in time (a
//! stalled store, say).
//!
//! **Disabled endpoints are paused, not skipped.** Events that arrive while an endpoint is
//! disabled still get a delivery for it; a head written, promoted or retried then gets
//! `next_at = PAUSED` (`i64::MAX`, never due; the API shows `next_attempt_at: null`), and
//! disabling (a `PATCH`, or the endpoint's health) sets it on the endpoint's unleased pending
//! heads: an attempt under way finishes, and its retry is paused. Enabling sets every paused
//! head's `next_at` to now and wakes the engine, so the backlog goes out at once, in order per
//! conversation. Claims also require the endpoint to be enabled, and `next_due_at` ignores
//! paused rows. So disabling never drops or kills a delivery: one dies only when its own
//! schedule runs out.

use crate::clock::Millis;
use crate::store::{AttemptResult, DeliveryStatus, StoreError, StoreResult, rfc3339};

/// `next_at` of a pending delivery whose endpoint is disabled: never due until it is enabled.
pub const PAUSED: Millis = i64::MAX;

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    /// Behind the head of its queue; never claimed.
    Waiting,
    /// The head of its queue: due at `next_at`, or leased while an attempt runs.
    Pending,
    /// A 2xx answer arrived in time.
    Delivered,
    /// Its retry schedule ran out.
    Dead,
}

impl DeliveryState {
    /// The stored code.
    pub const fn code(self) -> i16 {
        match self {
            DeliveryState::Waiting => 0,
            DeliveryState::Pending => 1,
            DeliveryState::Delivered => 2,
            DeliveryState::Dead => 3,
        }
    }

    /// The state a stored code stands for.
    pub fn from_code(code: i64) -> StoreResult<Self> {
        match code {
            0 => Ok(DeliveryState::Waiting),
            1 => Ok(DeliveryState::Pending),
            2 => Ok(DeliveryState::Delivered),
            3 => Ok(DeliveryState::Dead),
            other => Err(StoreError::Corrupt(format!("delivery state {other}"))),
        }
    }

    /// How the API names it.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Waiting => "waiting",
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }

    /// Whether the delivery has left its queue (so the next one may become the head).
    pub const fn is_finished(self) -> bool {
        matches!(self, DeliveryState::Delivered | DeliveryState::Dead)
    }
}

/// What an attempt's outcome makes of its delivery (when the delivery still carries the
/// attempt's lease): the new state, and how many failures to add. A retry stays `Pending`,
/// due at `retry_at` (or paused, if its endpoint was disabled meanwhile).
pub fn after_attempt(r: &AttemptResult) -> (DeliveryState, i32) {
    match (r.success, r.retry_at) {
        (true, _) => (DeliveryState::Delivered, 0),
        (false, Some(_)) => (DeliveryState::Pending, 1),
        (false, None) => (DeliveryState::Dead, 1),
    }
}

/// When a delivery that becomes due at `at` is due, given its endpoint's state.
pub const fn due_at(endpoint_enabled: bool, at: Millis) -> Millis {
    if endpoint_enabled { at } else { PAUSED }
}

/// Attempts a delivery has made: its failures, those of the deliveries of the same event and
/// endpoint before it (a resend continues their count), and one more if it was delivered.
pub fn attempts_made(state: DeliveryState, failures: i64, offset: i64) -> u32 {
    (failures + offset + i64::from(state == DeliveryState::Delivered)).max(0) as u32
}

/// How the API shows a delivery: a pending one that is not paused has a next attempt time.
pub fn delivery_status(
    endpoint_id: String,
    state: DeliveryState,
    failures: i64,
    offset: i64,
    next_at: Millis,
) -> DeliveryStatus {
    DeliveryStatus {
        endpoint_id,
        state: state.as_str(),
        attempts: attempts_made(state, failures, offset),
        next_attempt_at: (state == DeliveryState::Pending && next_at != PAUSED).then(|| rfc3339(next_at)),
    }
}

/// The latest delivery of an event to an endpoint, as a resend finds it.
#[derive(Clone, Copy, Debug)]
pub struct Latest {
    /// Its row.
    pub delivery_id: i64,
    /// Its state.
    pub state: DeliveryState,
    /// Its attempts so far ([`attempts_made`]).
    pub attempts: u32,
}

/// What resending an event does for one endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResendStep {
    /// Already on its way: pull a scheduled retry forward to now (a backend does nothing, and
    /// counts nothing, when an attempt is running or the endpoint is paused).
    MakeDue(i64),
    /// Queued behind an earlier event of its conversation: it goes when its turn comes.
    Nothing,
    /// A new delivery at the tail of the conversation's queue, continuing the attempt count.
    Enqueue {
        /// The attempts made before it.
        attempt_offset: u32,
    },
}

/// What a resend does for one endpoint: `latest` is the event's latest delivery there, if
/// any; `named` whether the caller named this endpoint; `subscribed` whether the endpoint's
/// filter takes the event (a test event is taken only where it was sent).
pub fn resend_step(latest: Option<Latest>, named: bool, subscribed: bool) -> ResendStep {
    match latest {
        Some(l) if l.state == DeliveryState::Pending => ResendStep::MakeDue(l.delivery_id),
        Some(l) if l.state == DeliveryState::Waiting => ResendStep::Nothing,
        Some(l) => ResendStep::Enqueue {
            attempt_offset: l.attempts,
        },
        None if named || subscribed => ResendStep::Enqueue { attempt_offset: 0 },
        None => ResendStep::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_codes() {
        for state in [
            DeliveryState::Waiting,
            DeliveryState::Pending,
            DeliveryState::Delivered,
            DeliveryState::Dead,
        ] {
            assert_eq!(DeliveryState::from_code(i64::from(state.code())).unwrap(), state);
        }
        assert!(DeliveryState::from_code(4).is_err());
    }

    #[test]
    fn a_delivered_delivery_counts_its_successful_attempt() {
        assert_eq!(attempts_made(DeliveryState::Delivered, 2, 1), 4);
        assert_eq!(attempts_made(DeliveryState::Dead, 12, 0), 12);
        assert_eq!(attempts_made(DeliveryState::Pending, 0, 0), 0);
    }

    #[test]
    fn a_paused_delivery_shows_no_next_attempt() {
        let paused = delivery_status("ep".into(), DeliveryState::Pending, 1, 0, PAUSED);
        assert_eq!(paused.next_attempt_at, None);
        let due = delivery_status("ep".into(), DeliveryState::Pending, 1, 0, 0);
        assert!(due.next_attempt_at.is_some());
        let done = delivery_status("ep".into(), DeliveryState::Delivered, 0, 0, 0);
        assert_eq!(done.next_attempt_at, None);
    }

    #[test]
    fn a_resend_continues_finished_deliveries_and_leaves_queued_ones() {
        let latest = |state, attempts| {
            Some(Latest {
                delivery_id: 7,
                state,
                attempts,
            })
        };
        assert_eq!(
            resend_step(latest(DeliveryState::Pending, 1), false, true),
            ResendStep::MakeDue(7)
        );
        assert_eq!(
            resend_step(latest(DeliveryState::Waiting, 0), true, true),
            ResendStep::Nothing
        );
        assert_eq!(
            resend_step(latest(DeliveryState::Dead, 12), false, true),
            ResendStep::Enqueue { attempt_offset: 12 }
        );
        assert_eq!(
            resend_step(None, true, false),
            ResendStep::Enqueue { attempt_offset: 0 }
        );
        assert_eq!(resend_step(None, false, false), ResendStep::Nothing);
    }
}

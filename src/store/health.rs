//! Endpoint health: an endpoint whose receiver says it is gone (HTTP 410) is disabled at
//! once, and one that has failed every attempt for a configurable period (5 days by default)
//! is disabled then. The reason is kept on the endpoint for the API and the portal; its
//! undelivered events stay queued (paused) until someone enables it again.
//!
//! The store's completion calls its `record_health` for every outcome, in the same
//! transaction and before it moves the delivery. A success sets the endpoint's
//! `failing_since` to `NULL`. A failure sets it to the attempt's start if it is `NULL`, but
//! only while the endpoint is enabled, so an attempt at a disabled endpoint (a test event)
//! neither starts nor extends a run. Then [`disable_reason`] decides. Disabling sets `enabled`
//! to false, stores the reason, pauses the endpoint's unleased pending heads exactly as a
//! `PATCH` does, and logs `endpoint disabled` at `warn`. Because this comes before the
//! delivery's own update, the retry of the attempt that disabled the endpoint is written
//! paused; only an attempt that was the last of its schedule makes its delivery dead.
//! Attempts to the endpoint still in flight finish, and their retries are paused too. A
//! `PATCH` that sets `enabled` clears `disabled_reason`; `"enabled": true` also clears
//! `failing_since` and makes the paused heads due at once.
//!
//! Why a `410` at once: it is a receiver saying that the URL will not come back, so retrying
//! only adds attempts and dead deliveries; and since disabling pauses rather than drops, a
//! `410` sent by mistake costs one `PATCH`, not events. Why five days for other failures: they
//! may be an outage, and a disabled endpoint needs someone to enable it again, so botlinkd
//! waits for a run longer than the whole default retry schedule (about 56 hours). The run is
//! measured in time from the first failure after the last success, not in attempts, which
//! depend on traffic and are spaced unevenly. The price: with the defaults, deliveries to a
//! receiver that is down for days die before its endpoint is disabled; the bulk resend of dead
//! deliveries is there for them. `off` never disables for failures (a `410` still does).

use super::rfc3339;
use crate::clock::Millis;

/// Why a failed attempt disables its endpoint, or `None` to keep it.
///
/// `failing_since` is when the current run of failures began (the first failure after the
/// last success), `now` when this attempt started, and `disable_after` the allowed length of
/// such a run (`None`: never disable for it).
pub fn disable_reason(
    status_code: Option<u16>,
    failing_since: Millis,
    now: Millis,
    disable_after: Option<Millis>,
    last_error: Option<&str>,
) -> Option<String> {
    if status_code == Some(410) {
        return Some(format!(
            "disabled automatically: the receiver answered 410 Gone at {}; enable it again once the URL is back",
            rfc3339(now)
        ));
    }
    let limit = disable_after?;
    (now - failing_since >= limit).then(|| {
        format!(
            "disabled automatically: every attempt failed since {} ({}); last error: {}",
            rfc3339(failing_since),
            humantime::format_duration(std::time::Duration::from_millis(limit.max(0) as u64)),
            last_error.unwrap_or("none recorded")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::disable_reason;

    const DAY: i64 = 24 * 3600 * 1000;

    #[test]
    fn gone_disables_at_once_and_a_long_failure_run_after_the_period() {
        let reason = disable_reason(Some(410), 0, 1_000, Some(5 * DAY), None).unwrap();
        assert!(reason.contains("410 Gone"), "{reason}");
        assert_eq!(disable_reason(Some(500), 0, 5 * DAY - 1, Some(5 * DAY), None), None);
        let reason = disable_reason(Some(500), 0, 5 * DAY, Some(5 * DAY), Some("receiver answered HTTP 500")).unwrap();
        assert!(reason.contains("5days") && reason.contains("HTTP 500"), "{reason}");
        assert_eq!(disable_reason(None, 0, 50 * DAY, None, None), None, "off");
    }
}

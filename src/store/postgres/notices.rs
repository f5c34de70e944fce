//! The notices processes send each other through PostgreSQL (`LISTEN`/`NOTIFY`): the
//! channels, what each notice says, and the listener that reads the other processes' notices.
//! Sending them, after the writes they announce have committed, is `super::notifier`'s.
//!
//! - `botlinkd_events`: an instance's newest feed position after a write, and whether the write
//!   left a delivery due for another process's claim loop.
//! - `botlinkd_attempts`: a completion's attempts, for the portals and streams of other
//!   processes, as few notices as fit under PostgreSQL's 8,000-byte limit.
//! - `botlinkd_instances`: an instance changed (by a trigger, migration 0005); the
//!   authentication cache forgets it.
//! - `botlinkd_watch`: another process has a live watcher of an instance (see
//!   `super::watchers`).

use std::sync::Arc;

use sqlx::postgres::PgListener;
use tokio::sync::mpsc;

use super::instance_cache::InstanceCache;
use super::notifier::Notifier;
use super::watchers::{RemoteWatch, WATCH_CHANNEL, parse_watch_notice};
use crate::store::{AttemptNotice, AttemptResult, ClusterNotice};

/// The channel committed events are announced on.
pub(super) const EVENTS_CHANNEL: &str = "botlinkd_events";

/// The channel recorded attempts are announced on.
pub(super) const ATTEMPTS_CHANNEL: &str = "botlinkd_attempts";

/// The channel changed instances are announced on (by a trigger, see migration 0005).
pub(super) const INSTANCES_CHANNEL: &str = "botlinkd_instances";

/// An event notice: `instance:seq`, or `instance:seq:handed` when the write left no delivery
/// due for the other processes' claim loops.
pub(super) fn parse_event_notice(payload: &str) -> Option<ClusterNotice> {
    let mut parts = payload.split(':');
    let instance_id = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    Some(ClusterNotice::Event {
        instance_id,
        seq,
        due: parts.next() != Some("handed"),
    })
}

/// The most bytes of one attempts notice (PostgreSQL refuses payloads of 8,000 bytes or more).
const ATTEMPTS_PAYLOAD_BYTES: usize = 7_000;

/// One attempt in an attempts notice.
#[derive(serde::Serialize, serde::Deserialize)]
struct AttemptEnvelope {
    instance_id: i64,
    notice: AttemptNotice,
}

/// The attempts notices of a completion: this process's origin, a newline, and a JSON array
/// of attempts, as few notices as fit (so a receiving process that finds its own origin skips
/// the notice without parsing it). An attempt too large for a notice on its own is announced
/// with its response excerpt shortened.
pub(super) fn attempt_payloads<'a>(origin: &str, results: impl IntoIterator<Item = &'a AttemptResult>) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut current = String::new();
    for result in results {
        let mut envelope = AttemptEnvelope {
            instance_id: result.instance_id,
            notice: AttemptNotice::from(result),
        };
        let mut item = serde_json::to_string(&envelope).unwrap_or_default();
        if origin.len() + item.len() + 3 > ATTEMPTS_PAYLOAD_BYTES {
            envelope.notice.response = envelope.notice.response.chars().take(200).collect();
            envelope.notice.error = envelope.notice.error.map(|e| e.chars().take(200).collect());
            item = serde_json::to_string(&envelope).unwrap_or_default();
        }
        if !current.is_empty() && current.len() + item.len() + 2 > ATTEMPTS_PAYLOAD_BYTES {
            current.push(']');
            payloads.push(std::mem::take(&mut current));
        }
        if current.is_empty() {
            current = format!("{origin}\n[");
        } else {
            current.push(',');
        }
        current.push_str(&item);
    }
    if !current.is_empty() {
        current.push(']');
        payloads.push(current);
    }
    payloads
}

/// The attempts in another process's notice (none for this process's own, already shown).
pub(super) fn parse_attempt_notices(payload: &str, own: &str) -> Vec<ClusterNotice> {
    let Some((origin, attempts)) = payload.split_once('\n') else {
        return Vec::new();
    };
    if origin == own {
        return Vec::new();
    }
    let envelopes: Vec<AttemptEnvelope> = serde_json::from_str(attempts).unwrap_or_default();
    envelopes
        .into_iter()
        .map(|e| {
            let mut notice = e.notice;
            notice.instance_id = e.instance_id;
            ClusterNotice::Attempt(notice)
        })
        .collect()
}

/// Where the listener's connection hands what it hears: notices for the engine and the live
/// views (`tx`), instance changes to the authentication cache, watches to the notifier.
pub(super) struct Hearing {
    /// This process's origin mark, to skip its own notices.
    pub own: String,
    /// The authentication cache, forgotten on an instance's change.
    pub cache: Arc<InstanceCache>,
    /// The instances other processes watch.
    pub watched_elsewhere: Arc<RemoteWatch>,
    /// Told when an instance becomes watched elsewhere, to send what it held back.
    pub notifier: Arc<Notifier>,
    /// The engine's and the live views' notices.
    pub tx: mpsc::UnboundedSender<ClusterNotice>,
}

/// Reads the other processes' notices on `listener` (already listening on every channel) until
/// nobody takes them any more.
pub(super) fn listen(mut listener: PgListener, hearing: Hearing) {
    let Hearing {
        own,
        cache,
        watched_elsewhere,
        notifier,
        tx,
    } = hearing;
    tokio::spawn(async move {
        loop {
            match listener.recv().await {
                Ok(notification) => {
                    let notices = match notification.channel() {
                        EVENTS_CHANNEL => parse_event_notice(notification.payload()).into_iter().collect(),
                        INSTANCES_CHANNEL => {
                            match notification.payload().parse() {
                                Ok(id) => cache.forget(id),
                                Err(_) => cache.clear(),
                            }
                            continue;
                        }
                        WATCH_CHANNEL => {
                            if let Some(instance_id) = parse_watch_notice(notification.payload(), &own)
                                && watched_elsewhere.add(instance_id)
                            {
                                notifier.watched(vec![instance_id]);
                            }
                            continue;
                        }
                        _ => parse_attempt_notices(notification.payload(), &own),
                    };
                    for notice in notices {
                        if tx.send(notice).is_err() {
                            return;
                        }
                    }
                }
                // The listener reconnects by itself on the next `recv`.
                Err(error) => {
                    // Instance changes may go unheard meanwhile: look everything up afresh.
                    cache.clear();
                    tracing::warn!(error = %error, "postgres notifications interrupted; reconnecting");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(instance_id: i64, response: String) -> AttemptResult {
        AttemptResult {
            delivery_id: 1,
            event_seq: 1,
            event_id: "evt_1".into(),
            instance_id,
            endpoint_id: "ep_1".into(),
            attempt: 1,
            started_at: 0,
            duration_ms: 3,
            status_code: Some(200),
            response,
            error: None,
            success: true,
            retry_at: None,
            retry_after: None,
            lease_until: 0,
            disable_after: None,
            follower: None,
        }
    }

    fn instances(notices: &[ClusterNotice]) -> Vec<i64> {
        notices
            .iter()
            .map(|n| match n {
                ClusterNotice::Attempt(a) => a.instance_id,
                ClusterNotice::Event { .. } => panic!("an event notice among attempts"),
            })
            .collect()
    }

    #[test]
    fn a_completion_is_announced_in_as_few_notices_as_fit_and_read_back_whole() {
        // 1 KB answers (an excerpt's most) escaped by JSON to about 6 KB: one per notice.
        let control = "\u{1}".repeat(1024);
        let results: Vec<AttemptResult> = (0..40)
            .map(|i| {
                attempt(
                    i,
                    if i % 10 == 9 {
                        control.clone()
                    } else {
                        format!("ok {i}")
                    },
                )
            })
            .collect();
        let payloads = attempt_payloads("origin-a", &results);
        assert!(payloads.len() < results.len() / 2, "{} notices", payloads.len());
        assert!(payloads.iter().all(|p| p.len() < 8_000));
        let read: Vec<ClusterNotice> = payloads
            .iter()
            .flat_map(|p| parse_attempt_notices(p, "origin-b"))
            .collect();
        assert_eq!(instances(&read), (0..40).collect::<Vec<_>>());
        // A process skips its own notices.
        assert!(payloads.iter().all(|p| parse_attempt_notices(p, "origin-a").is_empty()));
    }

    #[test]
    fn an_attempt_too_large_for_a_notice_is_announced_with_a_shorter_excerpt() {
        let huge = "\u{1}".repeat(2_000);
        let payloads = attempt_payloads("origin-a", &[attempt(7, huge)]);
        assert_eq!(payloads.len(), 1);
        assert!(payloads[0].len() < 8_000);
        let read = parse_attempt_notices(&payloads[0], "origin-b");
        match &read[..] {
            [ClusterNotice::Attempt(a)] => assert_eq!(a.response.chars().count(), 200),
            _ => panic!("one attempt expected"),
        }
    }

    #[test]
    fn event_notices_say_whether_the_write_left_deliveries_due() {
        let due = |payload| match parse_event_notice(payload) {
            Some(ClusterNotice::Event {
                instance_id: 3,
                seq: 9,
                due,
            }) => due,
            _ => panic!("unreadable notice {payload}"),
        };
        assert!(due("3:9"));
        assert!(!due("3:9:handed"));
        assert!(parse_event_notice("3").is_none());
    }
}

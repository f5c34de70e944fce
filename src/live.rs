//! Live notifications inside one process: "an instance has new events" and "an attempt was
//! recorded", fanned out to any number of watchers (the portal's stream, long-polls).
//!
//! This is a broadcast channel: sending never waits, so watchers cannot slow delivery down.
//! A watcher that falls behind loses notifications, not data: events are always read back
//! from the store by cursor, so the notification is only a nudge to look. Attempts are
//! informational; a watcher that misses some reads them through the attempts API.
//!
//! Items ([`LiveItem`]) are only ever sent after the commit they announce: an `Events` item is
//! an instance id and a feed position, never the events; an `Attempt` item repeats a committed
//! `attempts` row. [`Live`] takes this process's `events` and `attempts`, and `attempt`s that
//! other processes committed (see `store::ClusterNotice`), which enter the same channel, so a
//! watcher does not care which process wrote an event or made an attempt; [`AttemptNotice`] is
//! also the JSON that crosses processes. The channel holds 4096 items; a watcher that lags
//! behind is told so by tokio.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::store::{AttemptResult, rfc3339};

/// How many notifications a slow watcher may fall behind before it is told it lagged.
const CAPACITY: usize = 4096;

/// One notification.
#[derive(Clone, Debug)]
pub enum LiveItem {
    /// The instance has events up to `seq` committed.
    Events {
        /// The instance.
        instance_id: i64,
        /// Its newest event's feed position.
        seq: i64,
    },
    /// A delivery attempt was recorded.
    Attempt(Arc<AttemptNotice>),
}

/// A recorded attempt, as watchers see it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttemptNotice {
    /// The instance.
    #[serde(skip)]
    pub instance_id: i64,
    /// `evt_…`
    pub event_id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// The attempt number.
    pub attempt: u32,
    /// When it started, RFC 3339.
    pub started_at: String,
    /// How long it took.
    pub duration_ms: i64,
    /// The receiver's status code, `null` when no answer came.
    pub status_code: Option<u16>,
    /// The first bytes of the answer.
    pub response: String,
    /// Why it failed.
    pub error: Option<String>,
    /// `success` or `failure`.
    pub outcome: String,
    /// On failure: `retrying` or `dead`.
    pub next: Option<String>,
}

impl From<&AttemptResult> for AttemptNotice {
    fn from(r: &AttemptResult) -> Self {
        Self {
            instance_id: r.instance_id,
            event_id: r.event_id.clone(),
            endpoint_id: r.endpoint_id.clone(),
            attempt: r.attempt,
            started_at: rfc3339(r.started_at),
            duration_ms: r.duration_ms,
            status_code: r.status_code,
            response: r.response.clone(),
            error: r.error.clone(),
            outcome: if r.success { "success" } else { "failure" }.to_string(),
            next: match (r.success, r.retry_at) {
                (true, _) => None,
                (false, Some(_)) => Some("retrying".to_string()),
                (false, None) => Some("dead".to_string()),
            },
        }
    }
}

/// The sending side; cheap to clone.
#[derive(Clone, Debug)]
pub struct Live {
    tx: broadcast::Sender<LiveItem>,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl Live {
    /// Announces new events of an instance.
    pub fn events(&self, instance_id: i64, seq: i64) {
        let _ = self.tx.send(LiveItem::Events { instance_id, seq });
    }

    /// Announces one attempt recorded by another process.
    pub fn attempt(&self, notice: AttemptNotice) {
        let _ = self.tx.send(LiveItem::Attempt(Arc::new(notice)));
    }

    /// Announces recorded attempts.
    pub fn attempts(&self, results: &[AttemptResult]) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        for r in results {
            let _ = self.tx.send(LiveItem::Attempt(Arc::new(r.into())));
        }
    }

    /// A new watcher.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveItem> {
        self.tx.subscribe()
    }

    /// How many watchers there are.
    pub fn watchers(&self) -> usize {
        self.tx.receiver_count()
    }
}

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

use tokio::sync::broadcast;

pub use crate::store::AttemptNotice;
use crate::store::AttemptResult;

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

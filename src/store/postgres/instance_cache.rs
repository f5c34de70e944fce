//! The authentication lookup's cache on PostgreSQL.
//!
//! Every API request looks its instance up by App Key. On SQLite that is a read of a few
//! pages in the same process; on PostgreSQL it would be a round trip and a statement for
//! every request, the most frequent statement of all. So each process keeps the instances it
//! looked up, for at most [`FRESH_FOR`].
//!
//! A change to an instance (new keys, another channel, an attention flag), made by any
//! process, the CLI included, fires the `instances_changed` trigger, which announces the
//! instance's id on the `botlinkd_instances` channel when its transaction commits; every
//! process then forgets that instance, so rotated keys stop working as soon as the notice
//! arrives (normally within a millisecond of the commit); the CLI's `rotate-keys` is such a
//! change, and the process that makes a change forgets the instance at once itself. Should
//! the listening connection drop, notices may be lost, so the whole cache is forgotten when it
//! is back; and no entry outlives [`FRESH_FOR`] in any case. A lookup that was on its way while
//! a change was heard of is not cached (its [`Ticket`] counts the changes heard of before it
//! read).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::instances::{AuthKeyHash, Instance};

/// The longest an entry is trusted without a notice.
pub(super) const FRESH_FOR: Duration = Duration::from_secs(1);
/// Entries kept at most (then the cache starts afresh: a lookup is cheap, a bound is not).
const MAX_ENTRIES: usize = 10_000;

/// Instances by App Key, with when they were read.
#[derive(Default)]
pub(super) struct InstanceCache {
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_app_key: HashMap<String, (Instance, AuthKeyHash, Instant)>,
    /// Counts the changes heard of, so that a read that was on its way during one is not kept.
    changes: u64,
}

/// What a lookup needs to know before it reads (see [`InstanceCache::put`]).
#[derive(Clone, Copy)]
pub(super) struct Ticket {
    changes: u64,
    at: Instant,
}

impl InstanceCache {
    /// The instance with this App Key, if it was read within [`FRESH_FOR`].
    pub(super) fn get(&self, app_key: &str) -> Option<(Instance, AuthKeyHash)> {
        let entries = self.inner.lock().expect("instance cache lock");
        let (instance, hash, read_at) = entries.by_app_key.get(app_key)?;
        (read_at.elapsed() < FRESH_FOR).then(|| (instance.clone(), *hash))
    }

    /// Taken just before reading an instance from the database.
    pub(super) fn ticket(&self) -> Ticket {
        Ticket {
            changes: self.inner.lock().expect("instance cache lock").changes,
            at: Instant::now(),
        }
    }

    /// Remembers what a read found, unless a change was heard of since its ticket was taken
    /// (what it read may be older than the change).
    pub(super) fn put(&self, app_key: &str, instance: Instance, hash: AuthKeyHash, ticket: Ticket) {
        let mut entries = self.inner.lock().expect("instance cache lock");
        if entries.changes != ticket.changes {
            return;
        }
        if entries.by_app_key.len() >= MAX_ENTRIES {
            entries.by_app_key.clear();
        }
        entries
            .by_app_key
            .insert(app_key.to_string(), (instance, hash, ticket.at));
    }

    /// Forgets an instance that changed.
    pub(super) fn forget(&self, instance_id: i64) {
        let mut entries = self.inner.lock().expect("instance cache lock");
        entries.changes += 1;
        entries
            .by_app_key
            .retain(|_, (instance, _, _)| instance.id != instance_id);
    }

    /// Forgets everything (the notices may have been missed).
    pub(super) fn clear(&self) {
        let mut entries = self.inner.lock().expect("instance cache lock");
        entries.changes += 1;
        entries.by_app_key.clear();
    }
}

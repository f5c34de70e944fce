//! How many watchers (long-polls, streams, the portal) this process has of each instance's
//! live news, so that the store can tell other processes sharing the database which news to
//! announce (see `store::Store::watching`).
//!
//! A watcher holds a [`Watch`] for as long as it waits; the first of an instance tells the
//! store it is watched, and the last to go that it no longer is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::store::Store;

/// The watchers of each instance in this process.
pub struct Watching {
    store: Arc<dyn Store>,
    counts: Mutex<HashMap<i64, usize>>,
}

/// One watcher of an instance; it stops watching when dropped.
pub struct Watch {
    watching: Arc<Watching>,
    instance_id: i64,
}

impl Watching {
    /// No watchers yet.
    pub fn new(store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self {
            store,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// A new watcher of the instance.
    pub fn watch(self: &Arc<Self>, instance_id: i64) -> Watch {
        let mut counts = self.counts.lock().expect("watch counts lock");
        let count = counts.entry(instance_id).or_default();
        *count += 1;
        if *count == 1 {
            self.store.watching(instance_id, true);
        }
        Watch {
            watching: self.clone(),
            instance_id,
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut counts = self.watching.counts.lock().expect("watch counts lock");
        if let Some(count) = counts.get_mut(&self.instance_id) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.instance_id);
                self.watching.store.watching(self.instance_id, false);
            }
        }
    }
}

//! Who watches which instance's live news, so that a process announces to the others only
//! what somebody elsewhere is waiting for.
//!
//! **Why.** Every notice a process sends is read by every listening backend and every other
//! process. Most are wanted by nobody: an event notice that left nothing due only wakes feed
//! watchers (long-polls, streams, the portal), and an attempt notice only feeds streams and the
//! portal's monitor; a bot backend that takes its events as webhooks has neither. With three
//! processes on the 2-core bench machine, sending only due notices delivered 20 % more and
//! cost 15 % less CPU per event (docs/perf-log.md).
//!
//! **How.** A process with at least one watcher of an instance (`Store::watching`, counted by
//! `crate::watching`) keeps a row `(instance_id, process, until_ms)` in the unlogged table
//! `watchers`: written at once when the first watcher comes, together with a notice on
//! `botlinkd_watch` (`<origin>:<instance_id>`) that tells the other processes without waiting
//! for their next look; renewed every [`RENEW_EVERY`] for [`ROW_LIFETIME`]; deleted at the
//! next renewal after the last watcher left, and left to expire when the process dies. Every
//! [`LOOK_EVERY`] each process reads which instances other processes watch ([`RemoteWatch`]).
//! The notifier then sends an event notice that is not due only for an instance watched
//! elsewhere, and `PgStore::complete` announces attempts only of such instances. Due notices
//! (a delivery was left for the claim loops) always go.
//!
//! **Nothing is missed.** An event notice held back is remembered (the newest position per
//! instance), and sent the moment the instance turns out to be watched elsewhere: a watcher
//! that registers, reads the feed and then waits still hears of an event committed after its
//! read by a process that had not heard of it yet. Until a process has read the table once
//! (at start, or after a failed look) it sends everything, as it does while the database is
//! away. Attempts missed in that moment are only the monitor's; the attempts API has them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::mpsc;

use super::notifier::Notifier;

/// The channel on which a process says it has begun to watch an instance.
pub(super) const WATCH_CHANNEL: &str = "botlinkd_watch";
/// How often a process reads which instances the others watch.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// How often a process renews its rows (and deletes those of instances it stopped watching).
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How long a row lasts unless renewed: a dead process's watch ends after this.
const ROW_LIFETIME: Duration = Duration::from_secs(30);

/// The instances other processes watch, as last read.
#[derive(Default)]
pub(super) struct RemoteWatch {
    /// `None` until read (and after a failed read): everything is wanted then.
    instances: RwLock<Option<HashSet<i64>>>,
}

impl RemoteWatch {
    /// Whether another process may be waiting for news of the instance.
    pub(super) fn wants(&self, instance_id: i64) -> bool {
        match &*self.instances.read().expect("remote watch lock") {
            Some(instances) => instances.contains(&instance_id),
            None => true,
        }
    }

    /// Notes an instance another process just began to watch; answers whether it was news.
    pub(super) fn add(&self, instance_id: i64) -> bool {
        match &mut *self.instances.write().expect("remote watch lock") {
            Some(instances) => instances.insert(instance_id),
            None => false,
        }
    }

    /// Replaces the set with one just read (`None`: the read failed); answers the instances
    /// that were not wanted before and are now.
    fn replace(&self, read: Option<HashSet<i64>>) -> Vec<i64> {
        let mut instances = self.instances.write().expect("remote watch lock");
        let news = match (&*instances, &read) {
            (Some(before), Some(now)) => now.difference(before).copied().collect(),
            _ => Vec::new(),
        };
        *instances = read;
        news
    }
}

#[cfg(test)]
impl RemoteWatch {
    /// Sets the instances watched elsewhere, as a read would.
    pub(super) fn replace_for_test(&self, instances: impl IntoIterator<Item = i64>) {
        self.replace(Some(instances.into_iter().collect()));
    }
}

/// A notice on [`WATCH_CHANNEL`] from another process: the instance it began to watch.
pub(super) fn parse_watch_notice(payload: &str, own: &str) -> Option<i64> {
    let (origin, instance) = payload.rsplit_once(':')?;
    (origin != own).then(|| instance.parse().ok()).flatten()
}

/// The handle `PgStore` passes this process's watches to; the keeping task ends with it.
pub(super) struct Watches {
    changes: mpsc::UnboundedSender<(i64, bool)>,
}

impl Watches {
    /// Starts the task that keeps this process's rows and reads the others'.
    pub(super) fn start(pool: PgPool, origin: String, remote: Arc<RemoteWatch>, notifier: Arc<Notifier>) -> Self {
        let (changes, queue) = mpsc::unbounded_channel();
        tokio::spawn(keep(
            Keeper {
                pool,
                origin,
                remote,
                notifier,
            },
            queue,
        ));
        Self { changes }
    }

    /// This process began (`true`) or stopped watching an instance.
    pub(super) fn watching(&self, instance_id: i64, on: bool) {
        let _ = self.changes.send((instance_id, on));
    }
}

struct Keeper {
    pool: PgPool,
    origin: String,
    remote: Arc<RemoteWatch>,
    notifier: Arc<Notifier>,
}

async fn keep(keeper: Keeper, mut changes: mpsc::UnboundedReceiver<(i64, bool)>) {
    let mut local: HashMap<i64, bool> = HashMap::new();
    let mut look = tokio::time::interval(LOOK_EVERY);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut renew = tokio::time::interval(RENEW_EVERY);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            change = changes.recv() => {
                let Some((instance_id, on)) = change else { return };
                let was = local.insert(instance_id, on).unwrap_or(false);
                if on
                    && !was
                    && let Err(error) = keeper.announce(instance_id).await
                {
                    tracing::warn!(error = %error, instance_id, "announcing a watch failed; the next renewal writes it");
                }
            }
            _ = look.tick() => {
                let read = keeper.look().await.map_err(|error| {
                    tracing::warn!(error = %error, "reading the other processes' watches failed; announcing everything meanwhile");
                }).ok();
                let news = keeper.remote.replace(read);
                keeper.notifier.watched(news);
            }
            _ = renew.tick() => {
                local.retain(|_, on| *on);
                let watched: Vec<i64> = local.keys().copied().collect();
                if let Err(error) = keeper.renew(&watched).await {
                    tracing::warn!(error = %error, "renewing this process's watches failed");
                }
            }
        }
    }
}

impl Keeper {
    fn until_ms(&self) -> i64 {
        crate::clock::Clock::system().now_ms() + ROW_LIFETIME.as_millis() as i64
    }

    /// Writes the row of an instance this process began to watch and tells the others.
    async fn announce(&self, instance_id: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "WITH kept AS ( \
               INSERT INTO watchers (instance_id, process, until_ms) VALUES ($1, $2, $3) \
               ON CONFLICT (instance_id, process) DO UPDATE SET until_ms = EXCLUDED.until_ms \
               RETURNING instance_id) \
             SELECT pg_notify($4, $2 || ':' || instance_id) FROM kept",
        )
        .bind(instance_id)
        .bind(&self.origin)
        .bind(self.until_ms())
        .bind(WATCH_CHANNEL)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Renews this process's rows, deletes those it no longer needs and other processes'
    /// that expired (never a row the same statement renews).
    async fn renew(&self, watched: &[i64]) -> Result<(), sqlx::Error> {
        let until = self.until_ms();
        sqlx::query(
            "WITH gone AS ( \
               DELETE FROM watchers WHERE CASE WHEN process = $2 THEN instance_id <> ALL($1) \
                                               ELSE until_ms < $3 - $4 END) \
             INSERT INTO watchers (instance_id, process, until_ms) SELECT unnest($1::INT8[]), $2, $3 \
             ON CONFLICT (instance_id, process) DO UPDATE SET until_ms = EXCLUDED.until_ms",
        )
        .bind(watched)
        .bind(&self.origin)
        .bind(until)
        .bind(ROW_LIFETIME.as_millis() as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The instances other processes watch now.
    async fn look(&self) -> Result<HashSet<i64>, sqlx::Error> {
        let now = crate::clock::Clock::system().now_ms();
        let rows: Vec<i64> =
            sqlx::query_scalar("SELECT DISTINCT instance_id FROM watchers WHERE process <> $1 AND until_ms > $2")
                .bind(&self.origin)
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_is_wanted_until_the_table_was_read() {
        let remote = RemoteWatch::default();
        assert!(remote.wants(7));
        assert!(!remote.add(7), "nothing is news while everything is wanted");
        assert!(remote.replace(Some(HashSet::from([3]))).is_empty());
        assert!(remote.wants(3) && !remote.wants(7));
        assert!(remote.add(7));
        assert!(!remote.add(7));
        assert_eq!(remote.replace(Some(HashSet::from([3, 9]))), [9]);
        assert!(!remote.wants(7));
        assert!(remote.replace(None).is_empty());
        assert!(remote.wants(7), "a failed read announces everything");
    }

    #[test]
    fn a_watch_notice_names_another_process_and_an_instance() {
        assert_eq!(parse_watch_notice("bl_abc:42", "bl_me"), Some(42));
        assert_eq!(parse_watch_notice("bl_me:42", "bl_me"), None);
        assert_eq!(parse_watch_notice("garbage", "bl_me"), None);
        assert_eq!(parse_watch_notice("bl_abc:x", "bl_me"), None);
    }
}

//! This process's announcements to the other processes (`NOTIFY`), sent after the writes they
//! announce have committed, on a connection of their own.
//!
//! **Why not inside the write.** A transaction that calls `NOTIFY` takes a cluster-wide lock at
//! commit and holds it until its commit record is flushed to disk (PostgreSQL keeps the
//! notification queue in commit order that way). Every notifying transaction therefore commits
//! one after the other, each waiting for its own WAL flush: the ingest batches and the
//! completions of one process could not share a flush, and those of several processes queued
//! behind one another. The writes of the delivery path now commit without notifying, and the
//! notices follow from here.
//!
//! **How.** Writers queue what they committed ([`Notifier::events`], [`Notifier::attempts`])
//! and go on. One task takes everything queued, merges the event notices of one instance (the
//! newest position; due if any write left a delivery due), and sends them all in one
//! statement, autocommitted, on a connection with `synchronous_commit = off`: the notices are
//! wake-ups, not data, so their commit need not wait for a flush, and the lock is held for
//! microseconds. While one statement is on its way, the next notices gather.
//!
//! **What is held back.** An event notice that left nothing due, for an instance no other
//! process watches, is not sent: the newest position of each such instance is kept and sent
//! when the instance becomes watched elsewhere (see `super::watchers`). Attempt notices of such
//! instances are never queued (`PgStore::complete`).
//!
//! **What can be lost.** A notice is sent only after its write committed, so it never runs
//! ahead of its data. A send that fails or takes longer than [`SEND_TIMEOUT`] (the connection
//! was lost, PostgreSQL restarted, the network went silent) is tried once more on a new
//! connection. Lost are the notices of a process that dies (or stops) between a commit and its
//! notice, of a write whose commit succeeded but whose answer was lost with its connection
//! (it is reported as failed, see `super::ingest`), and of a batch whose second try fails too
//! (logged). Then the other processes' engines still poll at least every 0.5 s, and their feed
//! watchers (long-polls, streams) catch up at the instance's next notice, as when a listener
//! reconnects; on a quiet instance that can be a while. The connection shows in
//! `pg_stat_activity` as `botlinkd-notifier`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::mpsc;

use super::notices::{ATTEMPTS_CHANNEL, EVENTS_CHANNEL};
use super::watchers::RemoteWatch;

/// How the notifier's connection shows in `pg_stat_activity`.
pub(super) const APPLICATION_NAME: &str = "botlinkd-notifier";

/// The longest a send (with its connect) may take before its connection is given up: a
/// connection that died silently would otherwise hold every later notice until TCP notices.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// The most queued notices sent in one statement.
const MAX_BATCH: usize = 1024;

/// One committed write's news.
enum Notice {
    /// An instance's newest position, and whether the write left a delivery due for a claim
    /// loop (not `due`: every head went to the writing process's engine).
    Event { instance_id: i64, seq: i64, due: bool },
    /// A notice ready for `botlinkd_attempts`.
    Attempts(String),
    /// Instances another process began to watch: their held-back event notices go now.
    Watched(Vec<i64>),
}

/// The handle writers queue notices on; the sending task ends when it is dropped.
pub(super) struct Notifier {
    queue: mpsc::UnboundedSender<Notice>,
}

impl Notifier {
    /// Starts the sending task; it connects with `options` when it first has something to
    /// send. Event notices that are not due go only for instances `remote` wants.
    pub(super) fn start(options: PgConnectOptions, remote: Arc<RemoteWatch>) -> Self {
        let (queue, notices) = mpsc::unbounded_channel();
        tokio::spawn(send_all(options, remote, notices));
        Self { queue }
    }

    /// Sends the event notices held back for these instances, now watched elsewhere.
    pub(super) fn watched(&self, instances: Vec<i64>) {
        if !instances.is_empty() {
            let _ = self.queue.send(Notice::Watched(instances));
        }
    }

    /// Announces committed events: `(instance_id, newest seq, due)` per instance.
    pub(super) fn events(&self, written: impl IntoIterator<Item = (i64, i64, bool)>) {
        for (instance_id, seq, due) in written {
            let _ = self.queue.send(Notice::Event { instance_id, seq, due });
        }
    }

    /// Announces committed attempts (payloads made by `super::notices::attempt_payloads`).
    pub(super) fn attempts(&self, payloads: Vec<String>) {
        for payload in payloads {
            let _ = self.queue.send(Notice::Attempts(payload));
        }
    }
}

async fn send_all(options: PgConnectOptions, remote: Arc<RemoteWatch>, mut notices: mpsc::UnboundedReceiver<Notice>) {
    let options = options
        .options([("synchronous_commit", "off")])
        .application_name(APPLICATION_NAME);
    let mut connection: Option<PgConnection> = None;
    let mut held = HeldBack::default();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while notices.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (channels, payloads) = payloads(held.sift(batch.drain(..), &remote).into_iter());
        if payloads.is_empty() {
            continue;
        }
        // A connection that was lost since the last batch fails the first try; the second
        // goes out on a new one.
        for attempt in 1..=2 {
            let sent = tokio::time::timeout(SEND_TIMEOUT, send(&options, &mut connection, &channels, &payloads))
                .await
                .unwrap_or_else(|_| Err(sqlx::Error::Io(std::io::ErrorKind::TimedOut.into())));
            match sent {
                Ok(()) => break,
                Err(error) => {
                    if let Some(conn) = connection.take() {
                        let _ = conn.close().await;
                    }
                    if attempt == 2 {
                        tracing::warn!(error = %error, notices = payloads.len(), "postgres notices not sent");
                    }
                }
            }
        }
    }
}

/// Sends one batch of notices, connecting first if need be.
async fn send(
    options: &PgConnectOptions,
    connection: &mut Option<PgConnection>,
    channels: &[&str],
    payloads: &[String],
) -> Result<(), sqlx::Error> {
    let conn = match connection {
        Some(conn) => conn,
        None => connection.insert(options.connect().await?),
    };
    sqlx::query("SELECT pg_notify(c, p) FROM unnest($1::TEXT[], $2::TEXT[]) AS n(c, p)")
        .bind(channels)
        .bind(payloads)
        .execute(conn)
        .await?;
    Ok(())
}

/// The newest position of each instance whose event notice was held back because no other
/// process watched it (see `super::watchers`), until it is watched or forgotten.
#[derive(Default)]
struct HeldBack {
    newest: HashMap<i64, i64>,
}

impl HeldBack {
    /// The most instances remembered; beyond it the oldest memories are dropped wholesale,
    /// which only makes a watcher that registers in that moment wait for its next notice.
    const MAX: usize = 65_536;

    /// The notices of a batch that go out: due event notices, event notices of instances
    /// another process watches, attempts, and the held-back notices of instances that became
    /// watched. The rest is held back.
    fn sift(&mut self, batch: impl Iterator<Item = Notice>, remote: &RemoteWatch) -> Vec<Notice> {
        let mut out = Vec::new();
        for notice in batch {
            match notice {
                Notice::Event { instance_id, seq, due } if !due && !remote.wants(instance_id) => {
                    if self.newest.len() >= Self::MAX {
                        self.newest.clear();
                    }
                    let newest = self.newest.entry(instance_id).or_insert(seq);
                    *newest = (*newest).max(seq);
                }
                Notice::Watched(instances) => {
                    for instance_id in instances {
                        if let Some(seq) = self.newest.remove(&instance_id) {
                            out.push(Notice::Event {
                                instance_id,
                                seq,
                                due: false,
                            });
                        }
                    }
                }
                Notice::Event { instance_id, .. } => {
                    // A higher position held back goes with it (the batch's notices of one
                    // instance merge into the newest).
                    if let Some(seq) = self.newest.remove(&instance_id) {
                        out.push(Notice::Event {
                            instance_id,
                            seq,
                            due: false,
                        });
                    }
                    out.push(notice);
                }
                notice => out.push(notice),
            }
        }
        out
    }
}

/// The channels and payloads of a batch of notices: one event notice per instance first, then
/// the attempts in order (so a watcher elsewhere reads an event before its attempts, as the
/// writes happened).
fn payloads(batch: impl Iterator<Item = Notice>) -> (Vec<&'static str>, Vec<String>) {
    let mut newest: BTreeMap<i64, (i64, bool)> = BTreeMap::new();
    let mut attempts = Vec::new();
    for notice in batch {
        match notice {
            Notice::Event { instance_id, seq, due } => {
                let entry = newest.entry(instance_id).or_insert((seq, due));
                *entry = (entry.0.max(seq), entry.1 || due);
            }
            Notice::Attempts(payload) => attempts.push(payload),
            Notice::Watched(_) => {}
        }
    }
    let events = newest
        .into_iter()
        .map(|(instance_id, (seq, due))| (EVENTS_CHANNEL, event_payload(instance_id, seq, due)));
    events
        .chain(attempts.into_iter().map(|p| (ATTEMPTS_CHANNEL, p)))
        .unzip()
}

/// An event notice: `instance:seq`, or `instance:seq:handed` (see `super::notices::parse_event_notice`).
fn event_payload(instance_id: i64, seq: i64, due: bool) -> String {
    if due {
        format!("{instance_id}:{seq}")
    } else {
        format!("{instance_id}:{seq}:handed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwatched_event_notices_are_held_back_until_their_instance_is_watched() {
        let remote = RemoteWatch::default();
        let mut held = HeldBack::default();
        let event = |instance_id, seq, due| Notice::Event { instance_id, seq, due };
        let sent = |notices: Vec<Notice>| payloads(notices.into_iter()).1;
        // Unread: everything goes.
        assert_eq!(
            sent(held.sift([event(1, 5, false)].into_iter(), &remote)),
            ["1:5:handed"]
        );
        remote.replace_for_test([2]);
        let batch = [
            event(1, 6, false),
            event(1, 9, false),
            event(2, 7, false),
            event(3, 8, true),
        ];
        assert_eq!(sent(held.sift(batch.into_iter(), &remote)), ["2:7:handed", "3:8"]);
        // Instance 1 becomes watched: its newest held-back position goes.
        let batch = [Notice::Watched(vec![1, 4])];
        assert_eq!(sent(held.sift(batch.into_iter(), &remote)), ["1:9:handed"]);
        assert!(sent(held.sift([Notice::Watched(vec![1])].into_iter(), &remote)).is_empty());
        // A due notice takes a higher held-back position with it.
        held.sift([event(5, 12, false)].into_iter(), &remote);
        assert_eq!(sent(held.sift([event(5, 10, true)].into_iter(), &remote)), ["5:12"]);
    }

    #[test]
    fn event_notices_of_one_instance_merge_into_the_newest_and_due_if_any_was_and_go_first() {
        let batch = vec![
            Notice::Event {
                instance_id: 7,
                seq: 30,
                due: false,
            },
            Notice::Attempts("origin\n[]".into()),
            Notice::Event {
                instance_id: 7,
                seq: 10,
                due: true,
            },
            Notice::Event {
                instance_id: 3,
                seq: 5,
                due: false,
            },
        ];
        let (channels, payloads) = payloads(batch.into_iter());
        assert_eq!(channels, [EVENTS_CHANNEL, EVENTS_CHANNEL, ATTEMPTS_CHANNEL]);
        assert_eq!(payloads, ["3:5:handed", "7:30", "origin\n[]"]);
    }
}

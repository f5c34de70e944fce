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

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::mpsc;

use super::{ATTEMPTS_CHANNEL, EVENTS_CHANNEL};

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
}

/// The handle writers queue notices on; the sending task ends when it is dropped.
pub(super) struct Notifier {
    queue: mpsc::UnboundedSender<Notice>,
}

impl Notifier {
    /// Starts the sending task; it connects with `options` when it first has something to
    /// send.
    pub(super) fn start(options: PgConnectOptions) -> Self {
        let (queue, notices) = mpsc::unbounded_channel();
        tokio::spawn(send_all(options, notices));
        Self { queue }
    }

    /// Announces committed events: `(instance_id, newest seq, due)` per instance.
    pub(super) fn events(&self, written: impl IntoIterator<Item = (i64, i64, bool)>) {
        for (instance_id, seq, due) in written {
            let _ = self.queue.send(Notice::Event { instance_id, seq, due });
        }
    }

    /// Announces committed attempts (payloads made by `super::attempt_payloads`).
    pub(super) fn attempts(&self, payloads: Vec<String>) {
        for payload in payloads {
            let _ = self.queue.send(Notice::Attempts(payload));
        }
    }
}

async fn send_all(options: PgConnectOptions, mut notices: mpsc::UnboundedReceiver<Notice>) {
    let options = options
        .options([("synchronous_commit", "off")])
        .application_name(APPLICATION_NAME);
    let mut connection: Option<PgConnection> = None;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while notices.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (channels, payloads) = payloads(batch.drain(..));
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
        }
    }
    let events = newest
        .into_iter()
        .map(|(instance_id, (seq, due))| (EVENTS_CHANNEL, event_payload(instance_id, seq, due)));
    events
        .chain(attempts.into_iter().map(|p| (ATTEMPTS_CHANNEL, p)))
        .unzip()
}

/// An event notice: `instance:seq`, or `instance:seq:handed` (see `super::parse_event_notice`).
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

//! Which processes are alive, and taking over the leased work of one that is not.
//!
//! **Why.** A process that dies (killed, out of memory, its machine gone) leaves its leased
//! deliveries behind: those it was attempting, and those its last writes handed to its own
//! engine. Each is the head of its conversation's queue, so the conversation's later events
//! wait with it. Its Meta sends (each the head of its conversation's sends) and media
//! downloads in progress are leased the same way. Leases are long (`--delivery-lease`, 30 s by default, at least four times the
//! attempt timeout) because a live process must never lose a lease it is still using; waiting
//! out the lease was the whole failover time.
//!
//! **How.** Each process has a number, random, chosen when its store opens (it is also its
//! `attempt_stats` writer). Every connection of the process carries it as the setting
//! `botlinkd.process`, and every statement that leases a delivery, a Meta send or a media
//! download writes it to the row's `lease_owner` through `botlinkd_process()` (migration
//! `0012`); whatever ends a lease clears it (or deletes the row). The process holds the session advisory lock `(LIVENESS_SPACE, number)` on
//! a connection of its own for its whole life, and has a row in `processes`. PostgreSQL lets
//! go of the lock when that connection closes: at once when the process is killed (the kernel
//! closes its sockets), and for a machine that vanished when the connection times out.
//!
//! Every [`LOOK_EVERY`], on that same connection, each process tries the lock of every other
//! registered process (`pg_try_advisory_xact_lock`, released with the statement). A lock it
//! gets belongs to a process that is gone: the row is marked `gone_since`, and whatever is
//! leased to a gone process loses its lease and is due now, for any process's claim loops
//! (the engine's looks at least every 0.5 s). Gone rows are swept again on every look for
//! [`SWEEP_FOR`] (a statement the dead process had already sent may still commit a lease just
//! after its connection closed) and then deleted. Two processes looking at once cannot both
//! take one lock, so one of them does the marking; sweeping twice finds nothing the second
//! time. A failed look, or a lost connection, is logged and tried again at the next look, on
//! a new connection that takes the lock again and revives the row.
//!
//! **What it cannot tell.** A process that is alive but has lost its liveness connection (the
//! database restarted, a network cut) looks gone until it takes the lock again; its leases
//! are then released and its deliveries may go out twice, with the same `webhook-id`, which
//! at-least-once allows, and its late outcomes change nothing but the attempts list (the
//! lease they carry is not the row's any more). A process that never registered (its first
//! registration failed) has its leases wait out their time, as before.

use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use tokio::sync::oneshot;

use super::outbox::PAUSED;
use crate::clock::{Clock, Millis};

/// The advisory-lock space of the liveness locks (the second key is the process's number).
const LIVENESS_SPACE: i32 = super::LOCK_SPACE + 1;
/// The setting every connection of a process carries its number in.
pub(super) const PROCESS_SETTING: &str = "botlinkd.process";
/// How often a process looks for processes that are gone.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// How long a gone process's leases are swept after it was found gone.
const SWEEP_FOR: Duration = Duration::from_secs(10);

/// This process's registration; the task that keeps it ends when it is dropped, and the lock
/// goes with its connection.
pub(super) struct Liveness {
    _stop: oneshot::Sender<()>,
}

impl Liveness {
    /// Registers this process (a failure is logged and retried by the task) and starts
    /// looking for processes that are gone.
    pub(super) async fn start(options: PgConnectOptions, number: i32) -> Self {
        let connection = match register(&options, number).await {
            Ok(connection) => Some(connection),
            Err(error) => {
                tracing::warn!(error = %error, "registering this process failed; trying again in a second");
                None
            }
        };
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(keep(options, number, connection, stopped));
        Self { _stop: stop }
    }
}

async fn keep(
    options: PgConnectOptions,
    number: i32,
    mut connection: Option<PgConnection>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut look = tokio::time::interval(LOOK_EVERY);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = look.tick() => {}
        }
        let live = match connection.as_mut() {
            Some(live) => live,
            None => match register(&options, number).await {
                Ok(fresh) => connection.insert(fresh),
                Err(error) => {
                    tracing::warn!(error = %error, "registering this process failed; trying again in a second");
                    continue;
                }
            },
        };
        if let Err(error) = take_over(live, number, Clock::system().now_ms()).await {
            tracing::warn!(error = %error, "looking for processes that are gone failed; reconnecting");
            connection = None;
        }
    }
}

/// Why a registration failed.
#[derive(Debug, thiserror::Error)]
enum RegisterError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("the liveness lock of process {0} is held elsewhere")]
    Held(i32),
}

/// Opens the liveness connection, takes this process's lock on it and (re)writes its row.
async fn register(options: &PgConnectOptions, number: i32) -> Result<PgConnection, RegisterError> {
    let mut connection = PgConnection::connect_with(options).await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(LIVENESS_SPACE)
        .bind(number)
        .fetch_one(&mut connection)
        .await?;
    if !locked {
        // Another process looking at this moment, or this process's previous connection not
        // yet closed by the server.
        return Err(RegisterError::Held(number));
    }
    sqlx::query(
        "INSERT INTO processes (number, started_at) VALUES ($1, $2) \
         ON CONFLICT (number) DO UPDATE SET gone_since = NULL",
    )
    .bind(number)
    .bind(Clock::system().now_ms())
    .execute(&mut connection)
    .await?;
    Ok(connection)
}

/// Marks the processes whose lock is free as gone, releases the leases of every gone process,
/// and forgets those gone for longer than [`SWEEP_FOR`].
async fn take_over(connection: &mut PgConnection, number: i32, now: Millis) -> Result<(), sqlx::Error> {
    // The marked rows are not visible to the statement's own read of `processes`, so each
    // gone process is answered once.
    let gone: Vec<(i32, bool)> = sqlx::query_as(
        "WITH found AS ( \
           UPDATE processes SET gone_since = $2 \
           WHERE number <> $1 AND gone_since IS NULL AND pg_try_advisory_xact_lock($3, number) \
           RETURNING number) \
         SELECT number, TRUE FROM found UNION ALL SELECT number, FALSE FROM processes WHERE gone_since IS NOT NULL",
    )
    .bind(number)
    .bind(now)
    .bind(LIVENESS_SPACE)
    .fetch_all(&mut *connection)
    .await?;
    if gone.is_empty() {
        return Ok(());
    }
    // Every process that ends is found gone, a command-line run too; only leases left
    // behind are worth a warning.
    for (process, _) in gone.iter().filter(|(_, found_now)| *found_now) {
        tracing::debug!(process, "a process is gone (its liveness lock is free)");
    }
    let numbers: Vec<i32> = gone.iter().map(|(process, _)| *process).collect();
    // Paused deliveries are never leased; leaving them out keeps the scan to due and leased
    // heads. Meta sends and media downloads keep their lease in `next_at`.
    let (deliveries, sends, fetches): (i64, i64, i64) = sqlx::query_as(
        "WITH deliveries AS ( \
           UPDATE deliveries SET lease_until = NULL, lease_owner = NULL, next_at = LEAST(next_at, $2) \
           WHERE state = 1 AND next_at < $3 AND lease_owner = ANY($1) RETURNING 1), \
         sends AS ( \
           UPDATE channel_sends SET lease_owner = NULL, next_at = LEAST(next_at, $2) \
           WHERE next_at > $2 AND lease_owner = ANY($1) RETURNING 1), \
         fetches AS ( \
           UPDATE media_fetches SET lease_owner = NULL, next_at = LEAST(next_at, $2) \
           WHERE next_at > $2 AND lease_owner = ANY($1) RETURNING 1) \
         SELECT (SELECT count(*) FROM deliveries), (SELECT count(*) FROM sends), (SELECT count(*) FROM fetches)",
    )
    .bind(&numbers)
    .bind(now)
    .bind(PAUSED)
    .fetch_one(&mut *connection)
    .await?;
    if deliveries + sends + fetches > 0 {
        tracing::warn!(
            processes = ?numbers,
            deliveries,
            sends,
            fetches,
            "took over work leased to processes that are gone; it is due again now"
        );
    }
    sqlx::query("DELETE FROM processes WHERE gone_since < $1")
        .bind(now - SWEEP_FOR.as_millis() as Millis)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

//! Which serving processes are alive, and taking over the leased work of one that is not.
//!
//! **Why.** A process that dies (killed, out of memory, its machine gone) leaves its leased
//! deliveries behind: those it was attempting, and those its last writes handed to its own
//! engine. Each is the head of its conversation's queue, so the conversation's later events
//! wait with it. Its Meta sends (each the head of its conversation's sends) and media
//! downloads in progress are leased the same way. Leases are long (`--delivery-lease`, 30 s
//! by default, at least four times the attempt timeout) because a live process must never
//! lose a lease it is still using; waiting out the lease was the whole failover time.
//!
//! **How.** Each process has a number, random, chosen when its store opens (it is also its
//! `attempt_stats` writer). Every connection of the process carries it as the setting
//! `botlinkd.process`, and every statement that leases a delivery, a Meta send or a media
//! download writes it to the row's `lease_owner` through `botlinkd_process()` (migration
//! `0012`); whatever ends a lease clears it (or deletes the row). A serving process
//! (`Store::start_serving`; command-line runs never register) holds the session advisory
//! lock `(LIVENESS_SPACE, number)` on a connection of its own (`application_name`
//! `botlinkd-liveness`) and has a row in `processes` (number, host, pid, version). PostgreSQL
//! lets go of the lock when that connection closes: at once when the process is killed (the
//! kernel closes its sockets), and for a machine that vanished when the connection times out.
//!
//! Every [`LOOK_EVERY`] each process checks its own lock connection (and registers again on a
//! new one if it broke) and then, on its pool, tries the lock of every other registered
//! process (`pg_try_advisory_xact_lock`, let go with the statement). A process whose lock
//! has been free at every look for [`GRACE`] is gone: in one transaction that holds its lock
//! (so it cannot register again meanwhile), its row is marked `gone_since` and whatever is
//! leased to it loses its lease and is due now (paused, for a disabled endpoint), for any
//! process's claim loops (the engine's looks at least every 0.5 s). Rows already locked by
//! someone else are skipped (`SKIP LOCKED`: the sweep never waits, so it takes no place in
//! the lock order of `super`) and caught by the next look: gone rows are swept again on every
//! look for [`SWEEP_FOR`] (a statement the dead process had already sent may still commit a
//! lease just after its connection closed), and then deleted.
//!
//! **The grace.** A process looks only once it has itself held its lock for [`GRACE`], and a
//! lock must be free for that long before its owner counts as gone. After a PostgreSQL restart
//! every process registers again within a second or two, well inside it; a process that stays
//! cut off longer than that is treated as gone, its work is done again by the others (the same
//! `webhook-id`; a Meta message may reach the customer twice), and its late outcomes change
//! nothing but the attempts list, since the lease they carry is no longer the row's.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use sqlx::{Connection, Row};
use tokio::sync::oneshot;

use super::outbox::PAUSED;
use crate::clock::{Clock, Millis};
use crate::store::TakenOver;

/// The advisory-lock space of the liveness locks (the second key is the process's number).
const LIVENESS_SPACE: i32 = super::LOCK_SPACE + 1;
/// The setting every connection of a process carries its number in.
pub(super) const PROCESS_SETTING: &str = "botlinkd.process";
/// The liveness connection's name in `pg_stat_activity`.
const APPLICATION_NAME: &str = "botlinkd-liveness";
/// How often a process checks its lock and looks for processes that are gone.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// How long a lock must be free before its process counts as gone, and how long a process
/// holds its own before it judges others.
const GRACE: Duration = Duration::from_secs(5);
/// How long a gone process's leases are swept after it was found gone.
const SWEEP_FOR: Duration = Duration::from_secs(10);

/// What this process has taken over from processes that were gone, since it started (for
/// `/metrics`).
#[derive(Default)]
pub(super) struct TakeOvers {
    deliveries: AtomicU64,
    sends: AtomicU64,
    downloads: AtomicU64,
}

impl TakeOvers {
    /// The counts so far.
    pub(super) fn counts(&self) -> TakenOver {
        TakenOver {
            deliveries: self.deliveries.load(Ordering::Relaxed),
            sends: self.sends.load(Ordering::Relaxed),
            downloads: self.downloads.load(Ordering::Relaxed),
        }
    }

    fn add(&self, deliveries: i64, sends: i64, downloads: i64) {
        self.deliveries.fetch_add(deliveries.max(0) as u64, Ordering::Relaxed);
        self.sends.fetch_add(sends.max(0) as u64, Ordering::Relaxed);
        self.downloads.fetch_add(downloads.max(0) as u64, Ordering::Relaxed);
    }
}

/// This process's registration; the task that keeps it ends when it is dropped, and the lock
/// goes with its connection.
pub(super) struct Liveness {
    _stop: oneshot::Sender<()>,
}

impl Liveness {
    /// Registers this process (a failure is logged and tried again every second) and starts
    /// looking for processes that are gone.
    pub(super) async fn start(
        pool: PgPool,
        options: PgConnectOptions,
        number: i32,
        taken_over: Arc<TakeOvers>,
    ) -> Self {
        let mut keeper = Keeper {
            pool,
            taken_over,
            options: options.application_name(APPLICATION_NAME),
            number,
            lock: None,
            suspects: HashMap::new(),
            failing: false,
        };
        keeper.hold_lock().await;
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(keeper.run(stopped));
        Self { _stop: stop }
    }
}

struct Keeper {
    pool: PgPool,
    /// What this process has taken over.
    taken_over: Arc<TakeOvers>,
    options: PgConnectOptions,
    number: i32,
    /// The connection holding this process's lock, and since when.
    lock: Option<(PgConnection, Instant)>,
    /// Other processes whose lock was free at every look since the time given.
    suspects: HashMap<i32, Instant>,
    /// Whether the last registration failed (so a long outage is not logged every second).
    failing: bool,
}

impl Keeper {
    async fn run(mut self, mut stopped: oneshot::Receiver<()>) {
        let mut look = tokio::time::interval(LOOK_EVERY);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                _ = look.tick() => {}
            }
            if !self.hold_lock().await {
                continue;
            }
            if let Err(error) = self.look().await {
                tracing::warn!(error = %error, "looking for processes that are gone failed; trying again in a second");
            }
        }
    }

    /// Makes sure this process holds its lock, registering again on a new connection if the
    /// old one broke; answers whether it has held it for [`GRACE`].
    async fn hold_lock(&mut self) -> bool {
        if let Some((connection, _)) = &mut self.lock
            && let Err(error) = connection.ping().await
        {
            tracing::warn!(error = %error, process = self.number, "the liveness connection broke; registering again");
            self.lock = None;
        }
        if self.lock.is_none() {
            match register(&self.options, self.number).await {
                Ok(connection) => {
                    tracing::info!(
                        process = self.number,
                        "registered as a serving process (liveness lock held)"
                    );
                    self.lock = Some((connection, Instant::now()));
                    self.failing = false;
                }
                Err(error) => {
                    if !self.failing {
                        tracing::warn!(error = %error, process = self.number, "registering this process failed; trying again every second");
                    }
                    self.failing = true;
                    return false;
                }
            }
        }
        self.lock.as_ref().is_some_and(|(_, since)| since.elapsed() >= GRACE)
    }

    /// Notes whose locks are free, and takes over from those free for [`GRACE`] and from
    /// those found gone before.
    async fn look(&mut self) -> Result<(), sqlx::Error> {
        let rows = sqlx::query(
            "SELECT number, gone_since IS NOT NULL AS gone FROM processes \
             WHERE number <> $1 AND (gone_since IS NOT NULL OR pg_try_advisory_xact_lock($2, number))",
        )
        .bind(self.number)
        .bind(LIVENESS_SPACE)
        .fetch_all(&self.pool)
        .await?;
        let mut free = Vec::new();
        let mut any_gone = false;
        for row in &rows {
            if row.try_get::<bool, _>("gone")? {
                any_gone = true;
            } else {
                free.push(row.try_get::<i32, _>("number")?);
            }
        }
        let now = Instant::now();
        self.suspects.retain(|number, _| free.contains(number));
        for number in &free {
            self.suspects.entry(*number).or_insert(now);
        }
        let due: Vec<i32> = self
            .suspects
            .iter()
            .filter(|(_, since)| since.elapsed() >= GRACE)
            .map(|(number, _)| *number)
            .collect();
        if due.is_empty() && !any_gone {
            return Ok(());
        }
        let (deliveries, sends, downloads) = take_over(&self.pool, &due, Clock::system().now_ms()).await?;
        self.taken_over.add(deliveries, sends, downloads);
        self.suspects.retain(|number, _| !due.contains(number));
        Ok(())
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
    let row = sqlx::query("SELECT pg_try_advisory_lock($1, $2) AS locked, botlinkd_process() AS carried")
        .bind(LIVENESS_SPACE)
        .bind(number)
        .fetch_one(&mut connection)
        .await?;
    if !row.try_get::<bool, _>("locked")? {
        // Another process taking over this one at this moment, or this process's previous
        // connection not yet closed by the server.
        return Err(RegisterError::Held(number));
    }
    if row.try_get::<Option<i32>, _>("carried")? != Some(number) {
        tracing::warn!(
            process = number,
            "the connection setting botlinkd.process does not reach PostgreSQL (a pooler that drops the \
             `options` startup parameter?): leases carry no owner, so a dead process's deliveries wait \
             for their leases to end"
        );
    }
    sqlx::query(
        "INSERT INTO processes (number, started_at, host, pid, version) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (number) DO UPDATE SET gone_since = NULL",
    )
    .bind(number)
    .bind(Clock::system().now_ms())
    .bind(host_name())
    .bind(std::process::id() as i32)
    .bind(env!("CARGO_PKG_VERSION"))
    .execute(&mut connection)
    .await?;
    Ok(connection)
}

/// This machine's name, for operators reading `processes`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_default()
}

/// In one transaction: marks the processes of `due` whose lock is still free as gone,
/// releases the leases of every gone process whose lock is free, and forgets those gone for
/// longer than [`SWEEP_FOR`]. Answers the deliveries, Meta sends and media downloads that
/// were made due again, once the transaction has committed.
async fn take_over(pool: &PgPool, due: &[i32], now: Millis) -> Result<(i64, i64, i64), sqlx::Error> {
    let mut tx = pool.begin().await?;
    // The marked rows are not visible to the statement's own read of `processes`, so each
    // gone process is answered once; the locks taken stay until the commit.
    let gone: Vec<(i32, bool)> = sqlx::query_as(
        "WITH found AS ( \
           UPDATE processes SET gone_since = $2 \
           WHERE number = ANY($1) AND gone_since IS NULL AND pg_try_advisory_xact_lock($3, number) \
           RETURNING number) \
         SELECT number, TRUE FROM found \
         UNION ALL SELECT number, FALSE FROM processes \
         WHERE gone_since IS NOT NULL AND pg_try_advisory_xact_lock($3, number)",
    )
    .bind(due)
    .bind(now)
    .bind(LIVENESS_SPACE)
    .fetch_all(&mut *tx)
    .await?;
    for (process, _) in gone.iter().filter(|(_, found_now)| *found_now) {
        tracing::info!(
            process,
            "a serving process is gone (its liveness lock has been free for 5 s)"
        );
    }
    let numbers: Vec<i32> = gone.iter().map(|(process, _)| *process).collect();
    let mut taken = (0, 0, 0);
    if !numbers.is_empty() {
        // Paused deliveries are never leased; leaving them out keeps the scan to due and
        // leased heads. Meta sends and media downloads keep their lease in `next_at`.
        let (deliveries, sends, fetches): (i64, i64, i64) = sqlx::query_as(
            "WITH deliveries AS ( \
               UPDATE deliveries d SET lease_until = NULL, lease_owner = NULL, \
                 next_at = CASE WHEN (SELECT enabled FROM endpoints WHERE id = d.endpoint_id) \
                                THEN LEAST(d.next_at, $2) ELSE $3 END \
               WHERE d.id IN (SELECT id FROM deliveries WHERE state = 1 AND next_at < $3 \
                              AND lease_until IS NOT NULL AND lease_owner = ANY($1) FOR UPDATE SKIP LOCKED) \
               RETURNING 1), \
             sends AS ( \
               UPDATE channel_sends SET lease_owner = NULL, next_at = LEAST(next_at, $2) \
               WHERE id IN (SELECT id FROM channel_sends WHERE next_at > $2 AND lease_owner = ANY($1) \
                            FOR UPDATE SKIP LOCKED) \
               RETURNING 1), \
             fetches AS ( \
               UPDATE media_fetches f SET lease_owner = NULL, next_at = LEAST(f.next_at, $2) \
               FROM (SELECT instance_id, message_id FROM media_fetches WHERE next_at > $2 \
                     AND lease_owner = ANY($1) FOR UPDATE SKIP LOCKED) AS g \
               WHERE f.instance_id = g.instance_id AND f.message_id = g.message_id \
               RETURNING 1) \
             SELECT (SELECT count(*) FROM deliveries), (SELECT count(*) FROM sends), (SELECT count(*) FROM fetches)",
        )
        .bind(&numbers)
        .bind(now)
        .bind(PAUSED)
        .fetch_one(&mut *tx)
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
        taken = (deliveries, sends, fetches);
    }
    sqlx::query("DELETE FROM processes WHERE gone_since < $1")
        .bind(now - SWEEP_FOR.as_millis() as Millis)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(taken)
}

//! The SQLite connection layer: one writer thread that commits in groups, and a pool of
//! read-only connections.
//!
//! Every write is a closure sent to the writer thread. The thread takes whatever closures are
//! queued (up to 512), runs them in one transaction, commits them all with a single `COMMIT`
//! — a single fsync — and only then answers each caller. Should one of them fail, the group is
//! rolled back and run again with a savepoint per write, so that one failing write does not
//! undo the others (see [`commit_group`]); the first run has no savepoints, since a savepoint
//! makes SQLite copy every page a write touches into its statement journal. A write is
//! therefore a closure that may run twice (`FnMut`), and depends on nothing but what it
//! captured and what it reads. A caller is never told "done" before its data is durable, yet a
//! burst of writes costs one disk sync, not one each. This is the group commit databases use
//! for their own logs.
//!
//! If `BEGIN` or `COMMIT` fails, or SQLite abandons the transaction itself (disk full, I/O
//! error), the whole group is rolled back and every caller in it is told that nothing was
//! written (`CommitFailed`, or `Closed` for jobs that never ran; both answer 503). A job never
//! runs half-undone: it runs either in a group that commits whole or, after a failure in its
//! group, again inside a savepoint of its own. A job whose own statement fails with
//! `SQLITE_FULL` is rolled back to its savepoint and answers 503 as well. With
//! `sqlite_max_pages` set the file is capped (`PRAGMA max_page_count`), so that tests can fill
//! "the disk" on demand.
//!
//! Reads run on tokio's blocking pool, except short point reads every request makes (the
//! authentication lookup), which [`Db::read_now`] runs on the request's own thread: in WAL
//! mode a reader never waits for the writer.
//!
//! Writes that only move deliveries along (claims, attempt outcomes) are *relaxed*: losing the
//! last of them in a power cut only means a delivery goes out again, which at-least-once
//! allows. A group made only of relaxed writes is committed with `synchronous=NORMAL` (in WAL
//! mode that survives a killed process, just not a power cut) and costs no fsync; any group
//! holding a durable write (a message, an event) is committed at the configured level, and
//! its sync also makes every earlier relaxed commit durable, since the WAL is written in order.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use crate::store::SqliteSync;
use crate::store::{StoreError, StoreResult};

/// The largest number of writes committed together.
const MAX_GROUP: usize = 512;

/// A write waiting for the writer thread.
trait Job: Send {
    /// Runs the write inside the group's transaction; `true` when it succeeded. A job may be
    /// run again after its group was rolled back (see [`commit_group`]), so it must depend
    /// only on what it captured and what it reads.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller: the write's result if the group committed, `CommitFailed`
    /// otherwise. A job dropped unanswered tells its caller `Closed`.
    fn answer(self: Box<Self>, committed: bool);
}

/// A caller's closure, its latest result and where the answer goes.
struct Write<T, F> {
    write: F,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> Job for Write<T, F>
where
    T: Send,
    F: FnMut(&Connection) -> StoreResult<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let result = (self.write)(conn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, committed: bool) {
        let answer = match (committed, self.result) {
            (true, Some(result)) => result,
            _ => Err(StoreError::CommitFailed),
        };
        let _ = self.reply.send(answer);
    }
}

/// A job and whether its caller needs it to survive a power cut.
struct Queued {
    job: Box<dyn Job>,
    durable: bool,
}

/// Handle to the writer thread and the reader pool.
#[derive(Clone)]
pub(super) struct Db {
    jobs: mpsc::Sender<Queued>,
    readers: Arc<ReaderPool>,
}

struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Db {
    /// Opens (creating if needed) the database file and starts the writer thread. `prepare`
    /// runs once on the writer connection before anything else (migrations).
    pub(super) fn open(
        path: &Path,
        sync: SqliteSync,
        max_pages: Option<u64>,
        prepare: impl FnOnce(&mut Connection) -> StoreResult<()>,
    ) -> StoreResult<Self> {
        let mut writer = Connection::open(path)?;
        let synchronous = match sync {
            SqliteSync::Full => "FULL",
            SqliteSync::Normal => "NORMAL",
        };
        writer.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous={synchronous}; PRAGMA busy_timeout=5000; \
             PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY; PRAGMA cache_size=-16000;"
        ))?;
        prepare(&mut writer)?;
        if let Some(pages) = max_pages {
            // A full disk, on demand: past this size every write fails with SQLITE_FULL.
            writer.execute_batch(&format!("PRAGMA max_page_count = {pages};"))?;
        }
        let (jobs, queue) = mpsc::channel::<Queued>(4096);
        let full = sync == SqliteSync::Full;
        thread::Builder::new()
            .name("botlinkd-sqlite-writer".into())
            .spawn(move || write_loop(writer, queue, full))
            .map_err(|_| StoreError::Closed)?;
        Ok(Self {
            jobs,
            readers: Arc::new(ReaderPool {
                path: path.to_path_buf(),
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Runs `f` in the next group commit and returns its result once it is durable.
    pub(super) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.submit(f, true).await
    }

    /// Like [`Db::write`], for writes whose loss in a power cut only repeats a delivery.
    pub(super) async fn write_relaxed<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.submit(f, false).await
    }

    async fn submit<T, F>(&self, write: F, durable: bool) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Write {
            write,
            result: None,
            reply,
        });
        self.jobs
            .send(Queued { job, durable })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on a read-only connection on the blocking pool.
    pub(super) async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.take()?;
            let result = f(&conn);
            pool.give_back(conn);
            result
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

impl Db {
    /// Runs a short point read on the calling thread, without the hop to the blocking pool:
    /// for reads of a few pages that every request makes (the authentication lookup), where
    /// the two thread switches of `read` cost more than the read. In WAL mode a reader never
    /// waits for the writer, so this does not stall the async worker.
    pub(super) fn read_now<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let conn = self.readers.take()?;
        let result = f(&conn);
        self.readers.give_back(conn);
        result
    }
}

impl ReaderPool {
    fn take(&self) -> StoreResult<Connection> {
        if let Some(conn) = self.idle.lock().expect("reader pool lock").pop() {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.execute_batch("PRAGMA busy_timeout=5000; PRAGMA cache_size=-8000;")?;
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().expect("reader pool lock");
        if idle.len() < 16 {
            idle.push(conn);
        }
    }
}

fn write_loop(conn: Connection, mut queue: mpsc::Receiver<Queued>, full: bool) {
    let mut batch: Vec<Queued> = Vec::with_capacity(MAX_GROUP);
    let mut synced_fully = full;
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // With synchronous=FULL configured, a group of relaxed writes skips the fsync.
        let wants_full = full && batch.iter().any(|q| q.durable);
        if wants_full != synced_fully {
            let level = if wants_full { "FULL" } else { "NORMAL" };
            if conn.execute_batch(&format!("PRAGMA synchronous={level}")).is_ok() {
                synced_fully = wants_full;
            }
        }
        let jobs: Vec<Box<dyn Job>> = batch.drain(..).map(|q| q.job).collect();
        let (answered, committed) = commit_group(&conn, jobs);
        for job in answered {
            job.answer(committed);
        }
    }
}

/// Runs a group of jobs in one transaction and commits it. Returns the jobs to answer and
/// whether their writes were committed; jobs left out are dropped, which tells their callers
/// that nothing of theirs was written.
///
/// Most groups succeed whole, so the first try runs every job straight in the transaction. A
/// savepoint per job would cost a copy of every page each job touches (SQLite's statement
/// journal) for the rare group in which one job fails. When one does fail, or SQLite abandons
/// the transaction, the group is rolled back and run again with a savepoint per job, so that
/// the failing job alone is undone; that is why a job must be safe to run twice.
fn commit_group(conn: &Connection, mut jobs: Vec<Box<dyn Job>>) -> (Vec<Box<dyn Job>>, bool) {
    if let Err(error) = conn.execute_batch("BEGIN IMMEDIATE") {
        tracing::error!(error = %error, "sqlite could not begin a transaction");
        return (Vec::new(), false);
    }
    let whole = jobs.iter_mut().all(|job| job.run(conn) && !conn.is_autocommit());
    if !whole {
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        let (answered, intact) = run_group(conn, jobs);
        if answered.is_empty() {
            return (answered, false);
        }
        jobs = answered;
        if !intact {
            return (jobs, false);
        }
    }
    match conn.execute_batch("COMMIT") {
        Ok(()) => (jobs, true),
        Err(error) => {
            tracing::error!(error = %error, "sqlite commit failed; rolling back the group");
            let _ = conn.execute_batch("ROLLBACK");
            (jobs, false)
        }
    }
}

/// Runs a group of jobs in one transaction, each in its own savepoint. Returns the jobs to
/// answer and whether the transaction is still open (SQLite rolls the whole transaction
/// back by itself on some errors, such as a full disk; then nothing of the group stands).
fn run_group(conn: &Connection, jobs: Vec<Box<dyn Job>>) -> (Vec<Box<dyn Job>>, bool) {
    let mut ran = Vec::with_capacity(jobs.len());
    if let Err(error) = conn.execute_batch("BEGIN IMMEDIATE") {
        // Dropping the jobs unanswered tells every caller that nothing of theirs was written.
        tracing::error!(error = %error, "sqlite could not begin a transaction");
        return (ran, false);
    }
    let mut jobs = jobs.into_iter();
    for mut job in jobs.by_ref() {
        if let Err(error) = conn.execute_batch("SAVEPOINT job") {
            // Without a savepoint a failing job could leave half its writes: do not run it.
            tracing::error!(error = %error, "sqlite savepoint failed");
            drop(job);
            break;
        }
        let ok = job.run(conn);
        ran.push(job);
        let end = if ok {
            "RELEASE job"
        } else {
            "ROLLBACK TO job; RELEASE job"
        };
        if conn.is_autocommit() || conn.execute_batch(end).is_err() || conn.is_autocommit() {
            tracing::error!("sqlite abandoned the transaction; failing the whole group");
            drop(jobs.collect::<Vec<_>>());
            let _ = conn.execute_batch("ROLLBACK");
            return (ran, false);
        }
    }
    // Jobs left after a failed savepoint are dropped: their callers see that nothing was written.
    let rest: Vec<Box<dyn Job>> = jobs.collect();
    let intact = rest.is_empty() || !conn.is_autocommit();
    drop(rest);
    (ran, intact && !conn.is_autocommit())
}

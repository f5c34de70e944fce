//! A writer on an OS thread of its own: a single-threaded tokio runtime with a pool of one
//! connection, opened from that thread and warmed up (`super::routines::warm_up`), so that the
//! connection's answers are read by this thread's runtime and the OS wakes the writer the
//! moment one arrives. On the shared request runtime the writer waited behind the request
//! handlers for a worker between one answer and its next call, and its answers came through
//! that runtime's busy I/O driver (docs/perf-log.md, ninth sitting). The ingest writer and the
//! completer each run on one (`super::ingest`, `super::complete`).

use std::future::Future;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::{mpsc, oneshot};

use super::routines;
use crate::store::{StoreError, StoreResult};

/// A running writer thread's connection, which a serving process opens as it starts.
pub(super) struct OwnConnection {
    /// Asks the thread to open its connection now; answered once it is open (or could not be).
    open: mpsc::UnboundedSender<oneshot::Sender<()>>,
}

impl OwnConnection {
    /// Opens the thread's connection now (warmed up), so that the first write does not wait
    /// for it. Best effort: a connection that cannot be opened now is opened by the first
    /// write.
    pub(super) async fn open_warm(&self) {
        let (opened, answer) = oneshot::channel();
        if self.open.send(opened).is_ok() {
            let _ = answer.await;
        }
    }
}

/// Starts the thread `name` and runs `writer` on it with a pool of one connection made with
/// `options` (shown as `name` in `pg_stat_activity`). The connection opens when the writer
/// (or [`OwnConnection::open_warm`]) first needs it; the thread ends when `writer` returns.
pub(super) fn start<W, F>(name: &'static str, options: PgConnectOptions, writer: W) -> StoreResult<OwnConnection>
where
    W: FnOnce(PgPool) -> F + Send + 'static,
    F: Future<Output = ()>,
{
    let (open, open_requests) = mpsc::unbounded_channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|_| StoreError::Closed)?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            runtime.block_on(async move {
                // Made here, so that its connection is driven by this thread's runtime.
                // No minimum, no idle or age limit: only the writer's own acquire ever
                // (re)opens the connection, within `ACQUIRE_TIMEOUT`. With a minimum, sqlx
                // reopens a broken connection in the background with back-off of up to a
                // minute, holding the pool's only slot, so writes would fail for that long
                // after PostgreSQL came back.
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .min_connections(0)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .acquire_timeout(super::open::ACQUIRE_TIMEOUT)
                    .after_connect(|connection, _| Box::pin(routines::warm_up(connection)))
                    .connect_lazy_with(options.application_name(name));
                tokio::spawn(open_when_asked(name, pool.clone(), open_requests));
                writer(pool).await;
            })
        })
        .map_err(|_| StoreError::Closed)?;
    Ok(OwnConnection { open })
}

/// Opens the thread's connection whenever [`OwnConnection::open_warm`] asks.
async fn open_when_asked(name: &str, pool: PgPool, mut asked: mpsc::UnboundedReceiver<oneshot::Sender<()>>) {
    while let Some(opened) = asked.recv().await {
        if let Err(error) = pool.acquire().await {
            tracing::warn!(error = %error, thread = name, "a postgres writer's connection could not be opened; it opens when needed");
        }
        let _ = opened.send(());
    }
}

//! Opening the PostgreSQL store: the migrations (one process at a time, on a connection of
//! their own), the pool and its warm connections (see `super::routines::warm_up`), and the
//! listener for the other processes' notices (`super::notices`).

use std::sync::{Arc, Mutex};

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use tokio::sync::mpsc;

use super::{LOCK_SPACE, PgStore, complete, ingest, instance_cache, liveness, notices, notifier, routines, watchers};
use crate::store::{StoreError, StoreResult};

/// The schema's migration files, in the order they are applied (see `super`'s "Migrations").
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_core.sql"),
    include_str!("migrations/0002_meta.sql"),
    include_str!("migrations/0003_endpoint_health.sql"),
    include_str!("migrations/0004_commit_ordered_feed.sql"),
    include_str!("migrations/0005_instance_notices.sql"),
    include_str!("migrations/0006_rate_limit.sql"),
    include_str!("migrations/0007_service_window.sql"),
    include_str!("migrations/0008_templates.sql"),
    include_str!("migrations/0009_media.sql"),
    include_str!("migrations/0010_history.sql"),
    include_str!("migrations/0011_watchers.sql"),
    include_str!("migrations/0012_lease_owners.sql"),
];

/// Connections a serving process opens at start (besides the listener's, which is the pool's
/// too) and the fewest the pool keeps open, warmed up (see `routines::warm_up`), of its 16:
/// what one process was seen to use under paced customer messages (W2 in BENCHMARKS.md), so
/// that none of them waits for a new connection's first calls. (A command-line run opens
/// connections only as it needs them; each is warmed up as it opens all the same.)
pub(super) const WARM_CONNECTIONS: u32 = 12;

/// How long a write waits for a connection: when the database is down, it answers 503 soon,
/// not after sqlx's default 30 s.
pub(super) const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A process's number, from its random origin mark.
fn process_number(origin: &str) -> i32 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    origin.hash(&mut hasher);
    hasher.finish() as i32
}

impl PgStore {
    /// Connects, applies migrations, and starts listening for other processes' events.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let origin = crate::ids::api_key();
        let number = process_number(&origin);
        let options: PgConnectOptions = url
            .parse::<PgConnectOptions>()
            .map_err(|_| StoreError::UnsupportedUrl(crate::store::redact_url(url)))?
            // botlinkd's queries are short and indexed. PostgreSQL's JIT compiles any query
            // whose estimate passes `jit_above_cost`, as a page of history can before the
            // planner has statistics, and compiling costs ~200 ms where running costs 3 ms.
            .options([
                ("jit", "off".to_string()),
                (liveness::PROCESS_SETTING, number.to_string()),
            ]);
        // Migrations first, on a connection of their own (a pool of one, which retries a
        // database that is starting up within `ACQUIRE_TIMEOUT`), so that every connection of
        // the serving pool finds this build's routines when it is warmed up.
        let migrations = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        migrate(&mut *migrations.acquire().await?).await?;
        migrations.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // The listener's connection is the pool's too.
            .min_connections(WARM_CONNECTIONS + 1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(|connection, _| Box::pin(routines::warm_up(connection)))
            .connect_lazy_with(options.clone());
        let (tx, rx) = mpsc::unbounded_channel();
        let mut listener = PgListener::connect_with(&pool).await?;
        listener
            .listen_all([
                notices::EVENTS_CHANNEL,
                notices::ATTEMPTS_CHANNEL,
                notices::INSTANCES_CHANNEL,
                watchers::WATCH_CHANNEL,
            ])
            .await?;
        let instances = Arc::new(instance_cache::InstanceCache::default());
        let remote = Arc::new(watchers::RemoteWatch::default());
        let notifier = Arc::new(notifier::Notifier::start(options.clone(), remote.clone()));
        let watches = watchers::Watches::start(pool.clone(), origin.clone(), remote.clone(), notifier.clone());
        notices::listen(
            listener,
            notices::Hearing {
                own: origin.clone(),
                cache: instances.clone(),
                watched_elsewhere: remote.clone(),
                notifier: notifier.clone(),
                tx,
            },
        );
        Ok(Self {
            ingest: ingest::Ingest::start(options.clone(), notifier.clone())?,
            completer: complete::Completer::start(options.clone(), number)?,
            notifier,
            remote,
            watches,
            instances,
            pool,
            notices: Mutex::new(Some(rx)),
            number,
            options,
            liveness: tokio::sync::Mutex::new(None),
            taken_over: Arc::default(),
            origin,
        })
    }
}

/// Opens the pool's [`WARM_CONNECTIONS`] together, each warmed up as it opens (the pool's
/// `after_connect`), and puts them back idle; the pool keeps that many from then on. Best
/// effort: the store has reached the database already, and a connection that could not be
/// opened now is opened when it is needed.
pub(super) async fn open_warm(pool: &PgPool) {
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..WARM_CONNECTIONS {
        let pool = pool.clone();
        opening.spawn(async move { pool.acquire().await });
    }
    // Each is held until all are open, so that every acquire opens a connection of its own.
    let (mut held, mut failed) = (Vec::new(), 0);
    while let Some(opened) = opening.join_next().await {
        match opened {
            Ok(Ok(connection)) => held.push(connection),
            Ok(Err(error)) => {
                failed += 1;
                tracing::debug!(error = %error, "opening a warm postgres connection failed");
            }
            Err(panicked) => tracing::error!(error = %panicked, "opening a postgres connection panicked"),
        }
    }
    if failed > 0 {
        tracing::warn!(
            opened = held.len(),
            failed,
            "some warm postgres connections could not be opened; they open when needed"
        );
    }
}

/// Takes the migration lock for the rest of the transaction.
pub(super) async fn lock_migrations(tx: &mut PgConnection) -> StoreResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, 0)")
        .bind(LOCK_SPACE)
        .execute(tx)
        .await?;
    Ok(())
}

/// Applies the migrations the database has not seen and creates this build's missing
/// routines, one process at a time.
async fn migrate(connection: &mut PgConnection) -> StoreResult<()> {
    let mut tx = connection.begin().await?;
    lock_migrations(&mut tx).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS botlinkd_migrations (version INTEGER PRIMARY KEY)")
        .execute(&mut *tx)
        .await?;
    let done: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM botlinkd_migrations")
        .fetch_one(&mut *tx)
        .await?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(done as usize) {
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO botlinkd_migrations (version) VALUES ($1)")
            .bind(index as i32 + 1)
            .execute(&mut *tx)
            .await?;
        tracing::info!(version = index + 1, "applied postgres migration");
    }
    routines::install(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

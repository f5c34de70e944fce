//! Starting and running the server: open the store, make sure there is something to try
//! (the sandbox demo instance), start the delivery engine and the other workers, serve HTTP
//! until the shutdown token is cancelled, then stop the workers in order. [`run`] does both.
//!
//! **Start** ([`Server::start`]): take the serving lock (SQLite only: an exclusive lock on
//! `<database>.lock`, held until `serve` returns, so that a second `serve` fails with
//! `StoreError::InUse`; `instance …` and `migrate` do not take it), open the store, release
//! the leases left in it (safe because of that lock; PostgreSQL releases nothing and
//! registers the process instead, see `Store::start_serving`), create the demo instance on an empty database, read the
//! newest event's `seq` (where cursor-less streams start), and give the app its base URL
//! (`--public-url`, or the bound address).
//!
//! **Serve** ([`Server::serve`]): axum, with each connection's address (`ConnectInfo`), by
//! which the rate limit on failed authentications counts; and, with
//! `Config::background_workers`, the delivery engine, the sandbox driver, the `meta` send
//! worker, the `meta` media keeper and housekeeping; and, when the store offers them (`take_notifications`), a task
//! that forwards other processes' notices: `ClusterNotice::Event` to `App::announce`,
//! `ClusterNotice::Attempt` to `Live::attempt`.
//!
//! The engine, its attempt tasks and its completer run on a tokio runtime of their own, two
//! `botlinkd-delivery` worker threads beside the request workers; deliveries claimed
//! elsewhere (by an ingest write) are spawned onto it through its `Handle`. An attempt is
//! mostly a wait on the receiver, and threads that sleep through their waits are woken by the
//! OS scheduler as soon as the answer arrives, even while the request workers are saturated
//! by ingest. On the shared runtime the answer queued behind the ingest tasks, which is what
//! one conversation's throughput (each event waits for the one before) paid for. One
//! delivery thread was tried: it made W3 (fan-out, see BENCHMARKS.md) bound by one core.
//!
//! **Shutdown.** The CLI cancels the token on Ctrl-C or `SIGTERM`. `serve` then cancels
//! `App::stopping`, which ends every open SSE stream and makes waiting long-polls answer at
//! once; `axum::serve` stops accepting connections and waits for the requests in progress to
//! finish. Only then are the workers cancelled: the engine stops claiming, lets its in-flight
//! attempts finish (they are bounded by the attempt timeout) and its completer records their
//! outcomes; the send worker finishes the Graph requests under way; the sandbox driver,
//! housekeeping and the notice forwarder stop. `serve` returns when all of them are done, and
//! the serving lock is released. A graceful stop therefore leaves no lease behind for other
//! processes to wait out.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::channels::meta::sender;
use crate::config::Config;
use crate::instances::{Channel, Credentials, Instance, NewInstance, sandbox_number};
use crate::store::{self, Store, StoreError};
use crate::{api, housekeeping, sandbox};

/// The demo instance created on first start, with the Auth Key it was given (shown once).
#[derive(Debug)]
pub struct DemoInstance {
    /// The instance.
    pub instance: Instance,
    /// Its credentials.
    pub credentials: Credentials,
}

/// A started server, not yet serving.
pub struct Server {
    app: App,
    listener: TcpListener,
    /// The demo instance, if this start created it.
    pub demo: Option<DemoInstance>,
    _lock: store::ServingLock,
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store could not be opened or prepared.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// The listener failed.
    #[error("serving HTTP failed")]
    Io(#[from] std::io::Error),
}

impl Server {
    /// Opens the store, prepares it for this process, and creates the demo instance if the
    /// database has no instance yet.
    pub async fn start(config: Config, listener: TcpListener) -> Result<Self, ServeError> {
        let lock = store::lock_for_serving(&config.database_url)?;
        let store = config.open_store().await?;
        // SQLite is used by one serving process at a time, so every lease left in the file
        // belonged to a process that is gone: hand those deliveries back at once. PostgreSQL
        // registers this process, to take part in taking over from processes that die.
        let released = store.start_serving(config.clock.now_ms()).await?;
        if released > 0 {
            tracing::info!(
                released,
                "resumed deliveries that were in flight when the last process stopped"
            );
        }
        let demo = if config.create_demo_instance {
            create_demo_if_empty(store.as_ref(), &config).await?
        } else {
            None
        };
        let latest_seq = store.latest_event_seq().await?;
        let base_url = config.base_url(listener.local_addr()?);
        Ok(Self {
            app: App::new(store, config, latest_seq).with_base_url(&base_url),
            listener,
            demo,
            _lock: lock,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The shared application state (tests drive the engine through it).
    pub fn app(&self) -> &App {
        &self.app
    }

    /// Serves until `shutdown` is cancelled; then ends streams and long-polls, finishes
    /// in-flight requests, and only then stops the workers (the engine lets its in-flight
    /// attempts finish and records them).
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), ServeError> {
        let app = self.app;
        let _lock = self._lock;
        let workers = CancellationToken::new();
        let mut tasks = Vec::new();
        if app.config.background_workers {
            tasks.push(spawn_engine(app.engine.clone(), workers.clone())?);
            tasks.push(tokio::spawn(sandbox::run(app.clone(), workers.clone())));
            tasks.push(tokio::spawn(sender::run(app.clone(), workers.clone())));
            tasks.push(tokio::spawn(housekeeping::run(app.clone(), workers.clone())));
            tasks.push(tokio::spawn(crate::channels::meta::media::run(
                app.clone(),
                workers.clone(),
            )));
        }
        if let Some(mut notices) = app.store.take_notifications() {
            // Events committed by other processes on the same database.
            let app = app.clone();
            let workers = workers.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = workers.cancelled() => return,
                        notice = notices.recv() => match notice {
                            Some(store::ClusterNotice::Event { instance_id, seq, due }) => app.announce(instance_id, seq, due),
                            Some(store::ClusterNotice::Attempt(notice)) => app.live.attempt(notice),
                            None => return,
                        },
                    }
                }
            }));
        }
        let router = api::router(app.clone());
        let stopping = app.stopping.clone();
        let router = router.into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(self.listener, router)
            .with_graceful_shutdown(async move {
                shutdown.cancelled().await;
                stopping.cancel();
            })
            .await;
        workers.cancel();
        for task in tasks {
            if task.await.is_err() {
                tracing::error!("a background worker panicked");
            }
        }
        served.map_err(ServeError::from)
    }
}

/// Runs the delivery engine on a runtime of its own (two worker threads, beside the request
/// workers): its attempts are short waits on receivers, and threads that sleep through them
/// are woken promptly by the OS scheduler even while the request workers are saturated, so
/// one conversation's events follow each other without queueing behind ingest. Two workers,
/// not one, so that a fan-out (one event to many endpoints) can use both cores.
fn spawn_engine(
    engine: crate::delivery::Engine,
    workers: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("botlinkd-delivery")
        .enable_all()
        .build()?;
    let (finished, ended) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("botlinkd-delivery".into())
        .spawn(move || {
            runtime.block_on(engine.run(workers));
            let _ = finished.send(());
        })?;
    Ok(tokio::spawn(async move {
        ended
            .await
            .expect("the delivery thread ended without finishing its engine");
    }))
}

/// Starts a server on `listener` and serves until `shutdown` is cancelled.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), ServeError> {
    Server::start(config, listener).await?.serve(shutdown).await
}

async fn create_demo_if_empty(store: &dyn Store, config: &Config) -> Result<Option<DemoInstance>, StoreError> {
    if !store.list_instances().await?.is_empty() {
        return Ok(None);
    }
    let credentials = Credentials::generate();
    let instance = store
        .create_instance(
            NewInstance {
                name: "demo".into(),
                channel: Channel::Sandbox,
                phone_number: sandbox_number(),
                credentials: credentials.clone(),
                meta: None,
            },
            config.clock.now_ms(),
        )
        .await?;
    Ok(Some(DemoInstance { instance, credentials }))
}

//! The benchmark's webhook receiver: answers 200 at once and records when each message id
//! arrived (first arrival only), so latencies are measured on one clock with the generator.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use tokio::sync::Notify;

/// What the receiver saw.
#[derive(Default)]
pub struct Seen {
    /// First arrival time per message id.
    pub arrivals: Mutex<HashMap<String, Instant>>,
    /// Every request, duplicates included.
    pub requests: AtomicUsize,
    /// Woken on every request.
    pub notify: Notify,
    /// Whether to keep each message's `webhook-id` and count repeats that carry another one.
    pub check_webhook_ids: std::sync::atomic::AtomicBool,
    /// The `webhook-id` each message first came with (while checking).
    pub webhook_ids: Mutex<HashMap<String, String>>,
    /// Repeats of a message with a different `webhook-id` (there must be none).
    pub changed_webhook_ids: AtomicUsize,
    /// Requests for a message that had arrived already.
    pub duplicates: AtomicUsize,
    /// While set, every request is answered 500 and not recorded (a receiver in trouble).
    pub refuse: std::sync::atomic::AtomicBool,
}

/// A running receiver.
pub struct Receiver {
    pub url: String,
    pub seen: Arc<Seen>,
}

impl Receiver {
    /// Starts on a free loopback port, on a runtime of its own: a receiver is a server of
    /// its own, and sharing the generator's scheduler would queue its answers behind the
    /// generator's work (which no real receiver does).
    pub fn start() -> anyhow::Result<Self> {
        let seen = Arc::new(Seen::default());
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let router = Router::new().route("/hook", post(record)).with_state(seen.clone());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("receiver")
            .enable_all()
            .build()?;
        std::thread::Builder::new().name("receiver".into()).spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                axum::serve(listener, router).await
            })
        })?;
        Ok(Self { url, seen })
    }

    /// How many distinct messages arrived.
    pub fn distinct(&self) -> usize {
        self.seen.arrivals.lock().expect("lock").len()
    }

    /// Waits until `n` distinct messages arrived; returns when the last one did.
    pub async fn wait_for(&self, n: usize, patience: std::time::Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + patience;
        loop {
            let notified = self.seen.notify.notified();
            {
                let arrivals = self.seen.arrivals.lock().expect("lock");
                if arrivals.len() >= n {
                    return Ok(arrivals.values().max().copied().unwrap_or_else(Instant::now));
                }
            }
            if Instant::now() > deadline {
                anyhow::bail!("only {} of {n} messages arrived in {:?}", self.distinct(), patience);
            }
            let _ = tokio::time::timeout(std::time::Duration::from_millis(200), notified).await;
        }
    }

    /// Forgets what it saw.
    pub fn reset(&self) {
        self.seen.arrivals.lock().expect("lock").clear();
        self.seen.webhook_ids.lock().expect("lock").clear();
        self.seen.requests.store(0, Ordering::SeqCst);
        self.seen.duplicates.store(0, Ordering::SeqCst);
        self.seen.changed_webhook_ids.store(0, Ordering::SeqCst);
    }
}

async fn record(
    State(seen): State<Arc<Seen>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> (axum::http::StatusCode, &'static str) {
    if seen.refuse.load(Ordering::Relaxed) {
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "refused");
    }
    let now = Instant::now();
    seen.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(id) = message_id(&body) {
        if seen.check_webhook_ids.load(Ordering::Relaxed) {
            let webhook_id = headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let mut known = seen.webhook_ids.lock().expect("lock");
            match known.get(&id) {
                Some(first) => {
                    seen.duplicates.fetch_add(1, Ordering::Relaxed);
                    if *first != webhook_id {
                        seen.changed_webhook_ids.fetch_add(1, Ordering::Relaxed);
                    }
                }
                None => {
                    known.insert(id.clone(), webhook_id);
                }
            }
        }
        seen.arrivals.lock().expect("lock").entry(id).or_insert(now);
    }
    seen.notify.notify_waiters();
    (axum::http::StatusCode::OK, "ok")
}

/// The `data.message_id` of a webhook body, found without parsing all of it.
fn message_id(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("\"message_id\":\"")? + "\"message_id\":\"".len();
    let end = text[start..].find('"')? + start;
    Some(text[start..end].to_string())
}

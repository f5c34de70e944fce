//! The integration harness: a real server on port 0 with a fresh database, HTTP helpers with
//! the instance's keys, and real webhook receivers that record what they get.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use botlinkd::app::App;
use botlinkd::config::Config;
use botlinkd::delivery::RetrySchedule;
use botlinkd::instances::{Channel, Credentials, NewInstance};
use botlinkd::phone::PhoneNumber;
use botlinkd::{Server, clock::Clock};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

/// How long a test waits for something that should happen.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// Logs go to a sink unless `TEST_LOG` is set.
fn init_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_test_writer()
            .try_init();
    }
}

/// The PostgreSQL server tests use; each test makes its own database there and drops it.
pub fn postgres_admin_url() -> String {
    std::env::var("BOTLINKD_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh, empty database for one test: a SQLite file in a temporary folder, or (with
/// `BOTLINKD_TEST_BACKEND=postgres`, and always for [`TestDb::postgres`]) a new PostgreSQL
/// database that is dropped when the test ends.
pub struct TestDb {
    pub url: String,
    postgres_name: Option<String>,
    _dir: tempfile::TempDir,
}

impl TestDb {
    /// The backend the suite runs on.
    pub async fn new() -> Self {
        match std::env::var("BOTLINKD_TEST_BACKEND").as_deref() {
            Ok("postgres") => Self::postgres().await,
            Ok("sqlite") | Err(_) => Self::sqlite(),
            Ok(other) => panic!("BOTLINKD_TEST_BACKEND must be sqlite or postgres, not {other}"),
        }
    }

    /// A SQLite file.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self {
            url: format!("sqlite://{}", dir.path().join("test.db").display()),
            postgres_name: None,
            _dir: dir,
        }
    }

    /// A new PostgreSQL database (fails loudly when PostgreSQL is not running).
    pub async fn postgres() -> Self {
        use sqlx::Connection;
        let admin = postgres_admin_url();
        let name = format!(
            "botlinkd_test_{}",
            &botlinkd::ids::api_key().to_lowercase().replace(['-', '_'], "")[..16]
        );
        let mut connection = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL must be running at {admin} for this test: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut connection)
            .await
            .expect("create database");
        let base = admin
            .rsplit_once('/')
            .map(|(base, _)| base)
            .expect("database URL with a path");
        Self {
            url: format!("{base}/{name}"),
            postgres_name: Some(name),
            _dir: tempfile::tempdir().expect("temp dir"),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.postgres_name.take() else { return };
        // Drop runs outside async code: use a small runtime of its own on another thread.
        let _ = std::thread::spawn(move || {
            use sqlx::Connection;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok(mut connection) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut connection)
                        .await;
                }
            });
        })
        .join();
    }
}

/// A running server with one sandbox instance.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub app: App,
    pub keys: Keys,
    shutdown: CancellationToken,
    _server: tokio::task::JoinHandle<()>,
    db: Option<TestDb>,
}

/// An instance's id and keys.
#[derive(Clone, Debug)]
pub struct Keys {
    pub instance_id: String,
    pub app_key: String,
    pub auth_key: String,
    pub number: String,
}

impl TestApp {
    /// A server with the test defaults.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// A server on SQLite whatever the suite's backend (for SQLite's own faults).
    pub async fn spawn_sqlite_with(adjust: impl FnOnce(&mut Config)) -> Self {
        init_logging();
        let mut test = Self::start_on(TestDb::sqlite(), adjust).await;
        test.keys = test.create_instance("test").await;
        test
    }

    /// A server on PostgreSQL whatever the suite's backend (fails loudly without it).
    pub async fn spawn_postgres_with(adjust: impl FnOnce(&mut Config)) -> Self {
        init_logging();
        let mut test = Self::start_on(TestDb::postgres().await, adjust).await;
        test.keys = test.create_instance("test").await;
        test
    }

    /// The PostgreSQL database's name, when the server runs on one.
    pub fn postgres_database(&self) -> Option<String> {
        self.db.as_ref().and_then(|db| db.postgres_name.clone())
    }

    /// A server with the test defaults changed by `adjust`.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> Self {
        init_logging();
        let db = TestDb::new().await;
        let mut test = Self::start_on(db, adjust).await;
        test.keys = test.create_instance("test").await;
        test
    }

    /// Stops the server and starts another on the same database, with the test defaults
    /// changed by `adjust`; the instance and its keys stay.
    pub async fn restart_with(mut self, adjust: impl FnOnce(&mut Config)) -> Self {
        self.shutdown.cancel();
        let server = std::mem::replace(&mut self._server, tokio::spawn(async {}));
        server.await.expect("the server stops cleanly");
        let db = self.db.take().expect("the database");
        let keys = self.keys.clone();
        let mut test = Self::start_on(db, adjust).await;
        test.keys = keys;
        test
    }

    async fn start_on(db: TestDb, adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::for_tests(db.url.clone());
        adjust(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = Server::start(config, listener).await.expect("server starts");
        let base = format!("http://{}", server.local_addr().expect("addr"));
        let app = server.app().clone();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            server.serve(token).await.expect("server runs");
        });
        Self {
            base,
            client: reqwest::Client::new(),
            app,
            keys: Keys {
                instance_id: String::new(),
                app_key: String::new(),
                auth_key: String::new(),
                number: String::new(),
            },
            shutdown,
            _server: handle,
            db: Some(db),
        }
    }

    /// Creates another sandbox instance in the same server.
    pub async fn create_instance(&self, name: &str) -> Keys {
        let credentials = Credentials::generate();
        let instance = self
            .app
            .store
            .create_instance(
                NewInstance {
                    name: name.into(),
                    channel: Channel::Sandbox,
                    phone_number: PhoneNumber::parse("15550123456").unwrap(),
                    credentials: credentials.clone(),
                    meta: None,
                },
                self.app.now(),
            )
            .await
            .expect("instance");
        Keys {
            instance_id: instance.id.to_string(),
            app_key: credentials.app_key,
            auth_key: credentials.auth_key.expose().to_string(),
            number: instance.phone_number.to_string(),
        }
    }

    /// The clock the server uses.
    pub fn clock(&self) -> &Clock {
        self.app.clock()
    }

    /// A request with this instance's keys.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.request_as(&self.keys, method, path)
    }

    /// A request with another instance's keys.
    pub fn request_as(&self, keys: &Keys, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{}", self.base, path))
            .basic_auth(&keys.app_key, Some(&keys.auth_key))
    }

    /// GET, expecting 200, returning the JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.request(reqwest::Method::GET, path).send().await.expect("GET");
        let status = response.status();
        let body: Value = response.json().await.expect("JSON body");
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// GET as another instance's keys, expecting 200 and JSON.
    pub async fn get_json_as(&self, keys: &Keys, path: &str) -> Value {
        let response = self
            .request_as(keys, reqwest::Method::GET, path)
            .send()
            .await
            .expect("GET");
        let status = response.status();
        let body: Value = response.json().await.expect("JSON body");
        assert_eq!(status, 200, "GET {path} as {}: {body}", keys.app_key);
        body
    }

    /// POST JSON, returning status and JSON.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .request(reqwest::Method::POST, path)
            .json(&body)
            .send()
            .await
            .expect("POST");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Creates a webhook endpoint, expecting success.
    pub async fn create_webhook(&self, url: &str, events: Option<&[&str]>) -> Value {
        let mut body = json!({"url": url});
        if let Some(events) = events {
            body["events"] = json!(events);
        }
        let (status, endpoint) = self.post("/v1/webhooks", body).await;
        assert_eq!(status, 201, "create webhook: {endpoint}");
        endpoint
    }

    /// A customer writes a text; returns the message id.
    pub async fn inbound_text(&self, from: &str, body: &str) -> String {
        let (status, answer) = self
            .post(
                "/v1/sandbox/inbound",
                json!({"from": from, "type": "text", "body": body}),
            )
            .await;
        assert_eq!(status, 201, "inbound: {answer}");
        answer["message_id"].as_str().expect("message_id").to_string()
    }

    /// The business sends a text; returns the message id.
    pub async fn send_text(&self, to: &str, body: &str) -> String {
        let (status, answer) = self
            .post("/v1/messages", json!({"to": to, "type": "text", "body": body}))
            .await;
        assert_eq!(status, 202, "send: {answer}");
        answer["message_id"].as_str().expect("message_id").to_string()
    }
}

impl TestApp {
    /// Shuts the server down gracefully and waits for it to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let server = std::mem::replace(&mut self._server, tokio::spawn(async {}));
        server.await.expect("the server stops cleanly");
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// One request a receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    /// The status the receiver answered with.
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub json: Value,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }
}

/// How a receiver answers the n-th request (0-based) with this body.
pub type Behaviour = Arc<dyn Fn(usize, &Value) -> (StatusCode, Duration) + Send + Sync>;

#[derive(Clone)]
struct ReceiverState {
    seen: mpsc::UnboundedSender<Received>,
    count: Arc<AtomicUsize>,
    behaviour: Behaviour,
}

/// A real HTTP server that records every webhook it gets.
pub struct Receiver {
    pub url: String,
    inbox: Mutex<mpsc::UnboundedReceiver<Received>>,
    count: Arc<AtomicUsize>,
    shutdown: CancellationToken,
}

impl Receiver {
    /// A receiver that answers 200 at once.
    pub async fn start() -> Self {
        Self::start_with(Arc::new(|_, _| (StatusCode::OK, Duration::ZERO))).await
    }

    /// A receiver that answers 200 to every request, the first after `first`, the others
    /// after `then`.
    pub async fn slow_first(first: Duration, then: Duration) -> Self {
        Self::start_with(Arc::new(move |n, _| {
            (StatusCode::OK, if n == 0 { first } else { then })
        }))
        .await
    }

    /// A receiver that answers as `behaviour` says.
    pub async fn start_with(behaviour: Behaviour) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let (seen, inbox) = mpsc::unbounded_channel();
        let count = Arc::new(AtomicUsize::new(0));
        let state = ReceiverState {
            seen,
            count: count.clone(),
            behaviour,
        };
        let router = axum::Router::new().route("/hook", post(record)).with_state(state);
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(token.cancelled_owned())
                .await;
        });
        Self {
            url,
            inbox: Mutex::new(inbox),
            count,
            shutdown,
        }
    }

    /// A receiver without a server, fed by a consumer of another transport (a broker):
    /// what is sent on the returned sender arrives as if it had been posted.
    pub fn fed() -> (Self, mpsc::UnboundedSender<Received>) {
        let (seen, inbox) = mpsc::unbounded_channel();
        let receiver = Self {
            url: String::new(),
            inbox: Mutex::new(inbox),
            count: Arc::new(AtomicUsize::new(0)),
            shutdown: CancellationToken::new(),
        };
        (receiver, seen)
    }

    /// The next request, or a panic after [`PATIENCE`].
    pub async fn next(&self) -> Received {
        tokio::time::timeout(PATIENCE, self.inbox.lock().await.recv())
            .await
            .expect("the receiver waited too long for a webhook")
            .expect("receiver open")
    }

    /// The next request that is not a retry of one already seen... or any next request
    /// whose JSON `event` matches.
    pub async fn next_event(&self, event: &str) -> Received {
        loop {
            let r = self.next().await;
            if r.json["event"] == event {
                return r;
            }
        }
    }

    /// The next request if one arrives within `window`.
    pub async fn next_within(&self, window: Duration) -> Option<Received> {
        tokio::time::timeout(window, self.inbox.lock().await.recv())
            .await
            .ok()
            .flatten()
    }

    /// Asserts that nothing arrives within `window`.
    pub async fn expect_nothing(&self, window: Duration) {
        if let Ok(Some(r)) = tokio::time::timeout(window, self.inbox.lock().await.recv()).await {
            panic!("expected no webhook, got {}", r.json);
        }
    }

    /// How many requests arrived so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Answers as the behaviour says; a 429 also carries `Retry-After: 120`.
async fn record(State(state): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    let n = state.count.fetch_add(1, Ordering::SeqCst);
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (status, delay) = (state.behaviour)(n, &json);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let _ = state.seen.send(Received {
        status,
        headers,
        body,
        json,
    });
    if status == StatusCode::TOO_MANY_REQUESTS {
        return (status, [("retry-after", "120")]).into_response();
    }
    status.into_response()
}

/// Verifies a delivery with the off-the-shelf Standard Webhooks library.
pub fn verify_signature(secret: &str, r: &Received) {
    let wh = standardwebhooks::Webhook::new(secret).expect("secret parses");
    wh.verify(&r.body, &r.headers)
        .expect("signature verifies with the standardwebhooks crate");
}

/// A fast retry schedule for tests: `steps` retries `step_ms` apart, no jitter (the same
/// states as production; minutes become milliseconds).
pub fn fast_retries(step_ms: u64, steps: usize) -> RetrySchedule {
    RetrySchedule::new(vec![Duration::from_millis(step_ms); steps], 0.0)
}

/// Reads `receiver` until every accepted customer message (`(customer, message id)`, in the
/// order they were accepted) has arrived, and checks what a customer relies on: a repeat
/// keeps its `webhook-id`, nothing is lost, and each customer's messages first arrive in the
/// order they were accepted. Answers what arrived: `(delivered, duplicates)`.
pub async fn expect_every_message_in_order(receiver: &Receiver, accepted: &[(String, String)]) -> (usize, usize) {
    let expected: HashSet<&str> = accepted.iter().map(|(_, id)| id.as_str()).collect();
    let mut webhook_ids: HashMap<String, String> = HashMap::new();
    let mut first_arrivals: HashMap<String, Vec<String>> = HashMap::new();
    let mut delivered: HashSet<String> = HashSet::new();
    let mut duplicates = 0;
    while !expected.iter().all(|id| delivered.contains(*id)) {
        let got = receiver.next().await;
        let message_id = got.json["data"]["message_id"].as_str().unwrap().to_string();
        let webhook_id = got.header("webhook-id").to_string();
        let first = webhook_ids
            .entry(message_id.clone())
            .or_insert_with(|| webhook_id.clone());
        assert_eq!(*first, webhook_id, "a duplicate keeps its webhook-id");
        if delivered.insert(message_id.clone()) {
            let from = got.json["data"]["from"].as_str().unwrap().to_string();
            first_arrivals.entry(from).or_default().push(message_id);
        } else {
            duplicates += 1;
        }
    }
    let mut by_customer: HashMap<&str, Vec<&str>> = HashMap::new();
    for (customer, id) in accepted {
        by_customer.entry(customer).or_default().push(id);
    }
    for (customer, ids) in by_customer {
        let arrived: Vec<&str> = first_arrivals[customer]
            .iter()
            .map(String::as_str)
            .filter(|id| expected.contains(id))
            .collect();
        assert_eq!(arrived, ids, "order of {customer}");
    }
    (expected.len(), duplicates)
}

/// The most of these sorted instants that fall within any one second (a rate limit's check).
pub fn most_within_a_second(times: &[std::time::Instant]) -> usize {
    times
        .iter()
        .enumerate()
        .map(|(i, t)| {
            times[i..]
                .iter()
                .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}

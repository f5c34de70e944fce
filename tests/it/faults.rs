//! The fault-injection suite: real receivers that go down, flap, answer slowly, hang up
//! mid-answer or redirect, a database that fills up or drops its connections. After each
//! fault the run is tallied (sent, delivered, dead, duplicates, attempts) and checked:
//! every accepted event is delivered or dead, duplicates keep their `webhook-id`, and each
//! conversation arrives in order. Each test prints a `fault report` line; docs/RELIABILITY.md
//! has the figures.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{PATIENCE, Receiver, TestApp, fast_retries};

/// What a run ended with.
#[derive(Debug, Default)]
struct Tally {
    sent: usize,
    delivered: usize,
    dead: usize,
    duplicates: usize,
    attempts: usize,
}

impl Tally {
    fn report(&self, fault: &str) {
        eprintln!(
            "fault report | {fault} | sent {} | delivered {} | dead {} | duplicates {} | attempts {}",
            self.sent, self.delivered, self.dead, self.duplicates, self.attempts
        );
        assert_eq!(
            self.delivered + self.dead,
            self.sent,
            "{fault}: every event is delivered or dead"
        );
    }
}

/// Customers write `n` messages over `conversations` conversations; returns
/// (customer, message id) in the order the API accepted them.
async fn send_many(app: &TestApp, n: usize, conversations: usize) -> Vec<(String, String)> {
    let mut sent = Vec::with_capacity(n);
    for i in 0..n {
        let customer = format!("4477009{:05}", i % conversations);
        let id = app.inbound_text(&customer, &format!("message {i}")).await;
        sent.push((customer, id));
    }
    sent
}

/// What the receivers took (answered 2xx), tallied against what was sent.
#[derive(Default)]
struct Takes {
    webhook_ids: HashMap<String, String>,
    order: HashMap<String, Vec<String>>,
    duplicates: usize,
}

impl Takes {
    /// Records one taken webhook body with its `webhook-id`.
    fn take(&mut self, json: &Value, webhook_id: &str) {
        let message_id = json["data"]["message_id"].as_str().unwrap_or_default().to_string();
        match self.webhook_ids.get(&message_id) {
            Some(first) => {
                assert_eq!(first, webhook_id, "a duplicate keeps its webhook-id");
                self.duplicates += 1;
            }
            None => {
                self.webhook_ids.insert(message_id.clone(), webhook_id.to_string());
                let from = json["data"]["from"].as_str().unwrap_or_default().to_string();
                self.order.entry(from).or_default().push(message_id);
            }
        }
    }

    /// Checks order per conversation against `sent`, and tallies.
    fn tally(&self, sent: &[(String, String)], dead: usize, attempts: usize) -> Tally {
        let mut by_customer: HashMap<&str, Vec<&str>> = HashMap::new();
        for (customer, id) in sent {
            if self.webhook_ids.contains_key(id) {
                by_customer.entry(customer).or_default().push(id);
            }
        }
        for (customer, expected) in by_customer {
            let arrived: Vec<&str> = self.order[customer].iter().map(String::as_str).collect();
            assert_eq!(arrived, expected, "order of {customer}");
        }
        Tally {
            sent: sent.len(),
            delivered: sent.iter().filter(|(_, id)| self.webhook_ids.contains_key(id)).count(),
            dead,
            duplicates: self.duplicates,
            attempts,
        }
    }
}

/// Waits until every sent message has been taken by `receiver` (or `dead` of them died),
/// and tallies.
async fn settle(app: &TestApp, receiver: &Receiver, sent: &[(String, String)], dead: usize) -> Tally {
    let mut takes = Takes::default();
    let deadline = tokio::time::Instant::now() + PATIENCE * 2;
    while takes.webhook_ids.len() + dead < sent.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} taken",
            takes.webhook_ids.len()
        );
        if let Some(r) = receiver.next_within(Duration::from_millis(200)).await
            && r.status.is_success()
        {
            takes.take(&r.json, r.header("webhook-id"));
        }
    }
    // Late duplicates still on their way are counted too.
    while let Some(r) = receiver.next_within(Duration::from_millis(300)).await {
        if r.status.is_success() {
            takes.take(&r.json, r.header("webhook-id"));
        }
    }
    let _ = app;
    takes.tally(sent, dead, receiver.count())
}

async fn dead_count(app: &TestApp) -> usize {
    app.get_json("/v1/deliveries/dead?limit=500").await["deliveries"]
        .as_array()
        .unwrap()
        .len()
}

async fn set_url(app: &TestApp, endpoint: &str, url: &str) {
    let response = app
        .request(Method::PATCH, &format!("/v1/webhooks/{endpoint}"))
        .json(&json!({"url": url}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_receiver_that_is_down_then_back_gets_everything_in_order() {
    let app = TestApp::spawn_with(|c| c.retry_schedule = fast_retries(100, 40)).await;
    // Nothing listens on this port: every attempt is refused.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let down = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let endpoint = app.create_webhook(&down, Some(&["message"])).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let sent = send_many(&app, 60, 6).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let receiver = Receiver::start().await;
    set_url(&app, &endpoint, &receiver.url).await;
    let tally = settle(&app, &receiver, &sent, 0).await;
    tally.report("receiver down (connection refused), then back");
    assert_eq!((tally.delivered, tally.duplicates), (60, 0));
}

#[tokio::test]
async fn a_flapping_receiver_gets_everything_once_in_order() {
    let app = TestApp::spawn_with(|c| c.retry_schedule = fast_retries(50, 40)).await;
    let receiver = Receiver::start_with(Arc::new(|n, _| {
        let status = if n % 2 == 0 {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        };
        (status, Duration::ZERO)
    }))
    .await;
    app.create_webhook(&receiver.url, Some(&["message"])).await;
    let sent = send_many(&app, 100, 10).await;
    let tally = settle(&app, &receiver, &sent, 0).await;
    tally.report("receiver flapping between 500 and 200");
    assert_eq!((tally.delivered, tally.duplicates), (100, 0));
    assert!(tally.attempts >= 150, "half the attempts failed: {}", tally.attempts);
}

#[tokio::test]
async fn answers_just_under_three_seconds_count_and_just_over_are_retried() {
    let app = TestApp::spawn_with(|c| c.retry_schedule = fast_retries(100, 5)).await;
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let receiver = Receiver::start_with(Arc::new(move |_, json| {
        let id = json["data"]["message_id"].as_str().unwrap_or_default().to_string();
        let first = seen.lock().unwrap().insert(id);
        let delay = if first { 3200 } else { 2800 };
        (StatusCode::OK, Duration::from_millis(delay))
    }))
    .await;
    app.create_webhook(&receiver.url, Some(&["message"])).await;
    let sent = send_many(&app, 8, 8).await;
    let tally = settle(&app, &receiver, &sent, 0).await;
    tally.report("receiver answering in 3.2 s, then 2.8 s");
    assert_eq!(tally.delivered, 8);
    let event = app.get_json("/v1/events?after=0&limit=1").await["events"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let attempts = app.get_json(&format!("/v1/events/{event}/attempts")).await["attempts"].clone();
    assert_eq!(attempts[0]["outcome"], "failure", "{attempts}");
    assert!(attempts[0]["error"].as_str().unwrap().contains("timeout"), "{attempts}");
    assert_eq!(attempts[1]["outcome"], "success", "{attempts}");
}

/// A raw HTTP server whose first `bad` connections get half an answer and a hang-up.
async fn hanging_up_server(bad: usize) -> (String, Arc<Mutex<Vec<(bool, Value, String)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let log = got.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let log = log.clone();
            let n = count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head_end, length) = loop {
                    let read = socket.read(&mut chunk).await.unwrap_or(0);
                    if read == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..read]);
                    if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buffer[..end]).to_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (end + 4, length);
                    }
                };
                while buffer.len() < head_end + length {
                    let read = socket.read(&mut chunk).await.unwrap_or(0);
                    if read == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..read]);
                }
                let head = String::from_utf8_lossy(&buffer[..head_end]).to_lowercase();
                let webhook_id = head
                    .lines()
                    .find_map(|l| l.strip_prefix("webhook-id:"))
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                let json: Value = serde_json::from_slice(&buffer[head_end..head_end + length]).unwrap_or(Value::Null);
                let good = n >= bad;
                log.lock().unwrap().push((good, json, webhook_id));
                let answer: &[u8] = if good {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                } else {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\nconnection: close\r\n\r\ncut off"
                };
                let _ = socket.write_all(answer).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (url, got)
}

#[tokio::test]
async fn a_receiver_hanging_up_mid_answer_is_retried_until_it_answers_whole() {
    let app = TestApp::spawn_with(|c| c.retry_schedule = fast_retries(50, 20)).await;
    let (url, got) = hanging_up_server(5).await;
    app.create_webhook(&url, Some(&["message"])).await;
    let sent = send_many(&app, 10, 10).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut takes = Takes::default();
    loop {
        let log = got.lock().unwrap().clone();
        let good: HashSet<String> = log
            .iter()
            .filter(|(good, _, _)| *good)
            .map(|(_, json, _)| json["data"]["message_id"].as_str().unwrap_or_default().to_string())
            .collect();
        if sent.iter().all(|(_, id)| good.contains(id)) {
            for (_, json, webhook_id) in &log {
                takes.take(json, webhook_id);
            }
            let tally = takes.tally(&sent, 0, log.len());
            tally.report("receiver hanging up in the middle of its answer");
            assert_eq!(tally.delivered, 10);
            assert_eq!(tally.attempts, 15);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not all answered whole");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = app.get_json("/v1/events?after=0&limit=100").await["events"].clone();
    let mut broken = 0;
    for event in events.as_array().unwrap() {
        let attempts = app
            .get_json(&format!("/v1/events/{}/attempts", event["id"].as_str().unwrap()))
            .await;
        broken += attempts["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["error"].as_str().is_some_and(|e| e.contains("broken off")))
            .count();
    }
    assert_eq!(broken, 5, "each hang-up is recorded as a failed attempt");
}

#[tokio::test]
async fn a_redirecting_receiver_is_not_followed_and_dead_deliveries_are_resent_to_the_fixed_url() {
    let app = TestApp::spawn_with(|c| c.retry_schedule = fast_retries(50, 2)).await;
    let target = Receiver::start().await;
    let location = target.url.clone();
    let redirect = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let location = location.clone();
            async move { (StatusCode::TEMPORARY_REDIRECT, [("location", location)]) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirecting = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, redirect).await });
    let endpoint = app.create_webhook(&redirecting, Some(&["message"])).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let sent = send_many(&app, 12, 3).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while dead_count(&app).await < 12 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the redirected deliveries never died"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(target.count(), 0, "a redirect is never followed");
    let attempts = app.get_json("/v1/deliveries/dead?limit=1").await["deliveries"][0]["last_status_code"].clone();
    assert_eq!(attempts, 307);
    set_url(&app, &endpoint, &target.url).await;
    let (status, resent) = app
        .post("/v1/deliveries/dead/resend", json!({"endpoint_id": endpoint}))
        .await;
    assert_eq!((status, resent["scheduled"].as_u64()), (202, Some(12)));
    let tally = settle(&app, &target, &sent, 0).await;
    tally.report("receiver redirecting (307), then fixed and the dead resent");
    assert_eq!((tally.delivered, tally.duplicates), (12, 0));
}

#[tokio::test]
async fn a_full_disk_refuses_new_messages_plainly_and_loses_none_it_took() {
    let app = TestApp::spawn_sqlite_with(|c| {
        c.sqlite_max_pages = Some(160);
        c.retry_schedule = fast_retries(100, 50);
    })
    .await;
    let receiver = Receiver::start_with(Arc::new(|_, _| (StatusCode::OK, Duration::from_millis(1)))).await;
    app.create_webhook(&receiver.url, Some(&["message"])).await;
    let mut sent = Vec::new();
    let mut refused = 0;
    for i in 0..20_000 {
        let customer = format!("4477009{:05}", i % 7);
        let (status, answer) = app
            .post(
                "/v1/sandbox/inbound",
                json!({"from": customer, "body": format!("message {i} {}", "x".repeat(200))}),
            )
            .await;
        match status {
            201 => sent.push((customer, answer["message_id"].as_str().unwrap().to_string())),
            503 => {
                assert_eq!(answer["error"]["code"], "unavailable", "{answer}");
                refused += 1;
                if refused == 20 {
                    break;
                }
            }
            other => panic!("a full disk must answer 503, not {other}: {answer}"),
        }
    }
    assert_eq!(refused, 20, "the disk never filled ({} taken)", sent.len());
    let health = app.client.get(format!("{}/healthz", app.base)).send().await.unwrap();
    assert!(matches!(health.status().as_u16(), 200 | 503), "the server is still up");
    // Space is made (the cap goes): everything taken before is delivered.
    let app = app.restart_with(|c| c.retry_schedule = fast_retries(100, 50)).await;
    let tally = settle(&app, &receiver, &sent, 0).await;
    tally.report(&format!(
        "disk full ({refused} messages refused with 503), then space made"
    ));
}

/// Terminates every connection to `database` `times` times, `every` apart (what a PostgreSQL
/// restart does to them); answers how many were cut.
async fn cut_connections(database: &str, times: usize, every: Duration) -> usize {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&crate::harness::postgres_admin_url())
        .await
        .unwrap();
    let mut cuts = 0;
    for _ in 0..times {
        tokio::time::sleep(every).await;
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(database)
        .fetch_all(&mut admin)
        .await
        .unwrap();
        cuts += killed.len();
    }
    cuts
}

#[tokio::test]
async fn postgres_connections_cut_under_load_lose_nothing_that_was_accepted() {
    let app = TestApp::spawn_postgres_with(|c| c.retry_schedule = fast_retries(100, 50)).await;
    let database = app.postgres_database().unwrap();
    let receiver = Receiver::start().await;
    app.create_webhook(&receiver.url, Some(&["message"])).await;
    let base = app.base.clone();
    let keys = app.keys.clone();
    let stream = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut sent = Vec::new();
        let mut failed = 0;
        for i in 0..400 {
            let customer = format!("4477009{:05}", i % 8);
            let response = client
                .post(format!("{base}/v1/sandbox/inbound"))
                .basic_auth(&keys.app_key, Some(&keys.auth_key))
                .json(&json!({"from": customer, "body": format!("message {i}")}))
                .send()
                .await
                .unwrap();
            match response.status().as_u16() {
                201 => {
                    let body: Value = response.json().await.unwrap();
                    sent.push((customer, body["message_id"].as_str().unwrap().to_string()));
                }
                500 | 503 => failed += 1,
                other => panic!("unexpected {other}"),
            }
        }
        (sent, failed)
    });
    let cuts = cut_connections(&database, 3, Duration::from_millis(300)).await;
    let (sent, failed) = stream.await.unwrap();
    assert!(cuts > 0, "connections were cut");
    let tally = settle(&app, &receiver, &sent, 0).await;
    tally.report(&format!(
        "PostgreSQL connections cut 3 times ({cuts} connections; {failed} API calls refused meanwhile)"
    ));
}

/// Connections cut while many callers' messages share a group commit: a batch that loses its
/// connection fails whole (every caller in it gets 503), and nothing is ever half-written:
/// each stored message has its event, each event its delivery, and each conversation counts
/// exactly its messages.
#[tokio::test]
async fn postgres_connections_cut_in_the_middle_of_batches_fail_whole_batches() {
    let app = TestApp::spawn_postgres_with(|c| c.retry_schedule = fast_retries(100, 50)).await;
    let database = app.postgres_database().unwrap();
    let receiver = Receiver::start().await;
    app.create_webhook(&receiver.url, Some(&["message"])).await;
    // Sixteen senders at once (so batches hold several callers), each with conversations of
    // its own and one message at a time (so each conversation has one order).
    let mut senders = tokio::task::JoinSet::new();
    for sender in 0..16 {
        let (base, keys) = (app.base.clone(), app.keys.clone());
        senders.spawn(async move {
            let client = reqwest::Client::new();
            let (mut sent, mut refused) = (Vec::new(), 0);
            for i in 0..40 {
                let customer = format!("44770{sender:02}{:05}", i % 3);
                let response = client
                    .post(format!("{base}/v1/sandbox/inbound"))
                    .basic_auth(&keys.app_key, Some(&keys.auth_key))
                    .json(&json!({"from": customer, "body": format!("{sender}-{i}")}))
                    .send()
                    .await
                    .unwrap();
                match response.status().as_u16() {
                    201 => {
                        let body: Value = response.json().await.unwrap();
                        sent.push((customer, body["message_id"].as_str().unwrap().to_string()));
                    }
                    503 => refused += 1,
                    other => panic!("unexpected {other}: {}", response.text().await.unwrap_or_default()),
                }
            }
            (sent, refused)
        });
    }
    let cuts = cut_connections(&database, 4, Duration::from_millis(150)).await;
    let (mut sent, mut refused) = (Vec::new(), 0);
    while let Some(done) = senders.join_next().await {
        let (s, r) = done.unwrap();
        sent.extend(s);
        refused += r;
    }
    assert!(cuts > 0, "connections were cut");
    let tally = settle(&app, &receiver, &sent, 0).await;

    use sqlx::Connection;
    let url = crate::harness::postgres_admin_url();
    let url = format!("{}/{database}", url.rsplit_once('/').unwrap().0);
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    for (what, sql) in [
        (
            "messages without their event",
            "SELECT COUNT(*) FROM messages m WHERE NOT EXISTS \
               (SELECT 1 FROM events e WHERE e.kind = 'message' AND e.payload::jsonb #>> '{data,message_id}' = m.id)",
        ),
        (
            "events without their message",
            "SELECT COUNT(*) FROM events e WHERE e.kind = 'message' AND NOT EXISTS \
               (SELECT 1 FROM messages m WHERE m.id = e.payload::jsonb #>> '{data,message_id}')",
        ),
        (
            "events without their delivery",
            "SELECT COUNT(*) FROM events e WHERE e.kind = 'message' AND NOT EXISTS \
               (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq)",
        ),
        (
            "conversations whose count is off",
            "SELECT COUNT(*) FROM conversations c WHERE c.message_count <> \
               (SELECT COUNT(*) FROM messages m WHERE m.instance_id = c.instance_id AND m.customer = c.customer)",
        ),
    ] {
        let count: i64 = sqlx::query_scalar(sql).fetch_one(&mut db).await.unwrap();
        assert_eq!(count, 0, "{what}");
    }
    tally.report(&format!(
        "PostgreSQL connections cut 4 times under 16 concurrent senders ({cuts} connections; {refused} API calls refused with 503)"
    ));
}

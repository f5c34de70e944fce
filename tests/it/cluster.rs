//! Several `botlinkd serve` processes on one PostgreSQL database: they share the delivery
//! work, keep per-conversation order, take over a killed process's deliveries, and see each
//! other's events live. These tests always need PostgreSQL (127.0.0.1:5432 by default, or
//! BOTLINKD_TEST_POSTGRES) and fail when it is missing.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{PATIENCE, Receiver, TestDb, expect_every_message_in_order};
use crate::process::{Served, cli, serve};

const SERVE_ARGS: [&str; 8] = [
    "--webhook-allow-cidrs",
    "127.0.0.0/8",
    "--retry-schedule",
    "200ms,200ms,200ms,200ms,200ms,200ms",
    "--attempt-timeout",
    "1s",
    "--delivery-lease",
    "4s",
];

/// `serve` arguments for one database, with this attempt timeout and delivery lease.
fn lease_args<'a>(url: &'a str, attempt_timeout: &'a str, lease: &'a str) -> [&'a str; 8] {
    [
        "--database-url",
        url,
        "--webhook-allow-cidrs",
        "127.0.0.0/8",
        "--attempt-timeout",
        attempt_timeout,
        "--delivery-lease",
        lease,
    ]
}

async fn start_cluster(db: &TestDb, dir: &std::path::Path, n: usize) -> Vec<Served> {
    let mut args: Vec<&str> = vec!["--database-url", &db.url];
    args.extend(SERVE_ARGS);
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(serve(dir, &args).await);
    }
    nodes
}

async fn create_instance(db: &TestDb, dir: &std::path::Path) -> (String, String) {
    let (_, app_key, auth_key) = create_instance_with_id(db, dir).await;
    (app_key, auth_key)
}

async fn create_instance_with_id(db: &TestDb, dir: &std::path::Path) -> (i64, String, String) {
    let created: Value = serde_json::from_str(
        &cli(
            dir,
            &[
                "--database-url",
                &db.url,
                "instance",
                "create",
                "--name",
                "shop",
                "--json",
            ],
        )
        .await,
    )
    .unwrap();
    (
        created["instance_id"]
            .as_i64()
            .or_else(|| created["instance_id"].as_str()?.parse().ok())
            .unwrap(),
        created["app_key"].as_str().unwrap().into(),
        created["auth_key"].as_str().unwrap().into(),
    )
}

#[tokio::test]
async fn three_processes_share_the_work_and_survive_a_kill_9() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let (app_key, auth_key) = create_instance(&db, dir.path()).await;
    let mut nodes = start_cluster(&db, dir.path(), 3).await;
    let receiver = Receiver::start_with(Arc::new(|_, _| (axum::http::StatusCode::OK, Duration::from_millis(3)))).await;
    let client = reqwest::Client::new();
    subscribe(
        &client,
        &nodes[0].base,
        &app_key,
        &auth_key,
        json!({"url": receiver.url, "events": ["message"]}),
    )
    .await;

    // Three senders, each with its own conversations, rotating over the three processes.
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let mut senders = Vec::new();
    for sender in 0..3 {
        let (bases, app_key, auth_key, client) = (bases.clone(), app_key.clone(), auth_key.clone(), client.clone());
        senders.push(tokio::spawn(async move {
            let mut accepted: Vec<(String, String)> = Vec::new();
            let mut dead: HashSet<usize> = HashSet::new();
            for i in 0..300 {
                let customer = format!("4478000{sender}{:04}", i % 4);
                let mut node = i % bases.len();
                while dead.contains(&node) {
                    node = (node + 1) % bases.len();
                }
                let response = client
                    .post(format!("{}/v1/sandbox/inbound", bases[node]))
                    .basic_auth(&app_key, Some(&auth_key))
                    .json(&json!({"from": customer, "body": format!("{sender}-{i}")}))
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status() == 201 => {
                        let body: Value = r.json().await.unwrap();
                        accepted.push((customer, body["message_id"].as_str().unwrap().to_string()));
                    }
                    // The killed process: not answered means not promised; move on.
                    _ => {
                        dead.insert(node);
                    }
                }
            }
            accepted
        }));
    }
    // Kill the second process once deliveries are flowing.
    while receiver.count() < 150 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    nodes[1].child.start_kill().unwrap();
    nodes[1].child.wait().await.unwrap();

    let mut accepted = Vec::new();
    for s in senders {
        accepted.extend(s.await.unwrap());
    }
    assert!(accepted.len() > 600, "most messages were accepted ({})", accepted.len());

    // A killed process's leases run out after 4 s; everything must be in well within the
    // receiver's patience after that.
    let (delivered, duplicates) = expect_every_message_in_order(&receiver, &accepted).await;
    eprintln!(
        "cluster: {} accepted, {delivered} delivered, {duplicates} duplicates",
        accepted.len()
    );
}

/// A process killed in the middle of an attempt: another process finds it gone by its
/// liveness lock, free for 5 s, and sends the delivery again (same payload, so the same `webhook-id`) within
/// seconds, long before the minute-long lease would have run out; the conversation's next
/// message, taken by the other process meanwhile, follows it in order.
#[tokio::test]
async fn a_killed_process_s_deliveries_are_taken_over_before_their_lease_ends() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let (app_key, auth_key) = create_instance(&db, dir.path()).await;
    let args = lease_args(&db.url, "10s", "60s");
    // The first request hangs for longer than the test: the process sending it dies waiting.
    let first_body = Arc::new(std::sync::Mutex::new(Value::Null));
    let kept = first_body.clone();
    let receiver = Receiver::start_with(Arc::new(move |n, body| {
        if n == 0 {
            *kept.lock().unwrap() = body.clone();
            (axum::http::StatusCode::OK, Duration::from_secs(300))
        } else {
            (axum::http::StatusCode::OK, Duration::ZERO)
        }
    }))
    .await;
    let mut doomed = serve(dir.path(), &args).await;
    let client = reqwest::Client::new();
    subscribe(
        &client,
        &doomed.base,
        &app_key,
        &auth_key,
        json!({"url": receiver.url, "events": ["message"]}),
    )
    .await;
    let first = post_inbound(&client, &doomed.base, &app_key, &auth_key, "first").await;
    assert_eq!(first.status(), 201);
    tokio::time::timeout(PATIENCE, async {
        while receiver.count() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the first process attempts the delivery");

    // The survivor starts only now, so the attempt in flight is surely the doomed process's.
    let survivor = serve(dir.path(), &args).await;
    let second = post_inbound(&client, &survivor.base, &app_key, &auth_key, "second").await;
    assert_eq!(second.status(), 201);
    // The survivor judges others only once it has held its own liveness lock for 5 s.
    tokio::time::sleep(Duration::from_secs(6)).await;
    doomed.child.start_kill().unwrap();
    doomed.child.wait().await.unwrap();
    let killed_at = std::time::Instant::now();

    let again = receiver
        .next_within(Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("nothing was delivered in 30 s after the kill (the lease is 60 s)"));
    let taken_over_in = killed_at.elapsed();
    assert_eq!(again.json, *first_body.lock().unwrap(), "the same event, sent again");
    assert_eq!(again.json["data"]["body"], "first");
    let next = receiver.next().await;
    assert_eq!(next.json["data"]["body"], "second", "the conversation goes on in order");
    assert!(
        taken_over_in < Duration::from_secs(15),
        "taken over {taken_over_in:?} after the kill, not within seconds"
    );
    eprintln!("cluster: a killed process's delivery was sent again {taken_over_in:?} after the kill");
    // Operators see the takeover in the survivor's metrics.
    let metrics = client
        .get(format!("{}/metrics", survivor.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let taken: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("botlinkd_leases_taken_over_total{"))
        .collect();
    assert!(
        taken.contains(&"botlinkd_leases_taken_over_total{work=\"deliveries\"} 1")
            && taken.contains(&"botlinkd_leases_taken_over_total{work=\"sends\"} 0"),
        "{taken:?}"
    );
}

/// Every process's liveness connection cut again and again for 3 s while one of them waits on
/// a slow receiver: each registers again at its next look, so no lock stays free for the
/// grace period, nobody counts as gone, and the delivery is made once.
#[tokio::test]
async fn processes_that_lose_their_liveness_connection_keep_their_leases() {
    use sqlx::Connection;
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let (app_key, auth_key) = create_instance(&db, dir.path()).await;
    let args = lease_args(&db.url, "20s", "90s");
    let receiver = Receiver::start_with(Arc::new(|n, _| {
        let wait = if n == 0 {
            Duration::from_secs(12)
        } else {
            Duration::ZERO
        };
        (axum::http::StatusCode::OK, wait)
    }))
    .await;
    let nodes = [serve(dir.path(), &args).await, serve(dir.path(), &args).await];
    let started = std::time::Instant::now();
    let client = reqwest::Client::new();
    subscribe(
        &client,
        &nodes[0].base,
        &app_key,
        &auth_key,
        json!({"url": receiver.url, "events": ["message"]}),
    )
    .await;
    let posted = post_inbound(&client, &nodes[0].base, &app_key, &auth_key, "only once").await;
    assert_eq!(posted.status(), 201);
    // Both processes are past their own grace period, looking at each other every second.
    tokio::time::sleep(Duration::from_secs(7).saturating_sub(started.elapsed())).await;
    assert_eq!(receiver.count(), 1, "the delivery is under way");
    // A flapping network: every liveness connection cut every 200 ms for 3 s.
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut cut = 0;
    let flapping = std::time::Instant::now();
    while flapping.elapsed() < Duration::from_secs(3) {
        let terminated: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'botlinkd-liveness'",
        )
        .fetch_all(&mut admin)
        .await
        .unwrap();
        cut += terminated.len();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(cut >= 4, "the liveness connections were cut again and again ({cut})");

    let delivered = receiver
        .next_within(Duration::from_secs(30))
        .await
        .expect("the delivery arrives");
    assert_eq!(delivered.json["data"]["body"], "only once");
    receiver.expect_nothing(Duration::from_secs(8)).await;
    assert_eq!(receiver.count(), 1, "no process took over a live process's lease");
}

/// A Meta send and a media download leased for an hour: left alone while their process lives,
/// due again within seconds once it is gone.
#[tokio::test]
async fn sends_and_downloads_leased_to_a_process_that_is_gone_are_due_again_within_seconds() {
    use botlinkd::clock::Clock;
    use botlinkd::store::postgres::PgStore;
    use botlinkd::store::{MediaFetch, NewChannelSend, Store};
    let db = TestDb::postgres().await;
    let hour = 3_600_000;
    let survivor = PgStore::open(&db.url).await.unwrap();
    let doomed = PgStore::open(&db.url).await.unwrap();
    let now = Clock::system().now_ms();
    survivor.start_serving(now).await.unwrap();
    doomed.start_serving(now).await.unwrap();
    doomed
        .enqueue_channel_send(NewChannelSend {
            instance_id: 1,
            message_id: None,
            customer: "447700900001".into(),
            request: "{}".into(),
            created_at: now,
        })
        .await
        .unwrap();
    let fetch = MediaFetch {
        instance_id: 1,
        message_id: "wamid.media".into(),
        media_id: "media-1".into(),
        kind: "image".into(),
        sha256: None,
        attempts: 0,
        created_at: now,
    };
    doomed.enqueue_media_fetch(fetch, now).await.unwrap();
    assert_eq!(doomed.claim_channel_sends(now, 10, now + hour).await.unwrap().len(), 1);
    assert_eq!(doomed.claim_media_fetches(now, 10, now + hour).await.unwrap().len(), 1);

    // Several of the survivor's looks go by: a live process's leases hold.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let later = Clock::system().now_ms();
    assert!(
        survivor
            .claim_channel_sends(later, 10, later + hour)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        survivor
            .claim_media_fetches(later, 10, later + hour)
            .await
            .unwrap()
            .is_empty()
    );

    drop(doomed);
    let dropped_at = std::time::Instant::now();
    let (mut sends, mut fetches) = (0, 0);
    while (sends, fetches) != (1, 1) && dropped_at.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = Clock::system().now_ms();
        sends += survivor.claim_channel_sends(now, 10, now + hour).await.unwrap().len();
        fetches += survivor.claim_media_fetches(now, 10, now + hour).await.unwrap().len();
    }
    assert_eq!(
        (sends, fetches),
        (1, 1),
        "the gone process's send and download are due again within 15 s"
    );
    assert!(
        dropped_at.elapsed() >= Duration::from_secs(4),
        "a free lock counts only after the grace period"
    );
    eprintln!(
        "cluster: a gone process's send and download were due again after {:?}",
        dropped_at.elapsed()
    );
}

#[tokio::test]
async fn a_watcher_on_one_process_sees_events_ingested_by_another() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let (app_key, auth_key) = create_instance(&db, dir.path()).await;
    let nodes = start_cluster(&db, dir.path(), 2).await;
    let client = reqwest::Client::new();
    assert!(
        cli(dir.path(), &["--database-url", &db.url, "migrate"])
            .await
            .contains("up to date")
    );
    let receiver = Receiver::start().await;
    subscribe(
        &client,
        &nodes[1].base,
        &app_key,
        &auth_key,
        json!({"url": receiver.url, "events": ["message"]}),
    )
    .await;

    let poll = client
        .get(format!("{}/v1/events?wait=20", nodes[0].base))
        .basic_auth(&app_key, Some(&auth_key))
        .send();
    let poll = tokio::spawn(poll);
    let mut stream = open_stream(&client, &nodes[0].base, &app_key, &auth_key).await;

    let sent: Value = post_inbound(&client, &nodes[1].base, &app_key, &auth_key, "via node 2")
        .await
        .json()
        .await
        .unwrap();
    let message_id = sent["message_id"].as_str().unwrap();
    let mut seen = String::new();
    assert!(
        stream_shows(&mut stream, &mut seen, message_id).await,
        "the stream on node 1 showed the event from node 2"
    );
    // Whichever process delivered it, node 1's stream shows the attempt.
    receiver.next().await;
    assert!(
        stream_shows(&mut stream, &mut seen, "event: attempt").await,
        "the attempt reached the stream on node 1"
    );
    let polled: Value = poll.await.unwrap().unwrap().json().await.unwrap();
    assert_eq!(polled["events"][0]["payload"]["data"]["message_id"], message_id);
}

/// A process announces an instance's news (events that left nothing due, attempts) only while
/// another process watches that instance: notices nobody waits for are not sent at all. A
/// watcher that comes later still hears of the next event at once.
#[tokio::test]
async fn only_instances_watched_elsewhere_are_announced() {
    use sqlx::Connection;
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let (watched, app_key, auth_key) = create_instance_with_id(&db, dir.path()).await;
    let (quiet, quiet_app, quiet_auth) = create_instance_with_id(&db, dir.path()).await;
    let nodes = start_cluster(&db, dir.path(), 2).await;
    let client = reqwest::Client::new();
    let mut heard = sqlx::postgres::PgListener::connect(&db.url).await.unwrap();
    heard
        .listen_all(["botlinkd_events", "botlinkd_attempts"])
        .await
        .unwrap();
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();

    // The quiet instance has an endpoint, so it makes an attempt too; nobody watches it.
    let receiver = Receiver::start().await;
    subscribe(
        &client,
        &nodes[1].base,
        &quiet_app,
        &quiet_auth,
        json!({"url": receiver.url}),
    )
    .await;
    let mut stream = open_stream(&client, &nodes[0].base, &app_key, &auth_key).await;
    assert_eq!(
        post_inbound(&client, &nodes[1].base, &quiet_app, &quiet_auth, "unwatched")
            .await
            .status(),
        201
    );
    receiver.next().await;
    tokio::time::timeout(PATIENCE, async {
        while sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM attempts")
            .fetch_one(&mut admin)
            .await
            .unwrap()
            == 0
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the quiet instance's attempt was recorded");

    let sent: Value = post_inbound(&client, &nodes[1].base, &app_key, &auth_key, "watched")
        .await
        .json()
        .await
        .unwrap();
    let mut seen = String::new();
    assert!(stream_shows(&mut stream, &mut seen, sent["message_id"].as_str().unwrap()).await);
    // Whatever was announced before the watched instance's event arrived by now; a little
    // longer for a notice from the other process.
    let mut notices = Vec::new();
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), heard.recv()).await {
        notices.push(n.payload().to_string());
    }
    assert!(
        notices.iter().any(|n| n.starts_with(&format!("{watched}:"))),
        "the watched instance's event was announced: {notices:?}"
    );
    let about_quiet =
        |n: &String| n.starts_with(&format!("{quiet}:")) || n.contains(&format!("\"instance_id\":{quiet},"));
    assert!(
        !notices.iter().any(about_quiet),
        "nothing about the unwatched instance was announced: {notices:?}"
    );

    // Once watched on node 1, the quiet instance's next event reaches it from node 2 at once.
    let poll = client
        .get(format!("{}/v1/events?wait=20", nodes[0].base))
        .basic_auth(&quiet_app, Some(&quiet_auth))
        .query(&[("after", "0")])
        .send();
    let first: Value = poll.await.unwrap().json().await.unwrap();
    let after = first["next"].as_str().unwrap().to_string();
    let started = std::time::Instant::now();
    let poll = tokio::spawn(
        client
            .get(format!("{}/v1/events?wait=20", nodes[0].base))
            .basic_auth(&quiet_app, Some(&quiet_auth))
            .query(&[("after", after.as_str())])
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let later: Value = post_inbound(&client, &nodes[1].base, &quiet_app, &quiet_auth, "now watched")
        .await
        .json()
        .await
        .unwrap();
    let polled: Value = poll.await.unwrap().unwrap().json().await.unwrap();
    assert_eq!(
        polled["events"][0]["payload"]["data"]["message_id"],
        later["message_id"]
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the long-poll was woken by the event, not by its deadline ({:?})",
        started.elapsed()
    );
}

/// The notices go out on a connection of their own after each commit; when that connection
/// is cut (a restart, a proxy's idle timeout), the next event still reaches the other
/// process's watchers: the notifier sends it again on a new connection.
#[tokio::test]
async fn events_still_reach_another_process_after_the_notifier_loses_its_connection() {
    use sqlx::Connection;
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let (app_key, auth_key) = create_instance(&db, dir.path()).await;
    let nodes = start_cluster(&db, dir.path(), 2).await;
    let client = reqwest::Client::new();
    let inbound = |body| post_inbound(&client, &nodes[1].base, &app_key, &auth_key, body);
    let mut stream = open_stream(&client, &nodes[0].base, &app_key, &auth_key).await;
    let mut seen = String::new();
    // Once, so that node 2's notifier has its connection.
    let first: Value = inbound("before").await.json().await.unwrap();
    assert!(stream_shows(&mut stream, &mut seen, first["message_id"].as_str().unwrap()).await);

    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'botlinkd-notifier'",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(
        cut,
        [true],
        "node 2, the only one that wrote, has its notifier connection"
    );

    let after: Value = inbound("after").await.json().await.unwrap();
    assert!(
        stream_shows(&mut stream, &mut seen, after["message_id"].as_str().unwrap()).await,
        "node 1's stream showed the first event written after the cut"
    );
}

/// An operator who drops the routines (or restores a dump without functions) does not stop
/// delivery or ingest: the next completion and the next ingest batch find their routine
/// missing, create it again and are written.
#[tokio::test]
async fn dropped_routines_are_made_again_by_the_next_write() {
    use sqlx::Connection;
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let (app_key, auth_key) = create_instance(&db, dir.path()).await;
    let nodes = start_cluster(&db, dir.path(), 1).await;
    let client = reqwest::Client::new();
    let receiver = Receiver::start().await;
    subscribe(
        &client,
        &nodes[0].base,
        &app_key,
        &auth_key,
        json!({"url": receiver.url, "events": ["message"]}),
    )
    .await;
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let inbound = |body| post_inbound(&client, &nodes[0].base, &app_key, &auth_key, body);
    assert_eq!(inbound("first").await.status(), 201);
    assert_eq!(receiver.next().await.json["data"]["body"], "first");
    wait_until_delivered(&mut admin, 1).await;

    for (prefix, body) in [("botlinkd_delivered", "second"), ("botlinkd_ingest", "third")] {
        let routine: String = sqlx::query_scalar("SELECT proname::TEXT FROM pg_proc WHERE starts_with(proname, $1)")
            .bind(format!("{prefix}_"))
            .fetch_one(&mut admin)
            .await
            .unwrap();
        sqlx::query(&format!("DROP FUNCTION {routine}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let sent = inbound(body).await;
        assert_eq!(sent.status(), 201, "{}", sent.text().await.unwrap());
        assert_eq!(receiver.next().await.json["data"]["body"], body);
        wait_until_delivered(&mut admin, if body == "second" { 2 } else { 3 }).await;
        let restored: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_proc WHERE proname = $1")
            .bind(&routine)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert_eq!(restored, 1, "{routine} made again");
    }
    let page: Value = client
        .get(format!("{}/v1/events", nodes[0].base))
        .basic_auth(&app_key, Some(&auth_key))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bodies: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["payload"]["data"]["body"].as_str())
        .collect();
    assert_eq!(bodies, ["first", "second", "third"]);
    receiver.expect_nothing(Duration::from_millis(300)).await;
}

/// Waits until `n` deliveries are recorded as delivered (a completion is written after the
/// receiver has answered).
async fn wait_until_delivered(admin: &mut sqlx::PgConnection, n: i64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let delivered: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE state = 2")
            .fetch_one(&mut *admin)
            .await
            .unwrap();
        if delivered == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{delivered} deliveries recorded as delivered, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Subscribes an endpoint through one process (`body` is the `POST /v1/webhooks` request).
async fn subscribe(client: &reqwest::Client, base: &str, app_key: &str, auth_key: &str, body: Value) {
    let hook = client
        .post(format!("{base}/v1/webhooks"))
        .basic_auth(app_key, Some(auth_key))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(hook.status(), 201, "{}", hook.text().await.unwrap_or_default());
}

/// A customer's text message to the instance, posted to one process's sandbox.
async fn post_inbound(
    client: &reqwest::Client,
    base: &str,
    app_key: &str,
    auth_key: &str,
    body: &str,
) -> reqwest::Response {
    client
        .post(format!("{base}/v1/sandbox/inbound"))
        .basic_auth(app_key, Some(auth_key))
        .json(&json!({"from": "447123456789", "body": body}))
        .send()
        .await
        .unwrap()
}

/// An instance's `/v1/stream` on one process, past its `ready` item.
async fn open_stream(client: &reqwest::Client, base: &str, app_key: &str, auth_key: &str) -> reqwest::Response {
    let mut stream = client
        .get(format!("{base}/v1/stream"))
        .basic_auth(app_key, Some(auth_key))
        .send()
        .await
        .unwrap();
    let ready = String::from_utf8(stream.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    assert!(ready.contains("ready"), "{ready}");
    stream
}

/// Whether `stream` shows `text` (read into `seen`) within [`PATIENCE`].
async fn stream_shows(stream: &mut reqwest::Response, seen: &mut String, text: &str) -> bool {
    tokio::time::timeout(PATIENCE, async {
        while !seen.contains(text) {
            seen.push_str(&String::from_utf8_lossy(&stream.chunk().await.unwrap().unwrap()));
        }
    })
    .await
    .is_ok()
}

/// Writers in three processes, a pull reader on each process following the feed, and one
/// transaction that takes its feed position first and commits last (as a slow writer would):
/// every reader sees every event exactly once, all in the same cursor order.
#[tokio::test]
async fn pull_readers_see_every_event_once_in_cursor_order_while_three_processes_write() {
    use sqlx::Connection;
    const PER_WRITER: usize = 120;
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let (instance_id, app_key, auth_key) = create_instance_with_id(&db, dir.path()).await;
    let nodes = start_cluster(&db, dir.path(), 3).await;
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let client = reqwest::Client::new();

    // The straggler: an event written the way botlinkd writes one, by a transaction that
    // then stays open while the processes commit events after it.
    let mut straggler = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut open = sqlx::Connection::begin(&mut straggler).await.unwrap();
    let payload = json!({"event": "message", "instance_id": instance_id.to_string(),
        "data": {"from": "447000000999", "to": "15550100001", "type": "text", "body": "late",
                 "message_id": "wamid.straggler", "timestamp": 1_700_000_000}});
    sqlx::query(
        "INSERT INTO events (seq, id, instance_id, kind, conversation, payload, created_at) \
         VALUES (pg_current_xact_id()::TEXT::INT8 << 20, 'evt_straggler', $1, 'message', '447000000999', $2, 0)",
    )
    .bind(instance_id)
    .bind(payload.to_string())
    .execute(&mut *open)
    .await
    .unwrap();

    let mut writers = Vec::new();
    for (w, base) in bases.iter().enumerate() {
        let (base, app_key, auth_key, client) = (base.clone(), app_key.clone(), auth_key.clone(), client.clone());
        writers.push(tokio::spawn(async move {
            let permits = Arc::new(tokio::sync::Semaphore::new(8));
            let mut sends = tokio::task::JoinSet::new();
            for i in 0..PER_WRITER {
                let permit = permits.clone().acquire_owned().await.unwrap();
                let request = client
                    .post(format!("{base}/v1/sandbox/inbound"))
                    .basic_auth(&app_key, Some(&auth_key))
                    .json(&json!({"from": format!("44780{w}{:05}", i % 16), "body": format!("{w}-{i}")}));
                sends.spawn(async move {
                    let response = request.send().await.unwrap();
                    assert_eq!(response.status(), 201);
                    drop(permit);
                    let body: Value = response.json().await.unwrap();
                    body["message_id"].as_str().unwrap().to_string()
                });
            }
            let mut ids = Vec::new();
            while let Some(id) = sends.join_next().await {
                ids.push(id.unwrap());
            }
            ids
        }));
    }
    let expected = 3 * PER_WRITER + 1;
    let mut readers = Vec::new();
    for base in &bases {
        let (base, app_key, auth_key, client) = (base.clone(), app_key.clone(), auth_key.clone(), client.clone());
        readers.push(tokio::spawn(async move {
            let mut cursor = "0".to_string();
            let mut seen: Vec<(u64, String)> = Vec::new();
            let deadline = tokio::time::Instant::now() + PATIENCE * 2;
            while seen.len() < expected {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "only {} events seen",
                    seen.len()
                );
                let page: Value = client
                    .get(format!("{base}/v1/events?after={cursor}&wait=2&limit=37"))
                    .basic_auth(&app_key, Some(&auth_key))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                for event in page["events"].as_array().unwrap() {
                    let position: u64 = event["cursor"].as_str().unwrap().parse().unwrap();
                    let message_id = event["payload"]["data"]["message_id"].as_str().unwrap().to_string();
                    seen.push((position, message_id));
                }
                cursor = page["next"].as_str().unwrap().to_string();
            }
            seen
        }));
    }
    // Let the processes commit well past the straggler's position, then commit it.
    tokio::time::sleep(Duration::from_millis(800)).await;
    open.commit().await.unwrap();

    let mut sent: HashSet<String> = HashSet::from(["wamid.straggler".to_string()]);
    for writer in writers {
        sent.extend(writer.await.unwrap());
    }
    assert_eq!(sent.len(), expected);
    let mut orders = Vec::new();
    for reader in readers {
        let seen = reader.await.unwrap();
        assert!(seen.windows(2).all(|pair| pair[0].0 < pair[1].0), "cursors only grow");
        let ids: Vec<String> = seen.into_iter().map(|(_, id)| id).collect();
        let distinct: HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "no event twice");
        assert_eq!(distinct, sent.iter().collect(), "every event, nothing else");
        orders.push(ids);
    }
    assert_eq!(orders[0], orders[1], "one order for every reader");
    assert_eq!(orders[1], orders[2], "one order for every reader");
    let straggler_at = orders[0].iter().position(|id| id == "wamid.straggler").unwrap();
    eprintln!("feed stress: {expected} events, the straggler at place {straggler_at}");
}

#[tokio::test]
async fn a_rate_limit_holds_across_three_processes() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let (app_key, auth_key) = create_instance(&db, dir.path()).await;
    let nodes = start_cluster(&db, dir.path(), 3).await;
    let arrivals = Arc::new(std::sync::Mutex::new(Vec::<std::time::Instant>::new()));
    let seen = arrivals.clone();
    let receiver = Receiver::start_with(Arc::new(move |_, _| {
        seen.lock().unwrap().push(std::time::Instant::now());
        (axum::http::StatusCode::OK, Duration::ZERO)
    }))
    .await;
    let client = reqwest::Client::new();
    subscribe(
        &client,
        &nodes[0].base,
        &app_key,
        &auth_key,
        json!({"url": receiver.url, "events": ["message"], "rate_limit": 10}),
    )
    .await;
    // 40 messages from 8 customers, each process taking a third of them.
    let mut accepted = Vec::new();
    for i in 0..40 {
        let customer = format!("4478100{:05}", i % 8);
        let response = client
            .post(format!("{}/v1/sandbox/inbound", nodes[i % 3].base))
            .basic_auth(&app_key, Some(&auth_key))
            .json(&json!({"from": customer, "body": format!("paced {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        accepted.push((customer, body["message_id"].as_str().unwrap().to_string()));
    }
    let (delivered, _) = expect_every_message_in_order(&receiver, &accepted).await;
    assert_eq!(delivered, 40);
    let times = arrivals.lock().unwrap().clone();
    let span = times.last().unwrap().duration_since(times[0]);
    // One pace for all three: 39 intervals of 100 ms, give or take the scheduling.
    assert!(
        span >= Duration::from_millis(39 * 100 - 150),
        "40 deliveries took only {span:?}"
    );
    let busiest = crate::harness::most_within_a_second(&times);
    assert!(busiest <= 11, "{busiest} deliveries within one second");
}

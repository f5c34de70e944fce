//! The pull feed: events after a cursor, and long-polling when there are none.

use std::time::{Duration, Instant};

use crate::harness::TestApp;

#[tokio::test]
async fn events_are_pulled_after_a_cursor() {
    let app = TestApp::spawn_with(|c| {
        c.sandbox_delivered_after = None;
        c.sandbox_read_after = None;
    })
    .await;
    let first = app.inbound_text("447000000001", "one").await;
    app.send_text("447000000001", "two").await;

    let feed = app.get_json("/v1/events").await;
    let events = feed["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["type"], "message");
    assert_eq!(events[0]["payload"]["data"]["message_id"], first.as_str());
    assert_eq!(events[1]["type"], "ack.sent");
    assert_eq!(events[1]["payload"]["data"]["status"], "sent");
    assert!(events[0]["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(feed["next"], events[1]["cursor"]);

    let page = app.get_json("/v1/events?limit=1").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    let rest = app
        .get_json(&format!("/v1/events?after={}", page["next"].as_str().unwrap()))
        .await;
    assert_eq!(rest["events"].as_array().unwrap().len(), 1);
    assert_eq!(rest["events"][0]["type"], "ack.sent");

    let empty = app
        .get_json(&format!("/v1/events?after={}", feed["next"].as_str().unwrap()))
        .await;
    assert!(empty["events"].as_array().unwrap().is_empty());
    assert_eq!(empty["next"], feed["next"]);

    // Another instance sees none of these.
    let other = app.create_instance("other").await;
    let theirs: serde_json::Value = app.get_json_as(&other, "/v1/events").await;
    assert!(theirs["events"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_long_poll_wakes_when_an_event_arrives() {
    let app = TestApp::spawn().await;
    let request = app.request(reqwest::Method::GET, "/v1/events?after=0&wait=20").send();
    let started = Instant::now();
    let poll = tokio::spawn(async move { request.await.unwrap().json::<serde_json::Value>().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "the poll waits while there is nothing");
    app.inbound_text("447000000001", "wake up").await;
    let feed = poll.await.unwrap();
    assert_eq!(feed["events"][0]["payload"]["data"]["body"], "wake up");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woke on the event, not the timeout"
    );
}

#[tokio::test]
async fn a_long_poll_with_nothing_new_returns_empty_after_the_wait() {
    let app = TestApp::spawn().await;
    let started = Instant::now();
    let feed = app.get_json("/v1/events?after=0&wait=1").await;
    assert!(feed["events"].as_array().unwrap().is_empty());
    assert!(started.elapsed() >= Duration::from_millis(950));
    let (status, body) = {
        let r = app
            .request(reqwest::Method::GET, "/v1/events?wait=31")
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<serde_json::Value>().await.unwrap())
    };
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_wait");
}

#[tokio::test]
async fn finished_events_older_than_the_retention_are_pruned() {
    let app = TestApp::spawn_with(|c| {
        c.clock = botlinkd::clock::Clock::manual(1_700_000_000_000);
        c.background_workers = false;
        c.retention = Some(Duration::from_secs(3600));
        c.sandbox_delivered_after = None;
        c.sandbox_read_after = None;
    })
    .await;
    let receiver = crate::harness::Receiver::start().await;
    let endpoint = app.create_webhook(&receiver.url, Some(&["message"])).await;
    app.inbound_text("447000000001", "delivered, then old").await;
    app.app.engine.step().await.unwrap();
    // Paused endpoint: this one stays pending, so it must survive pruning.
    let id = endpoint["id"].as_str().unwrap();
    let paused = app
        .request(reqwest::Method::PATCH, &format!("/v1/webhooks/{id}"))
        .json(&serde_json::json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), 200);
    app.inbound_text("447000000002", "pending, then old").await;
    // Another instance's old event (no endpoint: nothing to wait for) goes too: retention
    // reads instance by instance.
    let other = app.create_instance("other").await;
    let written = app
        .request_as(&other, reqwest::Method::POST, "/v1/sandbox/inbound")
        .json(&serde_json::json!({"from": "447000000009", "body": "another instance, old"}))
        .send()
        .await
        .unwrap();
    assert_eq!(written.status(), 201);
    app.clock().advance(Duration::from_secs(3601));
    app.inbound_text("447000000003", "recent").await;

    assert_eq!(botlinkd::housekeeping::step(&app.app).await.unwrap(), 2);
    let others: serde_json::Value = app.get_json_as(&other, "/v1/events").await;
    assert_eq!(others["events"], serde_json::json!([]), "{others}");
    let feed = app.get_json("/v1/events").await;
    let bodies: Vec<&str> = feed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["payload"]["data"]["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["pending, then old", "recent"]);
    // History is kept.
    let history = app.get_json("/v1/conversations/447000000001/messages").await;
    assert_eq!(history["messages"][0]["body"], "delivered, then old");
}

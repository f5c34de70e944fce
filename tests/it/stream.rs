//! The live stream (`/v1/stream`): authenticated by header, resumable from a cursor, live
//! events and delivery attempts, nothing of other instances.

use reqwest::Method;
use serde_json::Value;

use crate::harness::{Keys, PATIENCE, Receiver, TestApp};

/// Reads Server-Sent Events items (kind, id, data) from a streaming response.
struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    async fn open(app: &TestApp, keys: &Keys, query: &str, last_event_id: Option<&str>) -> Self {
        let mut request = app.request_as(keys, Method::GET, &format!("/v1/stream{query}"));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    async fn next(&mut self) -> (String, Option<String>, Value) {
        tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    let mut kind = "message".to_string();
                    let mut id = None;
                    let mut data = String::new();
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("event:") {
                            kind = v.trim().to_string();
                        } else if let Some(v) = line.strip_prefix("id:") {
                            id = Some(v.trim().to_string());
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data.push_str(v.trim_start());
                        }
                    }
                    if data.is_empty() {
                        continue; // a keep-alive comment
                    }
                    return (kind, id, serde_json::from_str(&data).unwrap());
                }
                let chunk = self.response.chunk().await.unwrap().expect("stream stays open");
                self.buffer.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .expect("a stream item in time")
    }

    /// The next item of `kind`, skipping others.
    async fn next_of(&mut self, kind: &str) -> (Option<String>, Value) {
        loop {
            let (k, id, data) = self.next().await;
            if k == kind {
                return (id, data);
            }
        }
    }
}

#[tokio::test]
async fn the_stream_needs_the_keys_in_the_header() {
    let app = TestApp::spawn().await;
    let response = app.client.get(format!("{}/v1/stream", app.base)).send().await.unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn live_events_and_attempts_arrive_and_other_instances_stay_out() {
    let app = TestApp::spawn_with(|c| {
        c.sandbox_delivered_after = None;
        c.sandbox_read_after = None;
    })
    .await;
    let receiver = Receiver::start().await;
    app.create_webhook(&receiver.url, Some(&["message"])).await;
    let mut stream = SseReader::open(&app, &app.keys, "", None).await;
    let (kind, _, ready) = stream.next().await;
    assert_eq!(kind, "ready");
    assert_eq!(ready["cursor"], "0");

    let other = app.create_instance("other").await;
    let response = app
        .request_as(&other, Method::POST, "/v1/sandbox/inbound")
        .json(&serde_json::json!({"from": "447000000005", "body": "not yours"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    let id = app.inbound_text("447000000001", "live!").await;
    let (cursor, event) = stream.next_of("event").await;
    assert_eq!(event["payload"]["data"]["message_id"], id.as_str());
    assert_eq!(event["type"], "message");
    assert_eq!(cursor.as_deref(), event["cursor"].as_str());
    let (_, attempt) = stream.next_of("attempt").await;
    assert_eq!(attempt["event_id"], event["id"]);
    assert_eq!(attempt["outcome"], "success");
    assert_eq!(attempt["status_code"], 200);

    app.send_text("447000000001", "reply").await;
    let (_, ack) = stream.next_of("event").await;
    assert_eq!(ack["type"], "ack.sent");
}

#[tokio::test]
async fn a_reconnect_resumes_from_the_cursor_without_gaps() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.inbound_text("447000000001", &format!("m{i}")).await);
    }
    // From the start: every stored event, in order.
    let mut stream = SseReader::open(&app, &app.keys, "?after=0", None).await;
    stream.next_of("ready").await;
    let mut cursors = Vec::new();
    for id in &ids {
        let (cursor, event) = stream.next_of("event").await;
        assert_eq!(event["payload"]["data"]["message_id"], id.as_str());
        cursors.push(cursor.unwrap());
    }
    drop(stream);

    // Missed while disconnected, resumed with Last-Event-ID.
    let missed = app.inbound_text("447000000001", "while away").await;
    let mut resumed = SseReader::open(&app, &app.keys, "", Some(&cursors[2])).await;
    let (_, ready) = resumed.next_of("ready").await;
    assert_eq!(ready["cursor"], cursors[2].as_str());
    for expected in [&ids[3], &ids[4], &missed] {
        let (_, event) = resumed.next_of("event").await;
        assert_eq!(event["payload"]["data"]["message_id"], expected.as_str());
    }
    let response = app.request(Method::GET, "/v1/stream?after=abc").send().await.unwrap();
    assert_eq!(response.status(), 400);
    // Many watchers at once do not hold delivery back.
    let receiver = Receiver::start().await;
    app.create_webhook(&receiver.url, Some(&["message"])).await;
    let mut watchers = Vec::new();
    for _ in 0..50 {
        watchers.push(SseReader::open(&app, &app.keys, "", None).await);
    }
    assert!(app.app.live.watchers() >= 50);
    let id = app.inbound_text("447000000002", "fan-out").await;
    assert_eq!(receiver.next().await.json["data"]["message_id"], id.as_str());
    for w in watchers.iter_mut() {
        let (_, event) = w.next_of("event").await;
        assert_eq!(event["payload"]["data"]["message_id"], id.as_str());
    }
}

#[tokio::test]
async fn shutting_down_ends_open_streams_and_long_polls() {
    let app = TestApp::spawn().await;
    // The long-poll goes out first; the stream's round trip below gives it time to arrive.
    let poll = tokio::spawn(app.request(Method::GET, "/v1/events?wait=30").send());
    let mut stream = SseReader::open(&app, &app.keys, "", None).await;
    stream.next_of("ready").await;
    tokio::time::timeout(PATIENCE, app.stop())
        .await
        .expect("shutdown is not held up by watchers");
    let answered = poll.await.unwrap().expect("the long-poll was answered, not cut off");
    assert_eq!(answered.status(), 200);
}

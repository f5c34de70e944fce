//! Dead deliveries: listed by endpoint and time range, paged, and re-sent in bulk in their
//! original order; never visible to another instance.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use botlinkd::clock::Clock;
use botlinkd::delivery::RetrySchedule;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Receiver, TestApp};

fn bodies(list: &Value) -> Vec<String> {
    list["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["event_id"].as_str().unwrap().to_string())
        .collect()
}

/// The body of the next request the receiver took (answered 200), skipping refused ones.
async fn next_taken(receiver: &Receiver) -> String {
    loop {
        let r = receiver.next().await;
        if r.status == StatusCode::OK {
            return r.json["data"]["body"].as_str().unwrap().to_string();
        }
    }
}

#[tokio::test]
async fn dead_deliveries_are_listed_by_endpoint_and_time_and_resent_in_bulk_in_order() {
    let app = TestApp::spawn_with(|c| {
        c.clock = Clock::manual(1_700_000_000_000);
        c.background_workers = false;
        c.retry_schedule = RetrySchedule::new(Vec::new(), 0.0);
    })
    .await;
    let failing = Arc::new(AtomicBool::new(true));
    let answer = failing.clone();
    let receiver = Receiver::start_with(Arc::new(move |_, _| {
        let status = if answer.load(Ordering::SeqCst) {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        };
        (status, Duration::ZERO)
    }))
    .await;
    let healthy = Receiver::start().await;
    let broken = app.create_webhook(&receiver.url, Some(&["message"])).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let fine = app.create_webhook(&healthy.url, Some(&["message"])).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let clock = app.clock().clone();
    let mut ids = Vec::new();
    for (from, text) in [
        ("447000000001", "x1"),
        ("447000000001", "x2"),
        ("447000000001", "x3"),
        ("447000000002", "y1"),
    ] {
        let message_id = app.inbound_text(from, text).await;
        let event = app.get_json("/v1/events?after=0&limit=100").await["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["payload"]["data"]["message_id"] == message_id.as_str())
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        ids.push(event);
        clock.advance(Duration::from_secs(10));
    }
    // No retries: every attempt to the broken endpoint dies, one head of a conversation at a time.
    for _ in 0..4 {
        app.app.engine.step().await.unwrap();
        clock.advance(Duration::from_secs(1));
    }
    let all = app.get_json("/v1/deliveries/dead").await;
    assert_eq!(
        bodies(&all),
        [ids[3].clone(), ids[2].clone(), ids[1].clone(), ids[0].clone()],
        "{all}"
    );
    let first = &all["deliveries"][3];
    assert_eq!(first["endpoint_id"], broken.as_str());
    assert_eq!(first["event_type"], "message");
    assert_eq!(first["conversation"], "447000000001");
    assert_eq!(first["attempts"], 1);
    assert_eq!(first["last_status_code"], 500);
    assert_eq!(first["event_created_at"], "2023-11-14T22:13:20.000Z");
    let none = app.get_json(&format!("/v1/deliveries/dead?endpoint_id={fine}")).await;
    assert_eq!(bodies(&none).len(), 0);
    let page = app.get_json("/v1/deliveries/dead?limit=3").await;
    assert_eq!(bodies(&page).len(), 3);
    let rest = app
        .get_json(&format!(
            "/v1/deliveries/dead?limit=3&before={}",
            page["next"].as_str().unwrap()
        ))
        .await;
    assert_eq!(bodies(&rest), [ids[0].clone()]);
    assert_eq!(rest["next"], Value::Null);
    let later = "2023-11-14T22:13:35Z";
    let recent = app.get_json(&format!("/v1/deliveries/dead?since={later}")).await;
    assert_eq!(bodies(&recent), [ids[3].clone(), ids[2].clone()]);
    let early = app.get_json(&format!("/v1/deliveries/dead?until={later}")).await;
    assert_eq!(bodies(&early), [ids[1].clone(), ids[0].clone()]);

    // Another instance sees none of it and cannot touch it.
    let other = app.create_instance("other").await;
    let foreign: Value = app.get_json_as(&other, "/v1/deliveries/dead").await;
    assert_eq!(bodies(&foreign).len(), 0);
    let refused = app
        .request_as(&other, Method::POST, "/v1/deliveries/dead/resend")
        .json(&json!({"endpoint_id": broken}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
    let (status, bad) = app
        .post("/v1/deliveries/dead/resend", json!({"since": "yesterday"}))
        .await;
    assert_eq!((status, bad["error"]["code"].as_str()), (400, Some("invalid_time")));

    // The receiver is fixed: the recent ones first, then the rest, each conversation in order.
    failing.store(false, Ordering::SeqCst);
    let (status, resent) = app
        .post(
            "/v1/deliveries/dead/resend",
            json!({"endpoint_id": broken, "since": later}),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(resent, json!({"scheduled": 2, "more": false}));
    while app.app.engine.step().await.unwrap().attempted > 0 {
        clock.advance(Duration::from_secs(1));
    }
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(next_taken(&receiver).await);
    }
    got.sort();
    assert_eq!(got, ["x3", "y1"]);
    let (_, resent) = app.post("/v1/deliveries/dead/resend", json!({})).await;
    assert_eq!(resent["scheduled"], 2);
    while app.app.engine.step().await.unwrap().attempted > 0 {
        clock.advance(Duration::from_secs(1));
    }
    let mut order = Vec::new();
    for _ in 0..2 {
        order.push(next_taken(&receiver).await);
    }
    assert_eq!(order, ["x1", "x2"]);
    assert_eq!(bodies(&app.get_json("/v1/deliveries/dead").await).len(), 0);
}

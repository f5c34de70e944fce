//! Endpoint health: a receiver that answers 410 Gone is disabled at once, one that fails
//! every attempt for the configured period is disabled then; the reason shows in the API,
//! nothing queued is lost, and enabling the endpoint again delivers what was held back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use botlinkd::clock::Clock;
use botlinkd::delivery::RetrySchedule;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{PATIENCE, Receiver, TestApp};

async fn endpoint(app: &TestApp, id: &str) -> Value {
    app.get_json(&format!("/v1/webhooks/{id}")).await
}

/// A receiver that answers `status` until the flag is set to `false`, and 200 from then on.
async fn failing_until_told(status: StatusCode) -> (Receiver, Arc<AtomicBool>) {
    let failing = Arc::new(AtomicBool::new(true));
    let answer = failing.clone();
    let receiver = Receiver::start_with(Arc::new(move |_, _| {
        let now = if answer.load(Ordering::SeqCst) {
            status
        } else {
            StatusCode::OK
        };
        (now, Duration::ZERO)
    }))
    .await;
    (receiver, failing)
}

#[tokio::test]
async fn a_receiver_answering_410_gone_is_disabled_at_once_and_enabling_it_delivers_what_waited() {
    let app = TestApp::spawn().await;
    let (receiver, gone) = failing_until_told(StatusCode::GONE).await;
    let id = app.create_webhook(&receiver.url, Some(&["message"])).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.inbound_text("447123456789", "first").await;
    assert_eq!(receiver.next().await.status, StatusCode::GONE);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let disabled = loop {
        let e = endpoint(&app, &id).await;
        if e["enabled"] == false {
            break e;
        }
        assert!(tokio::time::Instant::now() < deadline, "never disabled: {e}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let reason = disabled["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("410 Gone"), "{reason}");
    assert!(disabled["failing_since"].is_string());

    // What comes while it is disabled waits; nothing is sent.
    app.inbound_text("447123456789", "second").await;
    receiver.expect_nothing(Duration::from_millis(400)).await;

    // The receiver is back; enabling the endpoint delivers both, in order.
    gone.store(false, Ordering::SeqCst);
    let enabled = app
        .request(Method::PATCH, &format!("/v1/webhooks/{id}"))
        .json(&json!({"enabled": true}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(enabled["enabled"], true);
    assert_eq!(enabled["disabled_reason"], Value::Null);
    assert_eq!(enabled["failing_since"], Value::Null);
    assert_eq!(receiver.next().await.json["data"]["body"], "first");
    assert_eq!(receiver.next().await.json["data"]["body"], "second");
}

#[tokio::test]
async fn an_endpoint_failing_every_attempt_for_the_period_is_disabled_with_the_reason() {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let app = TestApp::spawn_with(|c| {
        c.clock = Clock::manual(1_700_000_000_000);
        c.background_workers = false;
        c.retry_schedule = RetrySchedule::new(vec![DAY; 10], 0.0);
        c.endpoint_disable_after = Some(5 * DAY);
    })
    .await;
    let receiver = Receiver::start_with(Arc::new(|_, _| (StatusCode::INTERNAL_SERVER_ERROR, Duration::ZERO))).await;
    let id = app.create_webhook(&receiver.url, Some(&["message"])).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.inbound_text("447123456789", "anyone there?").await;
    let engine = &app.app.engine;
    let clock = app.clock().clone();
    for day in 0..5 {
        assert_eq!(engine.step().await.unwrap().retrying, 1, "day {day}");
        let e = endpoint(&app, &id).await;
        assert_eq!(e["enabled"], true, "still enabled on day {day}: {e}");
        assert_eq!(e["failing_since"], "2023-11-14T22:13:20.000Z");
        clock.advance(DAY + Duration::from_secs(1));
    }
    // The attempt five days after the first failure is the last one made.
    engine.step().await.unwrap();
    let e = endpoint(&app, &id).await;
    assert_eq!(e["enabled"], false, "{e}");
    let reason = e["disabled_reason"].as_str().unwrap();
    assert!(
        reason.contains("since 2023-11-14T22:13:20.000Z") && reason.contains("HTTP 500"),
        "{reason}"
    );
    clock.advance(DAY * 2);
    assert_eq!(
        engine.step().await.unwrap().attempted,
        0,
        "a disabled endpoint gets no attempts"
    );
    assert_eq!(receiver.count(), 6);
}

#[tokio::test]
async fn a_success_after_failures_clears_failing_since() {
    let app = TestApp::spawn_with(|c| {
        c.clock = Clock::manual(1_700_000_000_000);
        c.background_workers = false;
        c.retry_schedule = RetrySchedule::new(vec![Duration::from_secs(60); 5], 0.0);
    })
    .await;
    let (receiver, failing) = failing_until_told(StatusCode::INTERNAL_SERVER_ERROR).await;
    let id = app.create_webhook(&receiver.url, Some(&["message"])).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.inbound_text("447123456789", "are you there?").await;
    let engine = &app.app.engine;
    assert_eq!(engine.step().await.unwrap().retrying, 1);
    assert_eq!(endpoint(&app, &id).await["failing_since"], "2023-11-14T22:13:20.000Z");

    // The receiver is back: the retry succeeds (a batch of successes only) and the
    // endpoint is healthy again.
    failing.store(false, Ordering::SeqCst);
    app.clock().advance(Duration::from_secs(61));
    assert_eq!(engine.step().await.unwrap().delivered, 1);
    let e = endpoint(&app, &id).await;
    assert_eq!(e["failing_since"], Value::Null, "{e}");
    assert_eq!(e["enabled"], true);
    assert_eq!(receiver.count(), 2);
}

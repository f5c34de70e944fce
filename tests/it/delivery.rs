//! The delivery contract: the time limit, success and failure, the retry schedule (driven
//! step by step on a manual clock), dead deliveries, resends, and order per conversation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use botlinkd::clock::Clock;
use botlinkd::delivery::{RetrySchedule, StepOutcome};
use serde_json::{Value, json};

use crate::harness::{Receiver, TestApp, fast_retries};

#[tokio::test]
async fn failures_follow_the_schedule_then_die_and_can_be_resent() {
    let app = TestApp::spawn_with(|c| {
        c.clock = Clock::manual(1_700_000_000_000);
        c.background_workers = false;
        c.retry_schedule = RetrySchedule::new(
            vec![
                Duration::from_secs(5),
                Duration::from_secs(30),
                Duration::from_secs(120),
            ],
            0.0,
        );
    })
    .await;
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = failing.clone();
    let receiver = Receiver::start_with(Arc::new(move |_, _| {
        if flag.load(std::sync::atomic::Ordering::SeqCst) {
            (StatusCode::INTERNAL_SERVER_ERROR, Duration::ZERO)
        } else {
            (StatusCode::OK, Duration::ZERO)
        }
    }))
    .await;
    app.create_webhook(&receiver.url, Some(&["message"])).await;
    app.inbound_text("447123456789", "anyone there?").await;
    let engine = &app.app.engine;
    let clock = app.clock().clone();
    let step = |expected: StepOutcome| {
        let engine = engine.clone();
        async move { assert_eq!(engine.step().await.unwrap(), expected) }
    };
    let retry = StepOutcome {
        attempted: 1,
        retrying: 1,
        ..Default::default()
    };
    let idle = StepOutcome::default();

    step(retry).await;
    let first = receiver.next().await;
    let webhook_id = first.header("webhook-id").to_string();
    clock.advance(Duration::from_millis(4_999));
    step(idle).await;
    clock.advance(Duration::from_millis(1));
    step(retry).await;
    clock.advance(Duration::from_secs(29));
    step(idle).await;
    clock.advance(Duration::from_secs(1));
    step(retry).await;
    clock.advance(Duration::from_secs(120));
    step(StepOutcome {
        attempted: 1,
        dead: 1,
        ..Default::default()
    })
    .await;
    clock.advance(Duration::from_secs(86_400));
    step(idle).await;

    for _ in 0..3 {
        assert_eq!(
            receiver.next().await.header("webhook-id"),
            webhook_id,
            "retries keep the webhook-id"
        );
    }
    let attempts = app.get_json(&format!("/v1/events/{webhook_id}/attempts")).await;
    let list = attempts["attempts"].as_array().unwrap();
    assert_eq!(list.len(), 4);
    for (i, a) in list.iter().enumerate() {
        assert_eq!(a["attempt"], i + 1);
        assert_eq!(a["outcome"], "failure");
        assert_eq!(a["status_code"], 500);
        assert!(a["started_at"].as_str().unwrap().starts_with("2023-11-14T22:"));
        assert!(a["duration_ms"].is_i64());
        assert!(a["error"].as_str().unwrap().contains("500"));
        assert!(!a["endpoint_id"].as_str().unwrap().is_empty());
    }
    assert_eq!(attempts["deliveries"][0]["state"], "dead");

    // A dead delivery is delivered again on demand.
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let (status, resend) = app.post(&format!("/v1/events/{webhook_id}/resend"), json!({})).await;
    assert_eq!(status, 202, "{resend}");
    assert_eq!(resend["scheduled"], 1);
    step(StepOutcome {
        attempted: 1,
        delivered: 1,
        ..Default::default()
    })
    .await;
    assert_eq!(receiver.next().await.header("webhook-id"), webhook_id);
    let attempts = app.get_json(&format!("/v1/events/{webhook_id}/attempts")).await;
    assert_eq!(attempts["attempts"][4]["attempt"], 5);
    assert_eq!(attempts["attempts"][4]["outcome"], "success");
    assert_eq!(attempts["deliveries"][1]["state"], "delivered");
}

#[tokio::test]
async fn any_2xx_succeeds_and_anything_else_is_retried_with_the_same_webhook_id() {
    let app = TestApp::spawn_with(|c| {
        c.retry_schedule = fast_retries(50, 5);
    })
    .await;
    let answers = [
        StatusCode::MOVED_PERMANENTLY,
        StatusCode::NOT_FOUND,
        StatusCode::SERVICE_UNAVAILABLE,
        StatusCode::NO_CONTENT,
    ];
    let receiver = Receiver::start_with(Arc::new(move |n, _| (answers[n.min(3)], Duration::ZERO))).await;
    app.create_webhook(&receiver.url, Some(&["message"])).await;
    app.inbound_text("447123456789", "retry me").await;
    let ids: Vec<String> = futures_take(&receiver, 4).await;
    assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    let attempts = wait_for_attempts(&app, &ids[0], 4).await;
    let outcomes: Vec<(&str, i64)> = attempts
        .iter()
        .map(|a| (a["outcome"].as_str().unwrap(), a["status_code"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        outcomes,
        [("failure", 301), ("failure", 404), ("failure", 503), ("success", 204)]
    );
}

async fn futures_take(receiver: &Receiver, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(receiver.next().await.header("webhook-id").to_string());
    }
    ids
}

async fn wait_for_attempts(app: &TestApp, event_id: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + crate::harness::PATIENCE;
    loop {
        let attempts = app.get_json(&format!("/v1/events/{event_id}/attempts")).await;
        let list = attempts["attempts"].as_array().unwrap().clone();
        if list.len() >= n || Instant::now() > deadline {
            assert_eq!(list.len(), n, "attempts of {event_id}: {attempts}");
            return list;
        }
        // Outcomes are recorded just after the receiver answers; look again shortly.
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_answer_slower_than_the_limit_is_a_failure() {
    let app = TestApp::spawn_with(|c| {
        c.attempt_timeout = Duration::from_millis(400);
        c.retry_schedule = fast_retries(50, 1);
    })
    .await;
    // The first answer comes after the limit, the second well within it.
    let receiver = Receiver::slow_first(Duration::from_millis(800), Duration::from_millis(100)).await;
    app.create_webhook(&receiver.url, Some(&["message"])).await;
    app.inbound_text("447123456789", "slow").await;
    let id = receiver.next().await.header("webhook-id").to_string();
    let attempts = wait_for_attempts(&app, &id, 2).await;
    assert_eq!(attempts[0]["outcome"], "failure");
    assert_eq!(attempts[0]["status_code"], Value::Null);
    assert!(
        attempts[0]["error"].as_str().unwrap().contains("timeout"),
        "{}",
        attempts[0]
    );
    assert!(attempts[0]["duration_ms"].as_i64().unwrap() < 800);
    assert_eq!(attempts[1]["outcome"], "success");
}

#[tokio::test]
async fn the_default_limit_is_three_seconds_for_the_whole_exchange() {
    let app = TestApp::spawn_with(|c| {
        c.retry_schedule = fast_retries(50, 1);
    })
    .await;
    assert_eq!(app.app.config.attempt_timeout, Duration::from_secs(3));
    let receiver = Receiver::slow_first(Duration::from_millis(3_300), Duration::from_millis(2_500)).await;
    app.create_webhook(&receiver.url, Some(&["message"])).await;
    app.inbound_text("447123456789", "at the edge").await;
    let id = receiver.next().await.header("webhook-id").to_string();
    let attempts = wait_for_attempts(&app, &id, 2).await;
    assert_eq!(attempts[0]["outcome"], "failure", "3.3 s is over the limit");
    assert_eq!(attempts[1]["outcome"], "success", "2.5 s is within it");
}

#[tokio::test]
async fn events_of_a_conversation_arrive_in_order_despite_failures() {
    let app = TestApp::spawn_with(|c| {
        c.retry_schedule = fast_retries(30, 8);
    })
    .await;
    // Every third request fails, whichever conversation it belongs to.
    let receiver = Receiver::start_with(Arc::new(|n, _| {
        if n % 3 == 0 {
            (StatusCode::INTERNAL_SERVER_ERROR, Duration::ZERO)
        } else {
            (StatusCode::OK, Duration::ZERO)
        }
    }))
    .await;
    app.create_webhook(&receiver.url, Some(&["message"])).await;
    let customers = ["447000000001", "447000000002", "447000000003"];
    let mut sent: HashMap<&str, Vec<String>> = HashMap::new();
    for i in 0..30 {
        let customer = customers[i % 3];
        let id = app.inbound_text(customer, &format!("message {i}")).await;
        sent.entry(customer).or_default().push(id);
    }
    // Collect until every message was received successfully once.
    let mut accepted: HashMap<String, Vec<String>> = HashMap::new();
    while accepted.values().map(Vec::len).sum::<usize>() < 30 {
        let got = receiver.next().await;
        if got.status.is_success() {
            let from = got.json["data"]["from"].as_str().unwrap().to_string();
            accepted
                .entry(from)
                .or_default()
                .push(got.json["data"]["message_id"].as_str().unwrap().to_string());
        }
    }
    for customer in customers {
        assert_eq!(accepted[customer], sent[customer], "order of {customer}");
    }
}

#[tokio::test]
async fn a_hanging_receiver_holds_back_no_other_endpoint_or_conversation() {
    let app = TestApp::spawn_with(|c| {
        c.attempt_timeout = Duration::from_secs(2);
    })
    .await;
    // One endpoint never answers in time; on the other, only conversation A hangs.
    let stuck = Receiver::start_with(Arc::new(|_, _| (StatusCode::OK, Duration::from_secs(10)))).await;
    let partly = Receiver::start_with(Arc::new(|_, body: &Value| {
        if body["data"]["from"] == "447000000001" {
            (StatusCode::OK, Duration::from_secs(10))
        } else {
            (StatusCode::OK, Duration::ZERO)
        }
    }))
    .await;
    app.create_webhook(&stuck.url, Some(&["message"])).await;
    app.create_webhook(&partly.url, Some(&["message"])).await;

    app.inbound_text("447000000001", "A1").await;
    app.inbound_text("447000000001", "A2").await;
    let started = Instant::now();
    for i in 0..20 {
        app.inbound_text(&format!("4479000000{i:02}"), "B").await;
    }
    let mut bodies = Vec::new();
    for _ in 0..20 {
        bodies.push(partly.next().await.json["data"]["body"].as_str().unwrap().to_string());
    }
    assert!(bodies.iter().all(|b| b == "B"), "{bodies:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "other conversations went out while A and the stuck endpoint hung ({:?})",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_disabled_endpoint_is_paused_and_catches_up_in_order_when_enabled() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let endpoint = app.create_webhook(&receiver.url, Some(&["message"])).await;
    let id = endpoint["id"].as_str().unwrap();
    let first = app.inbound_text("447123456789", "m1").await;
    assert_eq!(receiver.next().await.json["data"]["message_id"], first.as_str());

    let patch = |enabled: bool| {
        app.request(reqwest::Method::PATCH, &format!("/v1/webhooks/{id}"))
            .json(&json!({"enabled": enabled}))
            .send()
    };
    assert_eq!(patch(false).await.unwrap().status(), 200);
    let second = app.inbound_text("447123456789", "m2").await;
    let third = app.inbound_text("447123456789", "m3").await;
    receiver.expect_nothing(Duration::from_millis(700)).await;
    // A paused delivery shows as pending with no due time.
    let feed = app.get_json("/v1/events").await;
    let paused_event = feed["events"][1]["id"].as_str().unwrap().to_string();
    let detail = app.get_json(&format!("/v1/events/{paused_event}")).await;
    assert_eq!(detail["deliveries"][0]["state"], "pending", "{detail}");
    assert_eq!(detail["deliveries"][0]["next_attempt_at"], Value::Null, "{detail}");
    app.get_json(&format!("/v1/events/{paused_event}/attempts")).await;

    assert_eq!(patch(true).await.unwrap().status(), 200);
    assert_eq!(receiver.next().await.json["data"]["message_id"], second.as_str());
    assert_eq!(receiver.next().await.json["data"]["message_id"], third.as_str());
}

#[tokio::test]
async fn a_late_outcome_after_the_lease_ran_out_changes_nothing() {
    let (app, _receiver) = stopped_app_with_webhook().await;
    let event_id = {
        app.inbound_text("447123456789", "claimed twice").await;
        app.get_json("/v1/events").await["events"][0]["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let store = &app.app.store;
    let clock = app.clock().clone();
    let now = clock.now_ms();
    let first = store.claim_due(now, 10, Vec::new(), now + 30_000).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(
        store
            .claim_due(now, 10, Vec::new(), now + 30_000)
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );
    // The first claimer goes silent; its lease runs out and another claim takes over.
    clock.advance(Duration::from_secs(31));
    let later = clock.now_ms();
    let second = store.claim_due(later, 10, Vec::new(), later + 30_000).await.unwrap();
    assert_eq!(second.len(), 1);

    let outcome = |due: &botlinkd::store::DueDelivery, success: bool| botlinkd::store::AttemptResult {
        delivery_id: due.delivery_id,
        event_seq: due.event_seq,
        event_id: due.event_id.clone(),
        instance_id: due.instance_id,
        endpoint_id: due.endpoint_id.clone(),
        attempt: due.attempt,
        started_at: later,
        duration_ms: 1,
        status_code: Some(if success { 200 } else { 500 }),
        response: String::new(),
        error: (!success).then(|| "late".into()),
        success,
        retry_at: None,
        retry_after: None,
        lease_until: due.lease_until,
        disable_after: None,
        follower: None,
    };
    // The stale claimer reports a final failure: recorded, but the delivery is not killed.
    store
        .complete(vec![outcome(&first[0], false)].into(), None)
        .await
        .unwrap();
    let state = app.get_json(&format!("/v1/events/{event_id}")).await;
    assert_eq!(state["deliveries"][0]["state"], "pending", "{state}");
    // The current claimer's success counts.
    store
        .complete(vec![outcome(&second[0], true)].into(), None)
        .await
        .unwrap();
    let state = app.get_json(&format!("/v1/events/{event_id}")).await;
    assert_eq!(state["deliveries"][0]["state"], "delivered", "{state}");
    assert_eq!(
        app.get_json(&format!("/v1/events/{event_id}/attempts")).await["attempts"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn a_receivers_retry_after_is_honoured() {
    let app = TestApp::spawn_with(|c| {
        c.clock = Clock::manual(1_700_000_000_000);
        c.background_workers = false;
        c.retry_schedule = RetrySchedule::new(vec![Duration::from_secs(5), Duration::from_secs(5)], 0.0);
    })
    .await;
    // 429 with `Retry-After: 120` first, then 200.
    let receiver = Receiver::start_with(Arc::new(|n, _| {
        let status = if n == 0 {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::OK
        };
        (status, Duration::ZERO)
    }))
    .await;
    app.create_webhook(&receiver.url, Some(&["message"])).await;
    app.inbound_text("447123456789", "slow down").await;
    let engine = &app.app.engine;
    let clock = app.clock().clone();
    assert_eq!(engine.step().await.unwrap().retrying, 1);
    clock.advance(Duration::from_secs(6));
    assert_eq!(
        engine.step().await.unwrap().attempted,
        0,
        "the schedule's 5 s gave way to the receiver's 120 s"
    );
    clock.advance(Duration::from_secs(115));
    assert_eq!(engine.step().await.unwrap().delivered, 1);
    assert_eq!(receiver.count(), 2);
}

/// A server on a manual clock with its engine stopped (the test drives the store), and a
/// receiver subscribed to messages.
async fn stopped_app_with_webhook() -> (TestApp, Receiver) {
    let app = TestApp::spawn_with(|c| {
        c.clock = Clock::manual(1_700_000_000_000);
        c.background_workers = false;
    })
    .await;
    let receiver = Receiver::start().await;
    app.create_webhook(&receiver.url, Some(&["message"])).await;
    (app, receiver)
}

/// Stores a customer's message through the store itself, with a hand-over, as the running
/// engine does; returns what the write handed over.
async fn record_with_hand_over(app: &TestApp, customer: &str, lease_until: i64) -> Vec<botlinkd::store::DueDelivery> {
    use botlinkd::events::{MessageFacts, message_event};
    use botlinkd::messages::{Direction, MessageStatus};
    let now = app.clock().now_ms();
    let instance_id: i64 = app.keys.instance_id.parse().unwrap();
    let message_id = botlinkd::ids::message_id(now);
    let detail = serde_json::Map::new();
    let event = message_event(
        MessageFacts {
            instance_id,
            from: customer,
            to: &app.keys.number,
            kind: "text",
            body: "hello",
            message_id: &message_id,
            detail: &detail,
        },
        now,
    );
    let message = botlinkd::store::NewMessage {
        message_id,
        direction: Direction::Inbound,
        customer: customer.into(),
        customer_name: None,
        business: app.keys.number.clone(),
        kind: "text".into(),
        body: "hello".into(),
        detail,
        status: MessageStatus::Received,
        created_at: now,
    };
    let hand_over = botlinkd::store::HandOver {
        now,
        lease_until,
        limit: 4,
    };
    let (_, handed) = app
        .app
        .store
        .record_inbound(instance_id, message, event, Some(hand_over))
        .await
        .unwrap()
        .unwrap();
    handed
}

/// A successful attempt of `due`, started at `now` under `lease_until`, with the follower the
/// engine started behind it, if any.
fn success(
    due: &botlinkd::store::DueDelivery,
    now: i64,
    lease_until: i64,
    follower: Option<(i64, i64)>,
) -> botlinkd::store::AttemptResult {
    botlinkd::store::AttemptResult {
        delivery_id: due.delivery_id,
        event_seq: due.event_seq,
        event_id: due.event_id.clone(),
        instance_id: due.instance_id,
        endpoint_id: due.endpoint_id.clone(),
        attempt: 1,
        started_at: now,
        duration_ms: 1,
        status_code: Some(200),
        response: String::new(),
        error: None,
        success: true,
        retry_at: None,
        retry_after: None,
        lease_until,
        disable_after: None,
        follower,
    }
}

#[tokio::test]
async fn a_delivery_waiting_behind_another_is_handed_over_and_held_once_started() {
    let (app, _receiver) = stopped_app_with_webhook().await;
    let store = &app.app.store;
    let now = app.clock().now_ms();
    let lease = now + 30_000;
    let head = record_with_hand_over(&app, "447000000042", lease).await;
    assert_eq!(head.len(), 1);
    assert_eq!(head[0].after, None, "the head is claimed, not waiting");
    let behind = record_with_hand_over(&app, "447000000042", lease).await;
    assert_eq!(behind.len(), 1);
    assert_eq!(behind[0].after, Some(head[0].delivery_id), "it waits behind the head");
    assert!(
        store.claim_due(now, 10, Vec::new(), lease).await.unwrap().is_empty(),
        "the head is leased and the one behind it waits"
    );

    // The head succeeds and the engine starts the one behind it at once, under its own lease.
    let follower_lease = lease + 1;
    let outcome = |due: &botlinkd::store::DueDelivery, lease_until, follower| success(due, now, lease_until, follower);
    let handed = store
        .complete(
            vec![outcome(&head[0], lease, Some((behind[0].delivery_id, follower_lease)))].into(),
            Some(botlinkd::store::HandOver {
                now,
                lease_until: lease,
                limit: 4,
            }),
        )
        .await
        .unwrap();
    assert!(handed.is_empty(), "the follower is on its way already: {handed:?}");
    assert!(
        store.claim_due(now, 10, Vec::new(), lease).await.unwrap().is_empty(),
        "the promoted follower holds the lease it went out with"
    );
    // Its own outcome, under that lease, counts.
    store
        .complete(vec![outcome(&behind[0], follower_lease, None)].into(), None)
        .await
        .unwrap();
    let state = app.get_json(&format!("/v1/events/{}", behind[0].event_id)).await;
    assert_eq!(state["deliveries"][0]["state"], "delivered", "{state}");
}

/// A head and the two followers the engine started behind it, all succeeding, recorded in one
/// batch: the whole chain is delivered, and the conversation's next event is promoted after
/// the chain's end and handed over.
#[tokio::test]
async fn a_chain_of_followers_completed_in_one_batch_is_delivered_and_the_next_is_handed_over() {
    let (app, _receiver) = stopped_app_with_webhook().await;
    let store = &app.app.store;
    let now = app.clock().now_ms();
    let lease = now + 30_000;
    let mut chain = Vec::new();
    for _ in 0..4 {
        let handed = record_with_hand_over(&app, "447000000043", lease).await;
        assert_eq!(handed.len(), 1);
        chain.push(handed.into_iter().next().unwrap());
    }
    let outcome = |due: &botlinkd::store::DueDelivery, lease_until, follower| success(due, now, lease_until, follower);
    let (second_lease, third_lease) = (lease + 1, lease + 2);
    let batch = vec![
        outcome(&chain[0], lease, Some((chain[1].delivery_id, second_lease))),
        outcome(&chain[1], second_lease, Some((chain[2].delivery_id, third_lease))),
        outcome(&chain[2], third_lease, None),
    ];
    let handed = store
        .complete(
            batch.into(),
            Some(botlinkd::store::HandOver {
                now,
                lease_until: lease,
                limit: 4,
            }),
        )
        .await
        .unwrap();
    let handed: Vec<i64> = handed.iter().map(|d| d.delivery_id).collect();
    assert_eq!(handed, [chain[3].delivery_id], "the fourth goes out next");
    for (n, due) in chain.iter().enumerate().take(3) {
        let state = app.get_json(&format!("/v1/events/{}", due.event_id)).await;
        assert_eq!(state["deliveries"][0]["state"], "delivered", "event {n}: {state}");
    }
    let fourth = app.get_json(&format!("/v1/events/{}", chain[3].event_id)).await;
    assert_eq!(fourth["deliveries"][0]["state"], "pending", "{fourth}");
}

#[tokio::test]
async fn a_busy_conversation_arrives_in_order_through_the_followers() {
    // Answers take a few milliseconds, so a conversation's next events are stored while its
    // head is on its way; every 7th answer fails, which makes the conversation wait.
    let app = TestApp::spawn_with(|c| {
        c.retry_schedule = fast_retries(20, 8);
    })
    .await;
    let receiver = Receiver::start_with(Arc::new(|n, _| {
        if n % 7 == 3 {
            (StatusCode::SERVICE_UNAVAILABLE, Duration::ZERO)
        } else {
            (StatusCode::OK, Duration::from_millis(3))
        }
    }))
    .await;
    app.create_webhook(&receiver.url, Some(&["message"])).await;
    let customer = "447000000077";
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..60 {
        let request = app
            .request(reqwest::Method::POST, "/v1/sandbox/inbound")
            .json(&json!({"from": customer, "body": format!("message {i}")}));
        sends.spawn(async move { request.send().await.unwrap().status() });
        if i % 8 == 7 {
            while let Some(status) = sends.join_next().await {
                assert_eq!(status.unwrap(), 201);
            }
        }
    }
    while let Some(status) = sends.join_next().await {
        assert_eq!(status.unwrap(), 201);
    }
    // The order the server stored them in is the feed's.
    let feed = app.get_json("/v1/events?limit=100").await;
    let stored: Vec<String> = feed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["payload"]["data"]["message_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(stored.len(), 60);
    let mut accepted = Vec::new();
    while accepted.len() < 60 {
        let got = receiver.next().await;
        if got.status.is_success() {
            let id = got.json["data"]["message_id"].as_str().unwrap().to_string();
            if !accepted.contains(&id) {
                accepted.push(id);
            }
        }
    }
    assert_eq!(accepted, stored, "one conversation arrives in the order it was stored");
}

//! Looking back: the event history's filters and orders, an event's outcome, an endpoint's
//! statistics and the instance overview, against events the test made.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use botlinkd::clock::Clock;
use botlinkd::delivery::RetrySchedule;
use reqwest::Method;
use serde_json::Value;

use crate::harness::{Receiver, TestApp};

const T0: i64 = 1_700_000_000_000;
const ANN: &str = "447000000001";
const BOB: &str = "447000000002";

/// The ids of a page's events, in order.
fn ids(page: &Value) -> Vec<String> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

fn outcomes(page: &Value) -> Vec<String> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap().to_string())
        .collect()
}

/// Asserts that a GET is refused with 400 and this error code.
async fn assert_refused(app: &TestApp, path: &str, code: &str) {
    let response = app.request(Method::GET, path).send().await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str().unwrap_or_default()),
        (400, code),
        "{path}: {body}"
    );
}

#[tokio::test]
async fn history_filters_orders_outcomes_stats_and_overview() {
    let app = TestApp::spawn_with(|c| {
        c.clock = Clock::manual(T0);
        c.background_workers = false;
        c.sandbox_delivered_after = None;
        c.sandbox_read_after = None;
        c.retry_schedule = RetrySchedule::new(vec![Duration::from_secs(60)], 0.0);
    })
    .await;
    // Bob's receiver side is broken: every event about him is refused.
    let receiver = Receiver::start_with(Arc::new(|_, body: &Value| {
        let about_bob = body["data"]["from"] == BOB || body["data"]["to"] == BOB;
        (
            if about_bob {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            },
            Duration::from_millis(3),
        )
    }))
    .await;
    let endpoint = app.create_webhook(&receiver.url, None).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let clock = app.clock().clone();
    let ann_message = app.inbound_text(ANN, "a1").await;
    clock.advance(Duration::from_secs(10));
    let reply = app.send_text(ANN, "hello Ann").await;
    clock.advance(Duration::from_secs(10));
    app.inbound_text(BOB, "b1").await;
    clock.advance(Duration::from_secs(10));
    app.inbound_text(BOB, "b2").await;
    // Two rounds: the heads of each conversation, then Ann's reply behind her message.
    app.app.engine.step().await.unwrap();
    clock.advance(Duration::from_secs(1));
    app.app.engine.step().await.unwrap();

    // Newest first, every event with where it stands.
    let all = app.get_json("/v1/events?order=desc").await;
    let [b2, b1, sent, a1] = <[String; 4]>::try_from(ids(&all)).unwrap_or_else(|_| panic!("{all}"));
    assert_eq!(
        outcomes(&all),
        ["pending", "failing", "delivered", "delivered"],
        "{all}"
    );
    assert_eq!(all["events"][2]["type"], "ack.sent");
    assert_eq!(all["next"], Value::Null, "one page holds them all");

    // Each filter narrows the list.
    let by = |query: &str| format!("/v1/events?order=desc&{query}");
    assert_eq!(
        ids(&app.get_json(&by("type=message")).await),
        [b2.as_str(), b1.as_str(), a1.as_str()]
    );
    assert_eq!(ids(&app.get_json(&by("type=ack.sent,ack.read")).await), [sent.as_str()]);
    assert_eq!(
        ids(&app.get_json(&by(&format!("number=%2B{BOB}"))).await),
        [b2.as_str(), b1.as_str()]
    );
    assert_eq!(ids(&app.get_json(&by("outcome=failing")).await), [b1.as_str()]);
    assert_eq!(ids(&app.get_json(&by("outcome=pending")).await), [b2.as_str()]);
    assert_eq!(
        ids(&app.get_json(&by("outcome=delivered")).await),
        [sent.as_str(), a1.as_str()]
    );
    assert!(ids(&app.get_json(&by("outcome=dead")).await).is_empty());
    assert_eq!(
        ids(&app.get_json(&by("since=2023-11-14T22:13:35Z")).await),
        [b2.as_str(), b1.as_str()]
    );
    assert_eq!(
        ids(&app.get_json(&by("until=2023-11-14T22:13:35Z")).await),
        [sent.as_str(), a1.as_str()]
    );
    assert_eq!(
        ids(&app.get_json(&by(&format!("number={ANN}&type=message"))).await),
        [a1.as_str()]
    );
    // By message id: the reply's ack, the customer's message.
    assert_eq!(
        ids(&app.get_json(&by(&format!("message_id={reply}"))).await),
        [sent.as_str()]
    );
    assert_eq!(
        ids(&app.get_json(&by(&format!("message_id={ann_message}"))).await),
        [a1.as_str()]
    );
    assert!(ids(&app.get_json(&by("message_id=wamid.nothing")).await).is_empty());
    assert!(ids(&app.get_json(&by(&format!("message_id={reply}&number={BOB}"))).await).is_empty());

    // Paging newest first, one at a time, to the end.
    let mut seen = Vec::new();
    let mut path = "/v1/events?order=desc&limit=1".to_string();
    loop {
        let page = app.get_json(&path).await;
        seen.extend(ids(&page));
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/events?order=desc&limit=1&before={next}"),
            None => break,
        }
    }
    assert_eq!(seen, [b2.as_str(), b1.as_str(), sent.as_str(), a1.as_str()]);

    // The feed takes the filters too, oldest first.
    let feed = app.get_json("/v1/events?type=message").await;
    assert_eq!(ids(&feed), [a1.as_str(), b1.as_str(), b2.as_str()]);
    assert_eq!(feed["next"], feed["events"][2]["cursor"]);

    // Bob's first event runs out of retries: it is dead, and the one behind it goes next.
    clock.advance(Duration::from_secs(61));
    app.app.engine.step().await.unwrap();
    assert_eq!(ids(&app.get_json(&by("outcome=dead")).await), [b1.as_str()]);
    let one = app.get_json(&format!("/v1/events/{b1}")).await;
    assert_eq!(one["outcome"], "dead");
    // Refusals name the problem.
    for (query, code) in [
        ("order=sideways", "invalid_order"),
        ("order=desc&after=5", "invalid_order"),
        ("order=desc&wait=1", "invalid_order"),
        ("before=1.2", "invalid_order"),
        ("order=desc&before=junk", "invalid_cursor"),
        ("type=test", "invalid_type"),
        ("type=message,nope", "invalid_type"),
        ("outcome=none", "invalid_outcome"),
        ("number=abc", "invalid_number"),
        ("since=yesterday", "invalid_time"),
    ] {
        assert_refused(&app, &format!("/v1/events?{query}"), code).await;
    }

    // The endpoint's chart: a bucket for each minute the test spanned.
    let stats = app
        .get_json(&format!(
            "/v1/webhooks/{endpoint}/stats?since=2023-11-14T22:13:00Z&bucket=1m"
        ))
        .await;
    let buckets = stats["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 2, "22:13 and 22:14: {stats}");
    let sum = |field: &str| buckets.iter().map(|b| b[field].as_i64().unwrap()).sum::<i64>();
    let (attempts, successes, failures) = (sum("attempts"), sum("successes"), sum("failures"));
    assert_eq!(attempts, successes + failures);
    assert_eq!(successes, 2, "a1 and the reply's ack: {stats}");
    assert!(failures >= 2, "b1 twice: {stats}");
    let first = &buckets[0];
    assert_eq!(first["start"], "2023-11-14T22:13:00.000Z");
    assert!(first["p50_ms"].as_f64().unwrap() >= 1.0, "{first}");
    assert!(stats["waiting"].as_i64().unwrap() >= 1, "b2 is not delivered: {stats}");
    assert!(
        stats["last_success_at"]
            .as_str()
            .unwrap()
            .starts_with("2023-11-14T22:13"),
        "{stats}"
    );
    for (query, code) in [
        ("bucket=30s", "invalid_bucket"),
        ("since=2020-01-01T00:00:00Z", "invalid_time"),
    ] {
        assert_refused(&app, &format!("/v1/webhooks/{endpoint}/stats?{query}"), code).await;
    }
    let missing = app
        .request(Method::GET, "/v1/webhooks/ep_nothing/stats")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // The overview of the day.
    let overview = app.get_json("/v1/overview?since=2023-11-14T00:00:00Z").await;
    assert_eq!(overview["messages_in"], 3, "{overview}");
    assert_eq!(overview["messages_out"], 1);
    assert_eq!(overview["delivered_percent"], 0.0);
    assert_eq!(overview["webhook_attempts"], attempts);
    assert_eq!(overview["endpoints"], 1);
    assert_eq!(overview["endpoints_disabled"], 0);
    assert!(overview["deliveries_waiting"].as_i64().unwrap() >= 1);
    let hours = overview["hours"].as_array().unwrap();
    let last = hours.last().unwrap();
    assert_eq!(
        (last["messages_in"].as_i64(), last["messages_out"].as_i64()),
        (Some(3), Some(1)),
        "{overview}"
    );

    // Another instance sees none of it.
    let other = app.create_instance("other").await;
    let foreign: Value = app.get_json_as(&other, "/v1/events?order=desc").await;
    assert!(ids(&foreign).is_empty());
    let foreign = app
        .request_as(&other, Method::GET, &format!("/v1/webhooks/{endpoint}/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 404);

    // An id finds a test event too (lists leave them out).
    let (status, tested) = app
        .post(&format!("/v1/webhooks/{endpoint}/test"), serde_json::json!({}))
        .await;
    assert_eq!(status, 200, "{tested}");
    let test_event = app
        .get_json(&format!("/v1/events/{}", tested["event_id"].as_str().unwrap()))
        .await;
    assert_eq!(test_event["type"], "test");
    assert!(
        !ids(&app.get_json("/v1/events?order=desc").await).contains(&test_event["id"].as_str().unwrap().to_string())
    );
}

#[tokio::test]
async fn an_event_is_dead_only_towards_an_endpoint_that_still_exists() {
    let app = TestApp::spawn_with(|c| {
        c.clock = Clock::manual(T0);
        c.background_workers = false;
        c.retry_schedule = RetrySchedule::new(Vec::new(), 0.0);
    })
    .await;
    let refusing = Receiver::start_with(Arc::new(|_, _| (StatusCode::INTERNAL_SERVER_ERROR, Duration::ZERO))).await;
    let endpoint = app.create_webhook(&refusing.url, Some(&["message"])).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.inbound_text(ANN, "never taken").await;
    app.app.engine.step().await.unwrap();
    let dead = app.get_json("/v1/events?order=desc&outcome=dead").await;
    assert_eq!(outcomes(&dead), ["dead"], "{dead}");

    let removed = app
        .request(Method::DELETE, &format!("/v1/webhooks/{endpoint}"))
        .send()
        .await
        .unwrap();
    assert!(removed.status().is_success());
    // Nothing can be resent to a deleted endpoint: the event is no longer dead, in the list
    // and in the filter alike.
    assert!(ids(&app.get_json("/v1/events?order=desc&outcome=dead").await).is_empty());
    let all = app.get_json("/v1/events?order=desc").await;
    assert_eq!(outcomes(&all), ["none"], "{all}");
}

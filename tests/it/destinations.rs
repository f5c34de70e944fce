//! Event destinations beyond HTTP, against the real NATS JetStream, RabbitMQ and Redis this
//! machine runs: the same signed body, the same order per conversation, failed attempts that
//! say why, repeats that keep their id when a broker goes away, masked credentials, the SSRF
//! guard; and the rate limit per endpoint.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::brokers::{CuttableProxy, NatsStream, RabbitExchange, RedisStream};
use crate::harness::{
    PATIENCE, Received, Receiver, TestApp, expect_every_message_in_order, fast_retries, verify_signature,
};

/// A server whose failed attempts are retried every 200 ms.
async fn spawn() -> TestApp {
    TestApp::spawn_with(|c| c.retry_schedule = fast_retries(200, 100)).await
}

/// `count` customer messages from `customers` customers writing at once, each in turn;
/// answers `(customer, message id)` in the order each customer's were accepted.
async fn customers_write(app: &TestApp, customers: usize, count: usize) -> Vec<(String, String)> {
    let writers = (0..customers).map(|c| async move {
        let from = format!("4477008{c:05}");
        let mut sent = Vec::new();
        for n in 0..count / customers {
            sent.push((from.clone(), app.inbound_text(&from, &format!("message {n}")).await));
        }
        sent
    });
    futures_util::future::join_all(writers)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The endpoint's attempts so far, newest first.
async fn attempts_of(app: &TestApp, endpoint_id: &str) -> Vec<Value> {
    let events = app.get_json("/v1/events?limit=100").await;
    let mut attempts = Vec::new();
    for event in events["events"].as_array().expect("events") {
        let id = event["id"].as_str().expect("event id");
        let answer = app.get_json(&format!("/v1/events/{id}/attempts")).await;
        attempts.extend(
            answer["attempts"]
                .as_array()
                .expect("attempts")
                .iter()
                .filter(|a| a["endpoint_id"] == endpoint_id)
                .cloned(),
        );
    }
    attempts
}

/// Waits for the endpoint's first failed attempt and answers its error.
async fn first_error(app: &TestApp, endpoint_id: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(failed) = attempts_of(app, endpoint_id)
            .await
            .iter()
            .find(|a| !a["error"].is_null())
        {
            assert!(
                failed["status_code"].is_null(),
                "a broker attempt has no status code: {failed}"
            );
            return failed["error"].as_str().expect("error").to_string();
        }
        assert!(Instant::now() < deadline, "no failed attempt recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The first delivery: signed as a webhook is, verified by the Standard Webhooks library;
/// then `count` more from several customers at once, all there and in order.
async fn delivers_signed_and_in_order(app: &TestApp, endpoint: &Value, receiver: &Receiver) -> Received {
    let secret = endpoint["secret"].as_str().expect("secret");
    let message_id = app.inbound_text("447700899999", "hello broker").await;
    let first = receiver.next().await;
    verify_signature(secret, &first);
    assert_eq!(first.json["event"], "message");
    assert_eq!(first.json["data"]["message_id"], message_id.as_str());
    let sent = customers_write(app, 8, 160).await;
    let (delivered, _) = expect_every_message_in_order(receiver, &sent).await;
    assert_eq!(delivered, 160);
    first
}

#[tokio::test]
async fn nats_jetstream_gets_every_event_signed_in_order_with_the_event_id_as_msg_id() {
    let app = spawn().await;
    let stream = NatsStream::create().await;
    let endpoint = app
        .create_webhook(&format!("nats://127.0.0.1:4222/{}", stream.subject), None)
        .await;
    assert_eq!(endpoint["kind"], "nats");
    let first = delivers_signed_and_in_order(&app, &endpoint, &stream.receiver).await;
    assert_eq!(first.header("nats-msg-id"), first.header("webhook-id"));
    assert!(first.header("webhook-id").starts_with("evt_"));
    let attempts = attempts_of(&app, endpoint["id"].as_str().unwrap()).await;
    let ok = attempts
        .iter()
        .find(|a| a["error"].is_null())
        .expect("a successful attempt");
    assert!(ok["status_code"].is_null());
    assert!(ok["response"].as_str().unwrap().contains("sequence"), "{ok}");
}

#[tokio::test]
async fn rabbitmq_gets_every_event_persistent_signed_and_in_order() {
    let app = spawn().await;
    let exchange = RabbitExchange::create(true).await;
    let endpoint = app
        .create_webhook(
            &format!(
                "amqp://guest:guest@127.0.0.1:5672/%2f?exchange={}&routing_key={}",
                exchange.exchange, exchange.routing_key
            ),
            None,
        )
        .await;
    assert_eq!(endpoint["kind"], "rabbitmq");
    let first = delivers_signed_and_in_order(&app, &endpoint, &exchange.receiver).await;
    assert_eq!(first.header("amqp-message-id"), first.header("webhook-id"));
    assert_eq!(first.header("content-type"), "application/json");
    assert_eq!(first.header("amqp-delivery-mode"), "2", "persistent");
}

#[tokio::test]
async fn a_redis_stream_gets_every_event_signed_and_in_order_and_keeps_maxlen() {
    let app = spawn().await;
    let stream = RedisStream::create().await;
    let endpoint = app
        .create_webhook(
            &format!("redis://127.0.0.1:6379/0?stream={}&maxlen=100000", stream.key),
            None,
        )
        .await;
    assert_eq!(endpoint["kind"], "redis");
    delivers_signed_and_in_order(&app, &endpoint, &stream.receiver).await;
    assert!(stream.len().await >= 161);
}

#[tokio::test]
async fn a_nats_subject_no_stream_captures_fails_the_attempt_and_says_so() {
    let app = spawn().await;
    let endpoint = app
        .create_webhook(
            &format!("nats://127.0.0.1:4222/botlinkd.nowhere.{}", crate::brokers::unique("s")),
            None,
        )
        .await;
    app.inbound_text("447700800001", "into the void").await;
    let error = first_error(&app, endpoint["id"].as_str().unwrap()).await;
    assert!(error.contains("no JetStream stream captures subject"), "{error}");
}

#[tokio::test]
async fn a_rabbitmq_exchange_without_a_bound_queue_fails_the_attempt_as_unroutable() {
    let app = spawn().await;
    let exchange = RabbitExchange::create(false).await;
    let endpoint = app
        .create_webhook(
            &format!(
                "amqp://guest:guest@127.0.0.1:5672/?exchange={}&routing_key=nobody",
                exchange.exchange
            ),
            None,
        )
        .await;
    app.inbound_text("447700800001", "unroutable").await;
    let error = first_error(&app, endpoint["id"].as_str().unwrap()).await;
    assert!(
        error.contains("unroutable") && error.contains(&exchange.exchange),
        "{error}"
    );
}

/// Cuts the broker's connections twice while 120 messages flow, refusing new ones for a
/// moment each time: every message arrives, in order per customer, and a repeat keeps its
/// `webhook-id`.
async fn survives_cuts(app: &TestApp, proxy: &CuttableProxy, receiver: &Receiver) {
    let writing = customers_write(app, 6, 120);
    let cutting = async {
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            proxy.cut_for(Duration::from_millis(700)).await;
        }
    };
    let (sent, ()) = tokio::join!(writing, cutting);
    let (delivered, _) = expect_every_message_in_order(receiver, &sent).await;
    assert_eq!(delivered, 120);
}

#[tokio::test]
async fn brokers_cut_mid_stream_lose_nothing_and_repeats_keep_their_id() {
    let app = spawn().await;

    let nats = NatsStream::create().await;
    let nats_proxy = CuttableProxy::start("127.0.0.1:4222").await;
    let nats_endpoint = app
        .create_webhook(&format!("nats://127.0.0.1:{}/{}", nats_proxy.port, nats.subject), None)
        .await;
    survives_cuts(&app, &nats_proxy, &nats.receiver).await;
    app.request(
        reqwest::Method::DELETE,
        &format!("/v1/webhooks/{}", nats_endpoint["id"].as_str().unwrap()),
    )
    .send()
    .await
    .expect("delete");

    let rabbit = RabbitExchange::create(true).await;
    let rabbit_proxy = CuttableProxy::start("127.0.0.1:5672").await;
    let rabbit_endpoint = app
        .create_webhook(
            &format!(
                "amqp://guest:guest@127.0.0.1:{}/%2f?exchange={}&routing_key={}",
                rabbit_proxy.port, rabbit.exchange, rabbit.routing_key
            ),
            None,
        )
        .await;
    survives_cuts(&app, &rabbit_proxy, &rabbit.receiver).await;
    app.request(
        reqwest::Method::DELETE,
        &format!("/v1/webhooks/{}", rabbit_endpoint["id"].as_str().unwrap()),
    )
    .send()
    .await
    .expect("delete");

    let redis = RedisStream::create().await;
    let redis_proxy = CuttableProxy::start("127.0.0.1:6379").await;
    app.create_webhook(
        &format!("redis://127.0.0.1:{}/0?stream={}", redis_proxy.port, redis.key),
        None,
    )
    .await;
    survives_cuts(&app, &redis_proxy, &redis.receiver).await;
}

#[tokio::test]
async fn broker_passwords_are_masked_everywhere_and_a_masked_url_sent_back_keeps_the_real_one() {
    let app = spawn().await;
    let exchange = RabbitExchange::create(true).await;
    let url = format!(
        "amqp://guest:guest@127.0.0.1:5672/%2f?exchange={}&routing_key={}",
        exchange.exchange, exchange.routing_key
    );
    let endpoint = app.create_webhook(&url, None).await;
    let id = endpoint["id"].as_str().unwrap();
    let shown = endpoint["url"].as_str().unwrap().to_string();
    assert!(shown.starts_with("amqp://guest:****@127.0.0.1:5672/"), "{shown}");
    let listed = app.get_json("/v1/webhooks").await;
    assert_eq!(listed["webhooks"][0]["url"], shown.as_str());
    // The portal sends the URL back as it was shown, with another change.
    let response = app
        .request(reqwest::Method::PATCH, &format!("/v1/webhooks/{id}"))
        .json(&json!({"url": shown, "description": "bus"}))
        .send()
        .await
        .expect("PATCH");
    assert_eq!(response.status(), 200);
    app.inbound_text("447700800001", "still delivered").await;
    let got = exchange.receiver.next().await;
    assert_eq!(got.json["data"]["body"], "still delivered");

    // A wrong password: the attempt fails, and says so without the password.
    let wrong = app
        .create_webhook(
            &format!(
                "amqp://guest:Wr0ng-S3cret@127.0.0.1:5672/%2f?exchange={}&routing_key=x",
                exchange.exchange
            ),
            None,
        )
        .await;
    assert!(!wrong.to_string().contains("Wr0ng-S3cret"));
    app.inbound_text("447700800002", "to the wrong login").await;
    let error = first_error(&app, wrong["id"].as_str().unwrap()).await;
    assert!(!error.contains("Wr0ng-S3cret"), "{error}");
    let events = app.get_json("/v1/events?limit=100").await;
    assert!(!events.to_string().contains("Wr0ng-S3cret"));
}

#[tokio::test]
async fn broker_hosts_are_held_to_the_ssrf_guard() {
    let app = TestApp::spawn_with(|c| c.webhook_allow_cidrs = Vec::new()).await;
    for url in [
        "nats://127.0.0.1:4222/wa.events",
        "amqp://guest:guest@10.0.0.8:5672/%2f?exchange=e",
        "redis://169.254.169.254:6379/0?stream=s",
    ] {
        let (status, answer) = app.post("/v1/webhooks", json!({"url": url})).await;
        assert_eq!(status, 422, "{url}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("internal address"),
            "{answer}"
        );
        assert!(!answer.to_string().contains("guest:guest"));
    }
}

#[tokio::test]
async fn malformed_destinations_are_refused_naming_the_problem() {
    let app = spawn().await;
    for (url, named) in [
        ("kafka://127.0.0.1:9092/topic", "kafka"),
        ("nats://127.0.0.1:4222", "subject"),
        ("nats://127.0.0.1:4222/events.>", "wildcards"),
        ("amqp://guest:guest@127.0.0.1:5672/%2f", "exchange"),
        ("amqp://127.0.0.1/?exchange=bad%20name", "exchange"),
        ("redis://127.0.0.1:6379/0", "stream"),
        ("redis://127.0.0.1:6379/0?stream=s&maxlen=-1", "maxlen"),
        ("redis://127.0.0.1:6379/0?stream=s&colour=red", "colour"),
    ] {
        let (status, answer) = app.post("/v1/webhooks", json!({"url": url})).await;
        assert_eq!(status, 422, "{url}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_url");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{url}: {message}");
    }
}

#[tokio::test]
async fn a_rate_limited_endpoint_gets_its_deliveries_paced_and_in_order() {
    let app = spawn().await;
    let arrivals = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let seen = arrivals.clone();
    let receiver = Receiver::start_with(std::sync::Arc::new(move |_, _| {
        seen.lock().unwrap().push(Instant::now());
        (axum::http::StatusCode::OK, Duration::ZERO)
    }))
    .await;
    let (status, endpoint) = app
        .post("/v1/webhooks", json!({"url": receiver.url, "rate_limit": 5}))
        .await;
    assert_eq!(status, 201, "{endpoint}");
    assert_eq!(endpoint["rate_limit"], 5);
    let sent = customers_write(&app, 3, 15).await;
    let (delivered, _) = expect_every_message_in_order(&receiver, &sent).await;
    assert_eq!(delivered, 15);
    let times = arrivals.lock().unwrap().clone();
    let span = times.last().unwrap().duration_since(times[0]);
    // Fifteen deliveries at five a second: fourteen intervals of 200 ms. On a loaded machine
    // the first send can leave well after its slot (the later ones then keep to theirs), so
    // ten intervals are asked for: unpaced takes milliseconds, twice the rate 1.4 s.
    assert!(
        span >= Duration::from_millis(10 * 200),
        "15 deliveries took only {span:?}"
    );
    let busiest = crate::harness::most_within_a_second(&times);
    assert!(busiest <= 6, "{busiest} deliveries within one second");

    // The limit can be changed and removed; 0 is refused.
    let id = endpoint["id"].as_str().unwrap();
    for (change, status, expected) in [
        (json!({"rate_limit": 0}), 422, Value::Null),
        (json!({"rate_limit": 50}), 200, json!(50)),
        (json!({"description": "no change to the limit"}), 200, json!(50)),
        (json!({"rate_limit": null}), 200, Value::Null),
    ] {
        let response = app
            .request(reqwest::Method::PATCH, &format!("/v1/webhooks/{id}"))
            .json(&change)
            .send()
            .await
            .expect("PATCH");
        assert_eq!(response.status().as_u16(), status, "{change}");
        if status == 200 {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["rate_limit"], expected, "{change}");
        }
    }
}

//! Managing endpoints: create, list, read, change, delete, rotate the secret, send a test
//! event, and the SSRF guard.

use reqwest::Method;
use serde_json::json;

use crate::harness::{Receiver, TestApp, verify_signature};

#[tokio::test]
async fn endpoints_are_created_listed_changed_and_deleted() {
    let app = TestApp::spawn().await;
    let created = app.create_webhook("http://127.0.0.1:9/a", None).await;
    assert!(created["id"].as_str().unwrap().starts_with("ep_"));
    assert_eq!(created["enabled"], true);
    assert_eq!(
        created["events"],
        json!(["message", "ack.sent", "ack.delivered", "ack.read", "ack.failed"])
    );
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{secret}");

    let second = app
        .create_webhook("http://127.0.0.1:9/b", Some(&["message", "ack.read"]))
        .await;
    assert_eq!(second["events"], json!(["message", "ack.read"]));

    let list = app.get_json("/v1/webhooks").await;
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 2);

    let id = created["id"].as_str().unwrap();
    let response = app
        .request(Method::PATCH, &format!("/v1/webhooks/{id}"))
        .json(&json!({"url": "http://127.0.0.1:9/c", "events": ["ack.failed"], "enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let changed: serde_json::Value = response.json().await.unwrap();
    assert_eq!(changed["url"], "http://127.0.0.1:9/c");
    assert_eq!(changed["events"], json!(["ack.failed"]));
    assert_eq!(changed["enabled"], false);
    assert_eq!(
        app.get_json(&format!("/v1/webhooks/{id}")).await["url"],
        "http://127.0.0.1:9/c"
    );

    let (status, rotated) = app.post(&format!("/v1/webhooks/{id}/rotate-secret"), json!({})).await;
    assert_eq!(status, 200);
    assert_ne!(rotated["secret"], created["secret"]);
    assert!(rotated["secret"].as_str().unwrap().starts_with("whsec_"));

    let deleted = app
        .request(Method::DELETE, &format!("/v1/webhooks/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = app
        .request(Method::GET, &format!("/v1/webhooks/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    assert_eq!(
        app.get_json("/v1/webhooks").await["webhooks"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test]
async fn a_test_event_is_sent_signed_and_its_result_returned() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let endpoint = app.create_webhook(&receiver.url, Some(&["ack.read"])).await;
    let id = endpoint["id"].as_str().unwrap();
    let (status, result) = app.post(&format!("/v1/webhooks/{id}/test"), json!({})).await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["outcome"], "success");
    assert_eq!(result["status_code"], 200);
    let got = receiver.next().await;
    assert_eq!(got.json["event"], "test");
    assert_eq!(got.json["data"]["endpoint_id"], id);
    assert_eq!(got.header("webhook-id"), result["event_id"].as_str().unwrap());
    verify_signature(endpoint["secret"].as_str().unwrap(), &got);

    // The attempt is recorded like any other.
    let attempts = app
        .get_json(&format!("/v1/events/{}/attempts", result["event_id"].as_str().unwrap()))
        .await;
    assert_eq!(attempts["attempts"][0]["outcome"], "success");
}

#[tokio::test]
async fn a_failing_test_event_reports_the_failure() {
    let app = TestApp::spawn().await;
    let endpoint = app.create_webhook("http://127.0.0.1:9/closed", None).await;
    let id = endpoint["id"].as_str().unwrap();
    let (status, result) = app.post(&format!("/v1/webhooks/{id}/test"), json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(result["outcome"], "failure");
    assert_eq!(result["status_code"], serde_json::Value::Null);
    assert!(result["error"].as_str().unwrap().contains("connection"), "{result}");
}

#[tokio::test]
async fn internal_webhook_urls_are_refused_by_default() {
    let app = TestApp::spawn_with(|c| c.webhook_allow_cidrs.clear()).await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.0.0.5/hook",
        "http://192.168.1.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
    ] {
        let (status, body) = app.post("/v1/webhooks", json!({"url": url})).await;
        assert_eq!(status, 422, "{url}: {body}");
        assert_eq!(body["error"]["code"], "invalid_url", "{url}");
    }
    // Changing a URL to an internal one is refused too.
    assert!(
        app.get_json("/v1/webhooks").await["webhooks"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_guard_holds_again_at_connect_time() {
    // Allowed when saved, then the operator removes the allowance (as a DNS name could start
    // resolving somewhere internal): the attempt itself refuses to connect.
    use botlinkd::clock::Clock;
    use botlinkd::delivery::Attempter;
    use botlinkd::store::DueDelivery;
    use botlinkd::webhooks::{AddressPolicy, SigningSecret};
    use std::time::Duration;

    let receiver = Receiver::start().await;
    let port = receiver
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let attempter = Attempter::new(AddressPolicy::default(), Duration::from_secs(3), Clock::system());
    for url in [
        receiver.url.clone(),
        format!("http://localhost:{port}/hook"),
        format!("http://[::1]:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        format!("http://[::ffff:7f00:1]:{port}/hook"),
        format!("http://2130706433:{port}/hook"),
        format!("http://0x7f.1:{port}/hook"),
        format!("nats://127.0.0.1:{port}/whatsapp.events"),
        format!("amqp://guest:guest@[::ffff:127.0.0.1]:{port}/%2f?exchange=e"),
        format!("redis://localhost:{port}/0?stream=s"),
    ] {
        let due = DueDelivery {
            delivery_id: 1,
            event_seq: 1,
            event_id: "evt_x".into(),
            instance_id: 1,
            endpoint_id: "ep_x".into(),
            url: url.clone(),
            secret: SigningSecret::generate(),
            previous_secret: None,
            rate_limit: None,
            payload: "{}".into(),
            attempt: 1,
            failures: 0,
            lease_until: 0,
            after: None,
        };
        let result = attempter.attempt(&due).await;
        assert!(!result.success, "{url}");
        assert!(
            result.error.as_deref().unwrap_or_default().contains("blocked"),
            "{url}: {:?}",
            result.error
        );
    }
    assert_eq!(receiver.count(), 0, "nothing reached the internal receiver");
}

#[tokio::test]
async fn a_rotated_secret_keeps_signing_beside_the_new_one_for_its_grace_period() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let created = app.create_webhook(&receiver.url, Some(&["message"])).await;
    let id = created["id"].as_str().unwrap();
    let old = created["secret"].as_str().unwrap().to_string();
    let (status, rotated) = app.post(&format!("/v1/webhooks/{id}/rotate-secret"), json!({})).await;
    assert_eq!(status, 200);
    let new = rotated["secret"].as_str().unwrap().to_string();
    assert!(rotated["previous_secret_expires_at"].is_string(), "{rotated}");

    // Both secrets verify the same delivery: receivers can switch whenever they like.
    app.inbound_text("447123456789", "during the grace period").await;
    let during = receiver.next().await;
    assert_eq!(during.header("webhook-signature").matches("v1,").count(), 2);
    verify_signature(&old, &during);
    verify_signature(&new, &during);

    // Without a grace period the old secret stops at once.
    let (status, again) = app
        .post(
            &format!("/v1/webhooks/{id}/rotate-secret"),
            json!({"grace_period_seconds": 0}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["previous_secret_expires_at"], serde_json::Value::Null);
    let newest = again["secret"].as_str().unwrap().to_string();
    app.inbound_text("447123456789", "after").await;
    let after = receiver.next().await;
    assert_eq!(after.header("webhook-signature").matches("v1,").count(), 1);
    verify_signature(&newest, &after);
    let wh = standardwebhooks::Webhook::new(&new).unwrap();
    assert!(
        wh.verify(&after.body, &after.headers).is_err(),
        "the retired secret no longer verifies"
    );
    let (status, bad) = app
        .post(
            &format!("/v1/webhooks/{id}/rotate-secret"),
            json!({"grace_period_seconds": 9_999_999}),
        )
        .await;
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (400, Some("invalid_grace_period"))
    );
}

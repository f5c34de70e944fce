//! A customer's message reaches every subscribed endpoint as the seed's `message` JSON,
//! signed per Standard Webhooks.

use serde_json::json;

use crate::harness::{Receiver, TestApp, verify_signature};

#[tokio::test]
async fn a_text_arrives_with_the_exact_seed_shape_and_a_valid_signature() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let endpoint = app.create_webhook(&receiver.url, Some(&["message"])).await;
    let message_id = app.inbound_text("447123456789", "Hello, where is my order?").await;

    let got = receiver.next().await;
    assert_eq!(got.header("content-type"), "application/json");
    let data = &got.json["data"];
    assert_eq!(got.json["event"], "message");
    assert_eq!(got.json["instance_id"], app.keys.instance_id.as_str());
    assert_eq!(data["from"], "447123456789");
    assert_eq!(data["to"], app.keys.number.as_str());
    assert_eq!(data["type"], "text");
    assert_eq!(data["body"], "Hello, where is my order?");
    assert_eq!(data["message_id"], message_id.as_str());
    assert!(data["timestamp"].is_i64());
    let keys: Vec<&str> = got.json.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["event", "instance_id", "data"]);
    let data_keys: Vec<&str> = data.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(data_keys, ["from", "to", "type", "body", "message_id", "timestamp"]);

    assert!(got.header("webhook-id").starts_with("evt_"));
    assert!(got.header("webhook-signature").starts_with("v1,"));
    verify_signature(endpoint["secret"].as_str().unwrap(), &got);
    verify_with_python(endpoint["secret"].as_str().unwrap(), &got).await;
}

/// Verifies a delivery with the Python `standardwebhooks` package, as a receiver written in
/// Python would (`scripts/test` installs it into target/pyenv).
async fn verify_with_python(secret: &str, got: &crate::harness::Received) {
    use tokio::io::AsyncWriteExt;
    let python = std::env::var("BOTLINKD_TEST_PYTHON").unwrap_or_else(|_| {
        let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/target/pyenv/bin/python");
        if std::path::Path::new(venv).exists() {
            venv.to_string()
        } else {
            "python3".to_string()
        }
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/verify_signature.py");
    let headers: serde_json::Map<String, serde_json::Value> = ["webhook-id", "webhook-timestamp", "webhook-signature"]
        .iter()
        .map(|h| (h.to_string(), json!(got.header(h))))
        .collect();
    let input = json!({"secret": secret, "headers": headers, "body": String::from_utf8(got.body.to_vec()).unwrap()});
    let mut child = tokio::process::Command::new(&python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{python} must be installed for this test (scripts/test sets it up): {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .await
        .unwrap();
    let output = child.wait_with_output().await.unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the Python standardwebhooks package refused it: {said}"
    );
    assert_eq!(said.trim(), "verified message");
}

#[tokio::test]
async fn images_and_button_replies_carry_their_details() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    app.create_webhook(&receiver.url, None).await;

    let (status, _) = app
        .post(
            "/v1/sandbox/inbound",
            json!({"from": "447123456789", "type": "image", "media_url": "https://example.com/parcel.jpg", "caption": "it arrived broken", "name": "Ann"}),
        )
        .await;
    assert_eq!(status, 201);
    let image = receiver.next().await.json;
    assert_eq!(image["data"]["type"], "image");
    assert_eq!(image["data"]["body"], "it arrived broken");
    assert_eq!(image["data"]["media"]["url"], "https://example.com/parcel.jpg");
    assert_eq!(image["data"]["media"]["caption"], "it arrived broken");
    assert_eq!(image["data"]["name"], "Ann");

    let (status, _) = app
        .post(
            "/v1/sandbox/inbound",
            json!({"from": "447123456789", "type": "button", "body": "Track order", "button_id": "track_42"}),
        )
        .await;
    assert_eq!(status, 201);
    let button = receiver.next().await.json;
    assert_eq!(button["data"]["type"], "button");
    assert_eq!(button["data"]["body"], "Track order");
    assert_eq!(
        button["data"]["button"],
        json!({"id": "track_42", "title": "Track order"})
    );

    let (status, _) = app
        .post(
            "/v1/sandbox/inbound",
            json!({"from": "447123456789", "type": "location", "location": {"latitude": 51.5, "longitude": -0.12, "name": "Home"}}),
        )
        .await;
    assert_eq!(status, 201);
    let location = receiver.next().await.json;
    assert_eq!(location["data"]["type"], "location");
    assert_eq!(location["data"]["body"], "Home");
    assert_eq!(location["data"]["location"]["longitude"], -0.12);
}

#[tokio::test]
async fn every_subscribed_endpoint_gets_it_and_filters_are_respected() {
    let app = TestApp::spawn().await;
    let all = Receiver::start().await;
    let messages = Receiver::start().await;
    let reads_only = Receiver::start().await;
    let disabled = Receiver::start().await;
    app.create_webhook(&all.url, None).await;
    app.create_webhook(&messages.url, Some(&["message"])).await;
    app.create_webhook(&reads_only.url, Some(&["ack.read"])).await;
    let (status, _) = app
        .post("/v1/webhooks", json!({"url": disabled.url, "enabled": false}))
        .await;
    assert_eq!(status, 201);

    let id = app.inbound_text("447000000001", "hi").await;
    assert_eq!(all.next().await.json["data"]["message_id"], id.as_str());
    assert_eq!(messages.next().await.json["data"]["message_id"], id.as_str());
    reads_only.expect_nothing(std::time::Duration::from_millis(500)).await;
    assert_eq!(disabled.count(), 0);
}

#[tokio::test]
async fn each_instance_only_reaches_its_own_endpoints() {
    let app = TestApp::spawn().await;
    let other = app.create_instance("other").await;
    let mine = Receiver::start().await;
    let theirs = Receiver::start().await;
    app.create_webhook(&mine.url, None).await;
    let response = app
        .request_as(&other, reqwest::Method::POST, "/v1/webhooks")
        .json(&json!({"url": theirs.url}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    app.inbound_text("447000000002", "for instance one").await;
    assert_eq!(mine.next().await.json["data"]["body"], "for instance one");
    theirs.expect_nothing(std::time::Duration::from_millis(500)).await;
}

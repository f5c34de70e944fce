//! Replies through `/v1/messages` and the compatibility `/api/create-message`, and the
//! receipts (`ack` events) that follow them.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Receiver, TestApp};

async fn acks_for(receiver: &Receiver, message_id: &str, count: usize) -> Vec<String> {
    let mut statuses = Vec::new();
    while statuses.len() < count {
        let got = receiver.next_event("ack").await;
        if got.json["data"]["message_id"] == message_id {
            statuses.push(got.json["data"]["status"].as_str().unwrap().to_string());
        }
    }
    statuses
}

#[tokio::test]
async fn a_reply_walks_sent_delivered_read_in_order() {
    let app = TestApp::spawn().await;
    // The customer wrote, so the 24-hour window is open for free-form replies.
    app.inbound_text("447123456789", "Hello?").await;
    let receiver = Receiver::start().await;
    app.create_webhook(&receiver.url, Some(&["ack.sent", "ack.delivered", "ack.read"]))
        .await;
    let message_id = app.send_text("447123456789", "Your order ships today").await;
    assert!(message_id.starts_with("wamid."));
    assert_eq!(acks_for(&receiver, &message_id, 3).await, ["sent", "delivered", "read"]);

    let history = app.get_json("/v1/conversations/447123456789/messages").await;
    assert_eq!(history["messages"][0]["status"], "read");
}

#[tokio::test]
async fn images_and_buttons_are_sent() {
    let app = TestApp::spawn().await;
    // The customer wrote, so the 24-hour window is open for free-form replies.
    app.inbound_text("447123456789", "Hello?").await;
    let (status, image) = app
        .post(
            "/v1/messages",
            json!({"to": "447123456789", "type": "image", "media_url": "https://example.com/a.png", "caption": "your invoice"}),
        )
        .await;
    assert_eq!(status, 202, "{image}");
    assert_eq!(image["status"], "sent");
    let (status, buttons) = app
        .post(
            "/v1/messages",
            json!({"to": "447123456789", "type": "buttons", "body": "Anything else?", "buttons": [{"id": "yes", "title": "Yes"}, {"title": "No"}]}),
        )
        .await;
    assert_eq!(status, 202, "{buttons}");
    let stored = app
        .get_json(&format!("/v1/messages/{}", buttons["message_id"].as_str().unwrap()))
        .await;
    assert_eq!(stored["type"], "buttons");
    assert_eq!(
        stored["buttons"],
        json!([{"id": "yes", "title": "Yes"}, {"id": "No", "title": "No"}])
    );
    let (status, too_many) = app
        .post(
            "/v1/messages",
            json!({"to": "447123456789", "type": "buttons", "body": "?", "buttons": [{"title": "1"}, {"title": "2"}, {"title": "3"}, {"title": "4"}]}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(too_many["error"]["code"], "invalid_buttons");
}

#[tokio::test]
async fn statuses_can_be_driven_by_hand() {
    let app = TestApp::spawn_with(|c| {
        c.sandbox_delivered_after = None;
        c.sandbox_read_after = None;
    })
    .await;
    app.inbound_text("447123456789", "Hello?").await;
    let receiver = Receiver::start().await;
    app.create_webhook(&receiver.url, Some(&["ack"])).await;
    let id = app.send_text("447123456789", "hello").await;
    assert_eq!(acks_for(&receiver, &id, 1).await, ["sent"]);
    receiver.expect_nothing(std::time::Duration::from_millis(300)).await;

    let (status, body) = app
        .post(&format!("/v1/sandbox/messages/{id}/status"), json!({"status": "read"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(acks_for(&receiver, &id, 1).await, ["read"]);

    // Statuses only move forward.
    let (status, body) = app
        .post(
            &format!("/v1/sandbox/messages/{id}/status"),
            json!({"status": "delivered"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");

    let failing = app.send_text("447123456789", "to a lost phone").await;
    assert_eq!(acks_for(&receiver, &failing, 1).await, ["sent"]);
    let (status, _) = app
        .post(
            &format!("/v1/sandbox/messages/{failing}/status"),
            json!({"status": "failed", "error": {"code": 131026, "title": "Undeliverable"}}),
        )
        .await;
    assert_eq!(status, 200);
    let failed = receiver.next_event("ack").await;
    assert_eq!(failed.json["data"]["status"], "failed");
    assert_eq!(
        failed.json["data"]["error"],
        json!({"code": 131026, "title": "Undeliverable"})
    );

    let (status, _) = app
        .post("/v1/sandbox/messages/wamid.nope/status", json!({"status": "read"}))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_compatibility_endpoint_takes_forms_and_json() {
    let app = TestApp::spawn().await;
    // The customer wrote, so the 24-hour window is open for free-form replies.
    app.inbound_text("447123456789", "Hello?").await;
    let receiver = Receiver::start().await;
    app.create_webhook(&receiver.url, Some(&["ack.sent"])).await;
    let url = format!("{}/api/create-message", app.base);
    let keys = &app.keys;

    let multipart = reqwest::multipart::Form::new()
        .text("appkey", keys.app_key.clone())
        .text("authkey", keys.auth_key.clone())
        .text("to", "447123456789")
        .text("message", "Example message");
    let response = app.client.post(&url).multipart(multipart).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message_status"], "Success");
    assert_eq!(body["data"]["from"], keys.number.as_str());
    assert_eq!(body["data"]["to"], "447123456789");
    assert_eq!(body["data"]["status_code"], 200);
    let id = body["data"]["message_id"].as_str().unwrap().to_string();
    assert_eq!(receiver.next().await.json["data"]["message_id"], id.as_str());

    let form = [
        ("appkey", keys.app_key.as_str()),
        ("authkey", keys.auth_key.as_str()),
        ("to", "447123456789"),
        ("message", "see attached"),
        ("file", "https://example.com/invoice.pdf"),
    ];
    let response = app.client.post(&url).form(&form).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let stored = app
        .get_json(&format!(
            "/v1/messages/{}",
            body["data"]["message_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(stored["type"], "image");
    assert_eq!(stored["media"]["url"], "https://example.com/invoice.pdf");

    let json_body =
        json!({"appkey": keys.app_key, "authkey": keys.auth_key, "to": "447123456789", "message": "json works"});
    let response = app.client.post(&url).json(&json_body).send().await.unwrap();
    assert_eq!(response.status(), 200);

    let bad = [
        ("appkey", keys.app_key.as_str()),
        ("authkey", "wrong"),
        ("to", "447123456789"),
        ("message", "x"),
    ];
    let response = app.client.post(&url).form(&bad).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": "Invalid Auth and AppKey"})
    );
}

#[tokio::test]
async fn an_idempotency_key_makes_a_retried_send_safe() {
    let app = TestApp::spawn().await;
    // The customer wrote, so the 24-hour window is open for free-form replies.
    app.inbound_text("447123456789", "Hello?").await;
    let body = json!({"to": "447123456789", "body": "charged once"});
    let send = || {
        app.request(Method::POST, "/v1/messages")
            .header("idempotency-key", "order-42-shipped")
            .json(&body)
            .send()
    };
    let first: Value = send().await.unwrap().json().await.unwrap();
    let second = send().await.unwrap();
    assert_eq!(second.status(), 202);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["message_id"], second["message_id"]);
    // The customer's message and one reply.
    let history = app.get_json("/v1/conversations/447123456789/messages").await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 2);

    let other = app
        .request(Method::POST, "/v1/messages")
        .header("idempotency-key", "order-42-shipped")
        .json(&json!({"to": "447123456789", "body": "something else"}))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 409);
}

#[tokio::test]
async fn free_form_replies_need_the_24_hour_window_and_templates_always_go() {
    let app = TestApp::spawn().await;
    let customer = "447700900123";
    let refused = |answer: &Value| answer["error"]["code"] == "outside_customer_service_window";

    // Never wrote: text, images and buttons are refused at once; a template goes.
    for body in [
        json!({"to": customer, "body": "hi"}),
        json!({"to": customer, "type": "image", "media_url": "https://example.com/a.png"}),
        json!({"to": customer, "type": "buttons", "body": "?", "buttons": [{"title": "Yes"}]}),
    ] {
        let (status, answer) = app.post("/v1/messages", body).await;
        assert_eq!(status, 422, "{answer}");
        assert!(refused(&answer), "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains("never written"));
    }
    let (status, answer) = app
        .post(
            "/v1/messages",
            json!({"to": customer, "type": "template", "template": {"name": "order_update", "params": ["1001", "today"]}}),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    // Nothing was stored for the refused ones: the template is the only message.
    let history = app.get_json(&format!("/v1/conversations/{customer}/messages")).await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 1);
    assert_eq!(history["window_expires_at"], Value::Null);

    // The customer wrote 25 hours ago (the sandbox back-dates it): the window closed an hour ago.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let wrote = now - 25 * 3600;
    let (status, answer) = app
        .post(
            "/v1/sandbox/inbound",
            json!({"from": customer, "body": "yesterday's question", "timestamp": wrote}),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    let closed = botlinkd::store::rfc3339((wrote + 24 * 3600) * 1000);
    let (status, answer) = app.post("/v1/messages", json!({"to": customer, "body": "sorry"})).await;
    assert_eq!(status, 422);
    assert!(refused(&answer));
    assert!(
        answer["error"]["message"].as_str().unwrap().contains(&closed),
        "{answer}"
    );
    let history = app.get_json(&format!("/v1/conversations/{customer}/messages")).await;
    assert_eq!(history["window_expires_at"], closed.as_str());
    let list = app.get_json("/v1/conversations").await;
    assert_eq!(list["conversations"][0]["window_expires_at"], closed.as_str());

    // The compatibility route refuses in its own shape.
    let compat = app
        .client
        .post(format!("{}/api/create-message", app.base))
        .json(&json!({"appkey": app.keys.app_key, "authkey": app.keys.auth_key, "to": customer, "message": "sorry"}))
        .send()
        .await
        .unwrap();
    assert_eq!(compat.status(), 422);
    let compat: Value = compat.json().await.unwrap();
    assert!(
        compat["error"].as_str().unwrap().contains("customer service window"),
        "{compat}"
    );

    // They write now: the window is open for a day from this message.
    let (status, _) = app
        .post(
            "/v1/sandbox/inbound",
            json!({"from": customer, "body": "still there?", "timestamp": now}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, answer) = app.post("/v1/messages", json!({"to": customer, "body": "yes!"})).await;
    assert_eq!(status, 202, "{answer}");
    let history = app.get_json(&format!("/v1/conversations/{customer}/messages")).await;
    assert_eq!(
        history["window_expires_at"],
        botlinkd::store::rfc3339((now + 24 * 3600) * 1000).as_str()
    );

    // A timestamp in the future, or more than 30 days back, is refused.
    for timestamp in [now + 3600, now - 31 * 24 * 3600] {
        let (status, answer) = app
            .post(
                "/v1/sandbox/inbound",
                json!({"from": customer, "body": "x", "timestamp": timestamp}),
            )
            .await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (422, Some("invalid_timestamp"))
        );
    }
}

#[tokio::test]
async fn the_sandbox_has_built_in_templates_and_template_sends_are_checked_against_them() {
    let app = TestApp::spawn().await;
    let listed = app.get_json("/v1/templates").await;
    assert_eq!(listed["source"], "built_in");
    let templates = listed["templates"].as_array().unwrap();
    let order = templates
        .iter()
        .find(|t| t["name"] == "order_update" && t["language"] == "en_US")
        .expect("order_update is built in");
    assert_eq!(
        (order["params"].as_u64(), order["status"].as_str()),
        (Some(2), Some("APPROVED"))
    );
    let send = |name: &str, language: &str, params: Vec<&str>| json!({"to": "447700900321", "type": "template", "template": {"name": name, "language": language, "params": params}});
    for (body, code) in [
        (send("order_update", "pt_BR", vec!["1", "2"]), "unknown_template"),
        (send("no_such_template", "en_US", vec![]), "unknown_template"),
        (
            send("spring_sale", "en_US", vec!["Monday", "10%"]),
            "template_not_approved",
        ),
        (send("order_update", "en_US", vec!["A-1"]), "template_params"),
    ] {
        let (status, answer) = app.post("/v1/messages", body).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (422, Some(code)),
            "{answer}"
        );
    }
    // Nothing was queued for the refused ones; the right one goes.
    let (status, answer) = app
        .post("/v1/messages", send("order_update", "en_GB", vec!["A-1", "Friday"]))
        .await;
    assert_eq!(status, 202, "{answer}");
    let history = app.get_json("/v1/conversations/447700900321/messages").await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 1);
    // There is nothing to sync on the sandbox.
    let (status, answer) = app.post("/v1/templates/sync", json!({})).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("cannot_sync_templates"))
    );
}

/// A small PNG-shaped file.
fn picture() -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend(std::iter::repeat_n(42u8, 2000));
    bytes
}

async fn upload(app: &TestApp, content_type: &str, bytes: Vec<u8>) -> (u16, Value) {
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name("file.bin")
        .mime_str(content_type)
        .unwrap();
    let response = app
        .request(Method::POST, "/v1/media")
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_file_uploaded_to_the_sandbox_is_sent_by_its_media_id_and_bad_files_are_refused() {
    let app = TestApp::spawn().await;
    app.inbound_text("447123456789", "send me the invoice").await;
    let (status, uploaded) = upload(&app, "image/png", picture()).await;
    assert_eq!(status, 201, "{uploaded}");
    assert_eq!(
        (uploaded["type"].as_str(), uploaded["size"].as_u64()),
        (Some("image"), Some(2008))
    );
    let media_id = uploaded["media_id"].as_str().unwrap().to_string();
    let served = app
        .request(Method::GET, &format!("/v1/media/{media_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.headers()["content-type"], "image/png");
    assert_eq!(served.bytes().await.unwrap().to_vec(), picture());

    let (status, sent) = app
        .post(
            "/v1/messages",
            json!({"to": "447123456789", "type": "image", "media_id": media_id, "caption": "your invoice"}),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    let stored = app
        .get_json(&format!("/v1/messages/{}", sent["message_id"].as_str().unwrap()))
        .await;
    assert_eq!(stored["media"]["id"], media_id.as_str());

    // An id this instance never uploaded, both a URL and an id, and bad files.
    let (status, answer) = app
        .post(
            "/v1/messages",
            json!({"to": "447123456789", "type": "image", "media_id": "1234567890123456"}),
        )
        .await;
    assert_eq!((status, answer["error"]["code"].as_str()), (422, Some("unknown_media")));
    let (status, answer) = app
        .post(
            "/v1/messages",
            json!({"to": "447123456789", "media_id": media_id, "media_url": "https://example.com/a.png"}),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("missing_media_url"))
    );
    for (content_type, bytes, expected, code) in [
        ("image/png", Vec::new(), 422, "empty_file"),
        ("text/html", b"<html></html>".to_vec(), 415, "unsupported_media_type"),
        ("image/jpeg", vec![0u8; 5 * 1024 * 1024 + 1], 413, "file_too_large"),
    ] {
        let (status, answer) = upload(&app, content_type, bytes).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (expected, Some(code)),
            "{answer}"
        );
    }
    let missing = app
        .request(Method::POST, "/v1/media")
        .multipart(reqwest::multipart::Form::new().text("note", "no file"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 422);
    let not_a_form = app
        .request(Method::POST, "/v1/media")
        .json(&json!({"file": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(not_a_form.status(), 400);
    let answer: Value = not_a_form.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "invalid_upload");
    let nothing = app
        .request(Method::GET, "/v1/media/1234567890123456")
        .send()
        .await
        .unwrap();
    assert_eq!(nothing.status(), 404);
}

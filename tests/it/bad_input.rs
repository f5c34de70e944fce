//! Bad input gets a clear JSON error with the right status, and the server carries on with
//! nothing already accepted lost.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Receiver, TestApp};

async fn error_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("errors are JSON");
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("error shape: {body}"))
        .to_string();
    assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    (status, code)
}

#[tokio::test]
async fn malformed_and_wrongly_typed_bodies_are_refused() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    app.create_webhook(&receiver.url, Some(&["message"])).await;
    let accepted = app.inbound_text("447123456789", "accepted before the garbage").await;

    let cases: Vec<(&str, &str, &str, u16, &str)> = vec![
        (
            "/v1/sandbox/inbound",
            "application/json",
            "{not json",
            400,
            "malformed_json",
        ),
        (
            "/v1/sandbox/inbound",
            "application/json",
            r#"{"from": 447123456789, "body": "x"}"#,
            422,
            "invalid_body",
        ),
        (
            "/v1/sandbox/inbound",
            "application/json",
            r#"{"from": "447123456789", "type": "hologram"}"#,
            422,
            "unsupported_type",
        ),
        (
            "/v1/sandbox/inbound",
            "application/json",
            r#"{"from": "not a phone", "body": "x"}"#,
            422,
            "invalid_phone_number",
        ),
        (
            "/v1/sandbox/inbound",
            "text/plain",
            r#"{"from": "447123456789", "body": "x"}"#,
            415,
            "unsupported_media_type",
        ),
        (
            "/v1/messages",
            "application/json",
            r#"{"to": "4471"#,
            400,
            "malformed_json",
        ),
        (
            "/v1/messages",
            "application/json",
            r#"{"to": "447123456789", "type": "fax", "body": "x"}"#,
            422,
            "unsupported_type",
        ),
        (
            "/v1/messages",
            "application/json",
            r#"{"to": "447123456789", "body": ""}"#,
            422,
            "missing_body",
        ),
        (
            "/v1/messages",
            "application/json",
            r#"{"to": "447123456789", "body": "x", "colour": "red"}"#,
            422,
            "invalid_body",
        ),
        (
            "/v1/webhooks",
            "application/json",
            r#"{"url": "ftp://example.com"}"#,
            422,
            "invalid_url",
        ),
        (
            "/v1/webhooks",
            "application/json",
            r#"{"url": "http://127.0.0.1:1/x", "events": ["message.sent"]}"#,
            422,
            "invalid_events",
        ),
        (
            "/v1/webhooks",
            "application/json",
            r#"{"url": "http://127.0.0.1:1/x", "events": []}"#,
            422,
            "invalid_events",
        ),
    ];
    for (path, content_type, body, status, code) in cases {
        let response = app
            .request(Method::POST, path)
            .header("content-type", content_type)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(error_of(response).await, (status, code.to_string()), "{path} {body}");
    }

    let big = "x".repeat(300 * 1024);
    let response = app
        .request(Method::POST, "/v1/sandbox/inbound")
        .json(&json!({"from": "447123456789", "body": big}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(response).await, (413, "payload_too_large".to_string()));
    let response = app
        .request(Method::POST, "/v1/messages")
        .json(&json!({"to": "447123456789", "body": big}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(response).await.0, 413);

    let response = app
        .request(Method::GET, "/v1/conversations?limit=abc")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(response).await, (400, "invalid_query".to_string()));
    let response = app.request(Method::GET, "/v1/nothing-here").send().await.unwrap();
    assert_eq!(error_of(response).await, (404, "not_found".to_string()));
    let response = app.request(Method::PUT, "/v1/messages").send().await.unwrap();
    assert_eq!(error_of(response).await, (405, "method_not_allowed".to_string()));

    // The server is still up and the message accepted first was delivered.
    let got = receiver.next().await;
    assert_eq!(got.json["data"]["message_id"], accepted.as_str());
    let health = app.client.get(format!("{}/healthz", app.base)).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn missing_or_wrong_keys_get_401() {
    let app = TestApp::spawn().await;
    let url = format!("{}/v1/webhooks", app.base);
    let anonymous = app.client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.headers()["www-authenticate"], "Basic realm=\"botlinkd\"");
    assert_eq!(error_of(anonymous).await, (401, "unauthorized".to_string()));
    let wrong = app
        .client
        .get(&url)
        .basic_auth(&app.keys.app_key, Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(wrong).await.0, 401);
    let unknown = app
        .client
        .get(&url)
        .basic_auth("nobody", Some(&app.keys.auth_key))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(unknown).await.0, 401);
    let garbage = app
        .client
        .get(&url)
        .header("authorization", "Basic !!!")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(garbage).await.0, 401);
    let bearer = app
        .client
        .get(&url)
        .bearer_auth(&app.keys.auth_key)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(bearer).await.0, 401);
}

#[tokio::test]
async fn another_instances_resources_are_not_found() {
    let app = TestApp::spawn().await;
    let other = app.create_instance("other").await;
    let endpoint = app.create_webhook("http://127.0.0.1:9/mine", None).await;
    let id = endpoint["id"].as_str().unwrap();
    app.inbound_text("447123456789", "a question").await;
    let message = app.send_text("447123456789", "private").await;
    let feed = app.get_json("/v1/events").await;
    let event_id = feed["events"][0]["id"].as_str().unwrap();

    let probes = [
        (Method::GET, format!("/v1/webhooks/{id}")),
        (Method::PATCH, format!("/v1/webhooks/{id}")),
        (Method::DELETE, format!("/v1/webhooks/{id}")),
        (Method::POST, format!("/v1/webhooks/{id}/rotate-secret")),
        (Method::POST, format!("/v1/webhooks/{id}/test")),
        (Method::GET, format!("/v1/messages/{message}")),
        (Method::POST, format!("/v1/sandbox/messages/{message}/status")),
        (Method::GET, format!("/v1/events/{event_id}")),
        (Method::GET, format!("/v1/events/{event_id}/attempts")),
        (Method::POST, format!("/v1/events/{event_id}/resend")),
    ];
    for (method, path) in probes {
        let mut request = app.request_as(&other, method.clone(), &path);
        if method == Method::PATCH {
            request = request.json(&json!({"enabled": false}));
        }
        if path.ends_with("/status") {
            request = request.json(&json!({"status": "read"}));
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            error_of(response).await,
            (404, "not_found".to_string()),
            "{method} {path}"
        );
    }
    let theirs: Value = app.get_json_as(&other, "/v1/conversations").await;
    assert!(theirs["conversations"].as_array().unwrap().is_empty());
    // Still there for its owner.
    assert_eq!(app.get_json(&format!("/v1/webhooks/{id}")).await["enabled"], true);
}

//! Security at the edge: instance isolation on every route of the OpenAPI document, rate
//! limits on failed authentication and on API calls, and the header size limit.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Keys, Receiver, TestApp};

/// What instance A owns, to be looked for in everything B is shown.
struct Owned {
    endpoint: String,
    endpoint_url: String,
    secret: String,
    inbound: String,
    outbound: String,
    event: String,
    media: String,
    customer: &'static str,
}

/// The routes that take no instance keys (or take them in the body), left out of the
/// isolation sweep; everything else in the document must be in it.
const PUBLIC: [&str; 5] = [
    "GET /healthz",
    "GET /metrics",
    "GET /meta/webhook",
    "POST /meta/webhook",
    "POST /api/create-message",
];

/// The path with A's ids in it, and a body, for each route B tries.
fn attack(route: &str, a: &Owned, b_url: &str) -> (String, Option<Value>) {
    let (method, path) = route.split_once(' ').unwrap();
    let path = path
        .replace("/v1/webhooks/{id}", &format!("/v1/webhooks/{}", a.endpoint))
        .replace("/v1/events/{id}", &format!("/v1/events/{}", a.event))
        .replace(
            "/v1/sandbox/messages/{id}",
            &format!("/v1/sandbox/messages/{}", a.outbound),
        )
        .replace("/v1/messages/{id}", &format!("/v1/messages/{}", a.inbound))
        .replace("/v1/media/{id}", &format!("/v1/media/{}", a.media))
        .replace("{number}", a.customer);
    let body = match (method, path.as_str()) {
        ("POST", "/v1/webhooks") => Some(json!({"url": b_url})),
        ("PATCH", _) => Some(json!({"url": b_url, "enabled": false})),
        ("POST", "/v1/messages") => Some(json!({"to": a.customer, "body": "from B"})),
        ("POST", "/v1/sandbox/inbound") => Some(json!({"from": a.customer, "body": "to B"})),
        ("POST", p) if p.ends_with("/status") => Some(json!({"status": "read"})),
        ("POST", p) if p.ends_with("/resend") => Some(json!({"endpoint_id": a.endpoint})),
        ("PUT", "/v1/instance/channel") => Some(json!({"channel": "sandbox"})),
        ("POST", _) => Some(json!({})),
        _ => None,
    };
    (path, body)
}

async fn call(test: &TestApp, keys: &Keys, route: &str, path: &str, body: Option<Value>) -> (u16, String) {
    let method: Method = route.split_once(' ').unwrap().0.parse().unwrap();
    let path = if path == "/v1/stream" {
        "/v1/stream?after=0"
    } else {
        path
    };
    let mut request = test.request_as(keys, method, path);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let mut response = request.send().await.unwrap();
    let status = response.status().as_u16();
    // The stream never ends: what it sends in half a second is enough.
    let mut text = Vec::new();
    let read = async {
        while let Ok(Some(chunk)) = response.chunk().await {
            text.extend_from_slice(&chunk);
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), read).await;
    (status, String::from_utf8_lossy(&text).into_owned())
}

#[tokio::test]
async fn no_route_lets_one_instances_keys_read_or_change_anything_of_another() {
    let test = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let a_url = format!("{}?owner=a", receiver.url);
    let endpoint = test.create_webhook(&a_url, None).await;
    let inbound = test.inbound_text("447700900001", "A's customer writes").await;
    let outbound = test.send_text("447700900001", "A answers").await;
    // Let the sandbox walk A's reply to `read` first: those acks are A's own.
    while test.get_json(&format!("/v1/messages/{outbound}")).await["status"] != "read" {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let event = test.get_json("/v1/events?after=0").await["events"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let a = Owned {
        endpoint: endpoint["id"].as_str().unwrap().into(),
        endpoint_url: a_url.clone(),
        secret: endpoint["secret"].as_str().unwrap().into(),
        inbound,
        outbound,
        event,
        media: {
            let file = reqwest::multipart::Part::bytes(b"\x89PNG A's picture".to_vec())
                .mime_str("image/png")
                .unwrap();
            let uploaded = test
                .request(Method::POST, "/v1/media")
                .multipart(reqwest::multipart::Form::new().part("file", file))
                .send()
                .await
                .unwrap();
            assert_eq!(uploaded.status(), 201);
            uploaded.json::<Value>().await.unwrap()["media_id"]
                .as_str()
                .unwrap()
                .to_string()
        },
        customer: "447700900001",
    };
    let before_events = test.get_json("/v1/events?after=0&limit=1000").await["events"]
        .as_array()
        .unwrap()
        .len();
    let before_messages = test.get_json("/v1/conversations/447700900001/messages").await;
    let b = test.create_instance("intruder").await;
    // The same number writes to B too, so B may answer it: what B's calls reach is B's own.
    let wrote = test
        .request_as(&b, Method::POST, "/v1/sandbox/inbound")
        .json(&json!({"from": "447700900001", "body": "B's customer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrote.status(), 201);
    let b_url = format!("{}?owner=b", receiver.url);

    let document = test
        .client
        .get(format!("{}/openapi.json", test.base))
        .send()
        .await
        .unwrap();
    let document: Value = document.json().await.unwrap();
    let mut routes = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routes.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let mut tried = 0;
    for route in &routes {
        if PUBLIC.contains(&route.as_str()) {
            continue;
        }
        let (path, body) = attack(route, &a, &b_url);
        let (status, text) = call(&test, &b, route, &path, body).await;
        tried += 1;
        if path.contains(&a.endpoint)
            || path.contains(&a.event)
            || path.contains(&a.inbound)
            || path.contains(&a.outbound)
            || path.contains(&a.media)
        {
            assert_eq!(status, 404, "{route} with A's id answered B {status}: {text}");
        }
        // An upload sent as JSON is a malformed form: that is all B's call can be.
        let malformed_upload = route == "POST /v1/media" && status == 400;
        assert!(
            (200..300).contains(&status) || status == 404 || status == 409 || malformed_upload,
            "{route}: unexpected {status}: {text}"
        );
        for secret in [
            &a.endpoint,
            &a.endpoint_url,
            &a.secret,
            &a.inbound,
            &a.outbound,
            &a.event,
            &test.keys.app_key,
        ] {
            assert!(
                !text.contains(secret.as_str()),
                "{route} showed B something of A's: {text}"
            );
        }
    }
    for public in PUBLIC {
        assert!(routes.contains(public), "{public} is no longer in the document");
    }
    assert_eq!(tried, routes.len() - PUBLIC.len());
    assert!(tried >= 20, "the sweep covered only {tried} routes");

    // A's things are as they were.
    let mine = test.get_json(&format!("/v1/webhooks/{}", a.endpoint)).await;
    assert_eq!(mine["url"], a.endpoint_url.as_str());
    assert_eq!(mine["secret"], a.secret.as_str());
    assert_eq!(mine["enabled"], true);
    let after_events = test.get_json("/v1/events?after=0&limit=1000").await["events"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(after_events, before_events, "B's calls made no event of A's");
    let after_messages = test.get_json("/v1/conversations/447700900001/messages").await;
    assert_eq!(after_messages, before_messages);
    assert_eq!(
        test.get_json(&format!("/v1/messages/{}", a.outbound)).await["status"],
        "read"
    );
}

#[tokio::test]
async fn failed_authentication_is_rate_limited_per_address() {
    let test = TestApp::spawn().await;
    let wrong = Keys {
        auth_key: "not-the-auth-key".into(),
        ..test.keys.clone()
    };
    for n in 0..20 {
        let status = test
            .request_as(&wrong, Method::GET, "/v1/instance")
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401, "failure {n}");
    }
    let limited = test
        .request_as(&wrong, Method::GET, "/v1/instance")
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 429);
    let wait: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3).contains(&wait), "{wait}");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_auth_failures");
    // While the address is limited, even the right keys wait: guessing stays slow.
    let right = test.request(Method::GET, "/v1/instance").send().await.unwrap();
    assert_eq!(right.status(), 429);
    // The compatibility endpoint counts too.
    let compat = test
        .client
        .post(format!("{}/api/create-message", test.base))
        .form(&[
            ("appkey", test.keys.app_key.as_str()),
            ("authkey", "x"),
            ("to", "447700900001"),
            ("message", "hi"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(compat.status(), 429);
}

#[tokio::test]
async fn api_calls_are_rate_limited_per_instance_with_retry_after() {
    // One call a second with a burst of two: the third call is refused unless a whole second
    // went by (a faster rate made the test depend on the machine's speed).
    let test = TestApp::spawn_with(|c| c.api_rate_limit = Some(1)).await;
    for n in 0..2 {
        let status = test.request(Method::GET, "/v1/webhooks").send().await.unwrap().status();
        assert_eq!(status, 200, "call {n} is within the burst of 2");
    }
    let limited = test.request(Method::GET, "/v1/webhooks").send().await.unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another instance has its own budget, and simulated customers are not API calls.
    let other = test.create_instance("other").await;
    let status = test
        .request_as(&other, Method::GET, "/v1/webhooks")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    for _ in 0..3 {
        test.inbound_text("447700900001", "customers are not limited").await;
    }
    // The budget comes back.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let status = test.request(Method::GET, "/v1/webhooks").send().await.unwrap().status();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn oversized_headers_get_a_json_431() {
    let test = TestApp::spawn().await;
    let response = test
        .request(Method::GET, "/v1/instance")
        .header("x-padding", "a".repeat(20 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "headers_too_large");
    let fine = test.request(Method::GET, "/v1/instance").send().await.unwrap();
    assert_eq!(fine.status(), 200);
}

//! Operations: `/metrics` in Prometheus format.

use std::time::Duration;

use crate::harness::{Receiver, TestApp};

#[tokio::test]
async fn metrics_count_events_attempts_and_queues() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let endpoint = app.create_webhook(&receiver.url, Some(&["message"])).await;
    app.inbound_text("447000000001", "counted").await;
    receiver.next().await;
    // Pause the endpoint and queue one more, so the queue gauges have something to show.
    let id = endpoint["id"].as_str().unwrap();
    let paused = app
        .request(reqwest::Method::PATCH, &format!("/v1/webhooks/{id}"))
        .json(&serde_json::json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), 200);
    app.inbound_text("447000000001", "queued").await;

    let scrape = || async {
        let response = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        response.text().await.unwrap()
    };
    let mut text = scrape().await;
    // The attempt is counted just after the receiver answers; look again briefly if needed.
    for _ in 0..50 {
        if text.contains("status_class=\"2xx\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        text = scrape().await;
    }
    for expected in [
        "botlinkd_events_ingested_total{kind=\"message\"} 2",
        "botlinkd_delivery_attempts_total{outcome=\"success\",status_class=\"2xx\",destination=\"webhook\"} 1",
        "botlinkd_delivery_attempt_seconds_count 1",
        "botlinkd_deliveries_queued{state=\"pending\"} 1",
        "botlinkd_endpoints_disabled 1",
        "botlinkd_stream_watchers 0",
        "botlinkd_leases_taken_over_total{work=\"deliveries\"} 0",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
}

#[tokio::test]
async fn the_checked_in_openapi_document_is_the_one_served() {
    let app = TestApp::spawn().await;
    let served: serde_json::Value = app
        .client
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served["openapi"], "3.1.0");
    for path in [
        "/v1/webhooks",
        "/v1/messages",
        "/v1/events",
        "/v1/stream",
        "/v1/sandbox/inbound",
        "/api/create-message",
    ] {
        assert!(served["paths"].get(path).is_some(), "{path} is documented");
    }
    for schema in ["MessageEvent", "AckEvent", "ErrorBody"] {
        assert!(
            served["components"]["schemas"].get(schema).is_some(),
            "{schema} is documented"
        );
    }
    let pretty = serde_json::to_string_pretty(&served).unwrap() + "\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(path, &pretty).unwrap();
    }
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in == pretty,
        "docs/openapi.json is stale: run `UPDATE_OPENAPI=1 cargo test --test it openapi` and commit it"
    );
    let docs = app.client.get(format!("{}/docs", app.base)).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("/openapi.json"));
}

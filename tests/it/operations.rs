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
                .starts_with("text/plain")
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
        "botlinkd_delivery_attempts_total{outcome=\"success\",status_class=\"2xx\"} 1",
        "botlinkd_delivery_attempt_seconds_count 1",
        "botlinkd_deliveries_queued{state=\"pending\"} 1",
        "botlinkd_endpoints_disabled 1",
        "botlinkd_stream_watchers 0",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
}

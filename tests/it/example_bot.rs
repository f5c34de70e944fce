//! The order-status bot in `examples/order_bot` against a real botlinkd: a customer asks
//! where the order is, gets buttons, presses one, and gets the tracking link.

#[path = "../../examples/order_bot/bot.rs"]
mod bot;

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{PATIENCE, TestApp};

/// Waits until the conversation's newest outgoing message satisfies `check`.
async fn newest_reply(app: &TestApp, number: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let page = app
            .get_json(&format!("/v1/conversations/{number}/messages?limit=5"))
            .await;
        if let Some(reply) = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["direction"] == "outbound" && check(m))
        {
            return reply.clone();
        }
        assert!(Instant::now() < deadline, "the bot did not answer: {page}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn the_order_bot_answers_with_buttons_and_reacts_to_the_press() {
    let app = TestApp::spawn().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bot_url = format!("http://{}/webhook", listener.local_addr().unwrap());
    let endpoint = app.create_webhook(&bot_url, Some(&["message"])).await;
    let config = bot::BotConfig {
        botlinkd: app.base.clone(),
        app_key: app.keys.app_key.clone(),
        auth_key: app.keys.auth_key.clone(),
        webhook_secret: endpoint["secret"].as_str().unwrap().to_string(),
    };
    tokio::spawn(async move { axum::serve(listener, bot::router(config)).await });

    let customer = "447123456789";
    app.inbound_text(customer, "Hello, where is my order?").await;
    let buttons = newest_reply(&app, customer, |m| m["type"] == "buttons").await;
    assert!(buttons["body"].as_str().unwrap().contains("#1001"));
    assert_eq!(buttons["buttons"][0]["id"], "track");

    let (status, _) = app
        .post(
            "/v1/sandbox/inbound",
            serde_json::json!({"from": customer, "type": "button", "body": "Track parcel", "button_id": "track"}),
        )
        .await;
    assert_eq!(status, 201);
    let link = newest_reply(&app, customer, |m| m["type"] == "text").await;
    assert!(
        link["body"]
            .as_str()
            .unwrap()
            .contains("https://track.example.com/1001")
    );

    // A forged delivery (wrong signature) is refused by the bot.
    let forged = app
        .client
        .post(&bot_url)
        .header("webhook-id", "evt_forged")
        .header("webhook-timestamp", "1700000000")
        .header("webhook-signature", "v1,AAAA")
        .body(r#"{"event":"message"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
}

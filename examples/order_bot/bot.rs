//! An order-status bot for a shop, written the way a botlinkd user would write one: a webhook
//! handler that verifies the Standard Webhooks signature, answers "where is my order?" with
//! reply buttons, and reacts to the button the customer presses.
//!
//! The handler answers botlinkd at once and does the work in the background, so it always
//! stays inside botlinkd's 3-second limit; replies carry the event's `webhook-id` as their
//! `Idempotency-Key`, so a webhook delivered twice (at least once!) is answered once.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use standardwebhooks::Webhook;

/// What the bot needs to know.
#[derive(Clone)]
pub struct BotConfig {
    /// The botlinkd server, e.g. `http://127.0.0.1:8080`.
    pub botlinkd: String,
    /// The instance's App Key.
    pub app_key: String,
    /// The instance's Auth Key.
    pub auth_key: String,
    /// The endpoint's signing secret (`whsec_…`).
    pub webhook_secret: String,
}

struct Bot {
    config: BotConfig,
    verifier: Webhook,
    http: reqwest::Client,
}

/// The bot's HTTP routes: `POST /webhook`.
pub fn router(config: BotConfig) -> Router {
    let verifier = Webhook::new(&config.webhook_secret).expect("a whsec_ signing secret");
    let bot = Arc::new(Bot {
        config,
        verifier,
        http: reqwest::Client::new(),
    });
    Router::new().route("/webhook", post(webhook)).with_state(bot)
}

async fn webhook(State(bot): State<Arc<Bot>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if bot.verifier.verify(&body, &headers).is_err() {
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let webhook_id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    tokio::spawn(async move {
        if let Some(reply) = reply_to(&event)
            && let Err(error) = bot.send(reply, &webhook_id).await
        {
            eprintln!("could not reply: {error}");
        }
    });
    StatusCode::OK
}

/// What to answer a `message` event with, if anything.
pub fn reply_to(event: &Value) -> Option<Value> {
    if event["event"] != "message" {
        return None;
    }
    let data = &event["data"];
    let customer = data["from"].as_str()?;
    match data["type"].as_str()? {
        "text" if data["body"].as_str()?.to_lowercase().contains("order") => Some(json!({
            "to": customer,
            "type": "buttons",
            "body": "Your order #1001 left our warehouse this morning. What would you like to do?",
            "buttons": [{"id": "track", "title": "Track parcel"}, {"id": "agent", "title": "Talk to us"}],
        })),
        "button" => {
            let text = match data["button"]["id"].as_str()? {
                "track" => "Here is your tracking link: https://track.example.com/1001",
                "agent" => "Thanks! Someone from the shop will answer you here shortly.",
                _ => return None,
            };
            Some(json!({"to": customer, "type": "text", "body": text}))
        }
        _ => None,
    }
}

impl Bot {
    async fn send(&self, message: Value, idempotency_key: &str) -> Result<(), reqwest::Error> {
        self.http
            .post(format!("{}/v1/messages", self.config.botlinkd.trim_end_matches('/')))
            .basic_auth(&self.config.app_key, Some(&self.config.auth_key))
            .header("Idempotency-Key", idempotency_key)
            .json(&message)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
}

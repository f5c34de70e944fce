//! `botlinkd listen` and `botlinkd events tail`: follow an instance's live stream
//! (`/v1/stream`) from any machine that can reach the server, so a developer needs no public
//! webhook URL.
//!
//! `listen` forwards each event to a local URL exactly as a webhook delivery would look (the
//! same body bytes, `webhook-id`, `webhook-timestamp` and a `webhook-signature` made with the
//! listener's own `whsec_` secret) and prints one line per event. `tail` prints the events as
//! JSON lines. Both resume from the last cursor after a reconnect, so nothing is missed.
//!
//! [`StreamClient::follow`] reconnects with back-off from 0.5 s to 15 s and resumes from the
//! last cursor; a 401 ends it. [`SseParser`] is a small incremental parser. [`Forwarder`]
//! posts an event's exact payload to the `--forward-to` URL (3 s limit, no redirects, no
//! retries). The listener signs with its own secret because it is a stream client, not an
//! endpoint, and has no endpoint secret to use: one given on the command line, or generated and
//! printed at start. It forwards each event once; durable, retried delivery is what endpoints
//! are for. These are clients of `/v1/stream` over HTTP like any other.

use std::future::Future;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::events::EventKind;
use crate::webhooks::{EventFilter, SigningSecret};

/// One event from the stream.
#[derive(Debug, Deserialize)]
pub struct StreamEvent {
    /// `evt_…`
    pub id: String,
    /// The feed position, to resume after.
    pub cursor: String,
    /// The event kind (`message`, `ack.read`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// When it happened.
    pub created_at: String,
    /// The exact webhook body.
    pub payload: Box<RawValue>,
}

/// Why following the stream stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The keys were refused.
    #[error("the server refused the App Key / Auth Key (HTTP 401)")]
    Unauthorized,
    /// The server URL is not usable.
    #[error("invalid server URL: {0}")]
    BadServer(String),
}

/// A client of one instance's stream.
pub struct StreamClient {
    http: reqwest::Client,
    stream_url: reqwest::Url,
    app_key: String,
    auth_key: String,
}

impl StreamClient {
    /// A client for `server` (e.g. `http://127.0.0.1:8080`) with an instance's keys.
    pub fn new(server: &str, app_key: String, auth_key: String) -> Result<Self, FollowError> {
        let base = reqwest::Url::parse(server).map_err(|e| FollowError::BadServer(e.to_string()))?;
        let stream_url = base
            .join("/v1/stream")
            .map_err(|e| FollowError::BadServer(e.to_string()))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // The server sends a keep-alive every 15 s; silence for longer means a dead link.
            .read_timeout(Duration::from_secs(45))
            .build()
            .map_err(|e| FollowError::BadServer(e.to_string()))?;
        Ok(Self {
            http,
            stream_url,
            app_key,
            auth_key,
        })
    }

    /// Follows the stream from `after` (or from now) until `shutdown`, calling `on_event` for
    /// each event in order. Reconnects with back-off and resumes from the last cursor.
    pub async fn follow<F, Fut>(
        &self,
        mut after: Option<String>,
        shutdown: CancellationToken,
        mut on_event: F,
    ) -> Result<(), FollowError>
    where
        F: FnMut(StreamEvent) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut backoff = Duration::from_millis(500);
        while !shutdown.is_cancelled() {
            let mut url = self.stream_url.clone();
            if let Some(cursor) = &after {
                url.query_pairs_mut().append_pair("after", cursor);
            }
            let request = self
                .http
                .get(url)
                .basic_auth(&self.app_key, Some(&self.auth_key))
                .send();
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                response = request => response,
            };
            match outcome {
                Ok(response) if response.status() == reqwest::StatusCode::UNAUTHORIZED => {
                    return Err(FollowError::Unauthorized);
                }
                Ok(mut response) if response.status().is_success() => {
                    eprintln!("connected to {}", self.stream_url.origin().ascii_serialization());
                    backoff = Duration::from_millis(500);
                    let mut parser = SseParser::default();
                    loop {
                        let chunk = tokio::select! {
                            _ = shutdown.cancelled() => return Ok(()),
                            chunk = response.chunk() => chunk,
                        };
                        let Ok(Some(chunk)) = chunk else { break };
                        for item in parser.push(&chunk) {
                            match item.kind.as_str() {
                                "ready" if after.is_none() => {
                                    after = serde_json::from_str::<serde_json::Value>(&item.data)
                                        .ok()
                                        .and_then(|v| v["cursor"].as_str().map(str::to_string));
                                }
                                "event" => match serde_json::from_str::<StreamEvent>(&item.data) {
                                    Ok(event) => {
                                        after = Some(event.cursor.clone());
                                        on_event(event).await;
                                    }
                                    Err(error) => eprintln!("skipping an unreadable stream item: {error}"),
                                },
                                _ => {}
                            }
                        }
                    }
                    eprintln!("stream closed; reconnecting");
                }
                Ok(response) => eprintln!("the server answered HTTP {}; retrying", response.status()),
                Err(error) => eprintln!("cannot reach the server ({}); retrying", error.without_url()),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(15));
        }
        Ok(())
    }
}

/// One Server-Sent Events item.
#[derive(Debug, PartialEq, Eq)]
pub struct SseItem {
    /// The `event:` field (`message` when absent).
    pub kind: String,
    /// The `id:` field.
    pub id: Option<String>,
    /// The `data:` lines, joined by newlines.
    pub data: String,
}

/// An incremental Server-Sent Events parser.
#[derive(Default)]
pub struct SseParser {
    buffer: Vec<u8>,
}

impl SseParser {
    /// Feeds bytes; returns the items they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseItem> {
        self.buffer.extend_from_slice(bytes);
        let mut items = Vec::new();
        while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
            let block = String::from_utf8_lossy(&block);
            let mut item = SseItem {
                kind: "message".into(),
                id: None,
                data: String::new(),
            };
            let mut has_data = false;
            for line in block.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => item.kind = value.to_string(),
                    "id" => item.id = Some(value.to_string()),
                    "data" => {
                        if has_data {
                            item.data.push('\n');
                        }
                        item.data.push_str(value);
                        has_data = true;
                    }
                    _ => {}
                }
            }
            if has_data {
                items.push(item);
            }
        }
        items
    }
}

/// Forwards events to a local URL as signed webhooks.
pub struct Forwarder {
    http: reqwest::Client,
    target: reqwest::Url,
    secret: SigningSecret,
    filter: EventFilter,
}

/// What forwarding one event did.
#[derive(Debug)]
pub struct Forwarded {
    /// The local server's status, or why there was none.
    pub outcome: Result<u16, String>,
    /// How long it took.
    pub latency: Duration,
}

impl Forwarder {
    /// A forwarder to `target`, signing with `secret`, passing only events in `filter`.
    pub fn new(target: reqwest::Url, secret: SigningSecret, filter: EventFilter) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the HTTP client builds with static settings");
        Self {
            http,
            target,
            secret,
            filter,
        }
    }

    /// Whether the filter lets `event` through.
    pub fn wants(&self, event: &StreamEvent) -> bool {
        EventKind::parse(&event.kind).is_some_and(|kind| self.filter.accepts(kind))
    }

    /// Posts the event's exact body, signed, to the target.
    pub async fn forward(&self, event: &StreamEvent) -> Forwarded {
        let body = event.payload.get().as_bytes().to_vec();
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let signature = self.secret.sign(&event.id, timestamp, &body);
        let started = Instant::now();
        let outcome = self
            .http
            .post(self.target.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &event.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| e.without_url().to_string());
        Forwarded {
            outcome,
            latency: started.elapsed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_items_split_across_chunks() {
        let mut parser = SseParser::default();
        assert!(parser.push(b"event: ready\ndata: {\"cursor\"").is_empty());
        let items = parser.push(b": \"4\"}\n\n: keep-alive\n\nevent: event\nid: 5\ndata: {}\n\n");
        assert_eq!(
            items,
            vec![
                SseItem {
                    kind: "ready".into(),
                    id: None,
                    data: "{\"cursor\": \"4\"}".into()
                },
                SseItem {
                    kind: "event".into(),
                    id: Some("5".into()),
                    data: "{}".into()
                },
            ]
        );
    }
}

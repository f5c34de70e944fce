//! `GET /v1/stream`: the instance's events live, as Server-Sent Events, for the portal and
//! any client that cannot expose a webhook URL.
//!
//! Authentication is the usual HTTP Basic header (clients read the stream with `fetch`, not
//! `EventSource`, so no key ever goes into the URL). The stream starts after `?after=CURSOR`
//! or the `Last-Event-ID` header, replays what was missed from the store, then follows live.
//! Each event carries its cursor as the SSE `id`, so a reconnect resumes exactly. Recorded
//! delivery attempts are sent as `attempt` items as they happen (not replayed). The first
//! item, `ready`, carries the cursor the stream starts from.
//!
//! `?after=` wins over `Last-Event-ID`. Without either, the stream starts at the feed's
//! `watch` value, the newest position published, which `Server::start` seeds with the newest
//! stored `seq`, so a cursor-less stream sends only new events, also right after a restart.
//!
//! A `Watcher` per connection subscribes to the live channel first, then reads the instance's
//! events from the store after its cursor, 200 at a time. From then on an `Events` notice for
//! its instance with a newer position only makes it read the store again from its cursor (the
//! notice carries no event); `Attempt` notices of its instance are passed on. A watcher that
//! lags behind the live channel is told so by tokio and reads the store again, so it misses no
//! event; attempt notices it missed are only in the attempts API. A failed store read sends an
//! `error` item. Keep-alive comments go out every 15 s, and the stream ends when
//! `App::stopping` is cancelled (shutdown), so the client reconnects from its cursor.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use super::error::ApiError;
use super::events::EventView;
use super::extract::{Authed, Query};
use super::schemas::{ErrorBody, SseItem};
use crate::app::App;
use crate::live::LiveItem;

/// Events read from the store per step while catching up.
const PAGE: u32 = 200;

/// The routes.
pub fn router() -> Router<App> {
    Router::new().route("/v1/stream", get(stream_events))
}

#[derive(Deserialize)]
struct StreamQuery {
    #[serde(default)]
    after: Option<String>,
}

struct Watcher {
    app: App,
    instance_id: i64,
    cursor: i64,
    live: Receiver<LiveItem>,
    /// Marks this stream as a watcher of its instance for the other processes.
    _watch: crate::watching::Watch,
    /// Events read from the store but not yet sent.
    backlog: std::collections::VecDeque<Event>,
    /// Whether the store may hold events after `cursor` that were not read yet.
    behind: bool,
    /// Whether the opening `ready` item (with the starting cursor) was sent.
    greeted: bool,
}

#[utoipa::path(get, path = "/v1/stream", tag = "events",
    params(("after" = Option<String>, Query, description = "Start after this cursor (else: from now)"), ("Last-Event-ID" = Option<String>, Header, description = "Resume after this cursor")),
    responses((status = 200, description = "Server-Sent Events: `ready` {cursor}, `event` (id = cursor, data = an event as in /v1/events), `attempt` (a delivery attempt)", content_type = "text/event-stream", body = SseItem), (status = 400, description = "Bad cursor", body = ErrorBody), (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn stream_events(
    State(app): State<App>,
    Authed(instance): Authed,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let start = match q.after.or(resume).filter(|s| !s.is_empty()) {
        Some(after) => after
            .parse::<i64>()
            .ok()
            .filter(|a| *a >= 0)
            .ok_or_else(|| ApiError::bad_request("invalid_cursor", "`after` must be a cursor from this feed"))?,
        // No cursor: only what happens from now on.
        None => app.subscribe_feed().borrow().to_owned(),
    };
    // Subscribe before the first read, so nothing committed in between is missed.
    let watcher = Watcher {
        _watch: app.watch(instance.id),
        live: app.live.subscribe(),
        app,
        instance_id: instance.id,
        cursor: start,
        backlog: Default::default(),
        behind: true,
        greeted: false,
    };
    let events = stream::unfold(watcher, |mut w| async move {
        let stopping = w.app.stopping.clone();
        tokio::select! {
            // The server is shutting down: end the stream so the client reconnects elsewhere
            // (or later) from its cursor.
            _ = stopping.cancelled() => None,
            item = w.next_item() => Some((Ok(item), w)),
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

impl Watcher {
    /// The next SSE item: stored events first, then whatever the live channel announces.
    async fn next_item(&mut self) -> Event {
        if !self.greeted {
            self.greeted = true;
            let ready = serde_json::json!({"cursor": self.cursor.to_string()});
            return Event::default().event("ready").data(ready.to_string());
        }
        loop {
            if let Some(event) = self.backlog.pop_front() {
                return event;
            }
            if self.behind {
                match self.read_stored().await {
                    Ok(()) => continue,
                    Err(error) => {
                        // Tell the watcher, then try again shortly rather than spin.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        return error_item(&error);
                    }
                }
            }
            match self.live.recv().await {
                Ok(LiveItem::Events { instance_id, seq }) if instance_id == self.instance_id && seq > self.cursor => {
                    self.behind = true;
                }
                Ok(LiveItem::Attempt(notice)) if notice.instance_id == self.instance_id => {
                    return Event::default()
                        .event("attempt")
                        .json_data(&*notice)
                        .unwrap_or_default();
                }
                Ok(_) => {}
                // Fell behind the channel: the store still has every event.
                Err(RecvError::Lagged(_)) => self.behind = true,
                // The server is shutting down; wait for the connection to be closed.
                Err(RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }

    async fn read_stored(&mut self) -> Result<(), ApiError> {
        let events = self.app.store.list_events(self.instance_id, self.cursor, PAGE).await?;
        self.behind = events.len() == PAGE as usize;
        for record in events {
            self.cursor = record.seq;
            let id = record.seq.to_string();
            let view = EventView::try_from(record)?;
            let event = Event::default()
                .event("event")
                .id(id)
                .json_data(&view)
                .map_err(|e| ApiError::internal(&e))?;
            self.backlog.push_back(event);
        }
        Ok(())
    }
}

fn error_item(error: &ApiError) -> Event {
    let body = serde_json::json!({"code": error.code(), "message": error.message()});
    Event::default().event("error").data(body.to_string())
}

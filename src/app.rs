//! The application's use cases, shared by the API, the sandbox driver and the `meta` channel:
//! receive a customer's message, send a reply, mark a conversation read, change a message's
//! status. Each one builds its event payloads once, writes its change and the events it
//! causes in one store call (one transaction), and only after the commit publishes them.
//!
//! **Publishing.** After a commit, [`App::published`] moves the feed's `watch` value (the
//! long-polls of `GET /v1/events` wait on it; a position lower than one already published
//! does not move it), sends one `LiveItem::Events` per event on the live channel, counts the
//! events by kind, and wakes the delivery engine. A customer's message is the exception to the
//! wake-up: its write may claim up to four of the new event's deliveries for the engine
//! (`Engine::hand_over`), which starts them at once (`Engine::start`), and the claim loop is
//! woken only if there was no hand-over or it filled up, that is when deliveries may be left
//! due. [`App::announce`] does the same, without counting, for an event another process
//! committed, and wakes the engine only if that process's notice says deliveries may be due.
//!
//! [`App`] is one `Arc` of [`Shared`] (store, engine, config, live channel, metrics, the
//! feed's `watch`, the `stopping` token that ends streams and long-polls at shutdown, the
//! rate-limit buckets, and for `meta` the Graph client, the `channel_sends` `Notify` that wakes
//! the send worker and the base URL media links are built on), so the clone each handler takes
//! is one reference count.
//!
//! **Sends.** On the sandbox a send leaves at once (`ack.sent` in the same transaction) and its
//! later statuses are scheduled rows. On `meta` it is stored `accepted` with its queued Graph
//! request in the same transaction (so an accepted send is neither lost nor sent without its
//! message), and the send worker is woken; [`App::mark_read`] queues a read receipt for the
//! customer's newest message there. The id a send answers is botlinkd's own (`wamid.HBgL…`,
//! shaped like Meta's), because the API answers before Meta has seen the message. Meta's
//! wamid, known only once Meta accepts the request, is kept in `messages.external_id` to match
//! Meta's statuses and quotes, and no API answer or event shows it, so the id a client stored
//! from the answer is the one its acks carry. A customer's message, which Meta names first,
//! keeps Meta's wamid, and that is what makes Meta's retries recognisable.
//!
//! **Idempotency-Key.** On `POST /v1/messages` the key is stored with a SHA-256 of the request
//! body and the first answer, in the same transaction as the message ([`App::replay`] reads it
//! back). A retry with the same key and body gets the first answer again (202, with
//! `Idempotent-Replayed: true`); the same key with another body gets 409
//! `idempotency_key_reused`. Keys are per instance and honoured for 24 hours
//! ([`IDEMPOTENCY_WINDOW_MS`]); after that the key counts as new. An expired row is deleted by
//! the send that reuses its key, and housekeeping deletes the others.
//!
//! **Times.** A channel may say when something happened (Meta batches and retries webhooks):
//! the payload then carries that time, so an event says when the thing happened, not when the
//! webhook arrived. The event's id and stored `created_at` (which retention and the dead-list
//! time filters go by) are when botlinkd stored it; the feed is ordered by cursor, not by
//! time. `ack.sent` and the failures the send worker decides carry botlinkd's clock.

use std::sync::Arc;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::channels::meta::graph::Graph;
use crate::channels::meta::outbound::message_request;
use crate::clock::{Clock, Millis};
use crate::config::Config;
use crate::delivery::Engine;
use crate::events::{self, AckError, EventRecord, MessageFacts};
use crate::ids;
use crate::instances::{Channel, Instance};
use crate::live::Live;
use crate::messages::{Direction, InboundMessage, MessageStatus, OutboundMessage};
use crate::metrics::Metrics;
use crate::phone::PhoneNumber;
use crate::store::{
    IdempotencyRecord, NewChannelSend, NewMessage, ScheduledStatus, StatusChange, StatusOutcome, Store, StoreError,
    StoreResult,
};

/// Everything the request handlers and background workers share. Cheap to clone: one
/// reference count (every request's handler takes a clone).
#[derive(Clone)]
pub struct App {
    shared: Arc<Shared>,
}

impl std::ops::Deref for App {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

/// What an [`App`] holds.
pub struct Shared {
    /// The storage.
    pub store: Arc<dyn Store>,
    /// The delivery engine.
    pub engine: Engine,
    /// The settings.
    pub config: Arc<Config>,
    /// Notifications for live watchers (stream, portal).
    pub live: Live,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// The newest event sequence number, for long-polls to wait on.
    feed: Arc<watch::Sender<i64>>,
    /// Cancelled when the server starts shutting down: long-lived requests (streams,
    /// long-polls) end so that the graceful shutdown is not held up by them.
    pub stopping: CancellationToken,
    /// The Graph API client of the `meta` channel.
    pub graph: Graph,
    /// Woken when a request is queued for a channel.
    pub channel_sends: Arc<Notify>,
    /// Woken when a sandbox send schedules statuses (the sandbox driver may need to wake sooner).
    pub sandbox_scheduled: Arc<Notify>,
    /// The address clients reach this server at (media download links).
    base_url: Arc<str>,
    /// Rate limits on authentication failures and API calls.
    pub limits: Arc<crate::api::limits::Limits>,
    /// This process's live watchers per instance.
    watching: Arc<crate::watching::Watching>,
}

/// A sent message, as the API reports it (and as an Idempotency-Key replays it).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Sent {
    /// The new message's id.
    pub message_id: String,
    /// Its status right after sending.
    pub status: MessageStatus,
}

impl App {
    /// Ties a store and a configuration together.
    /// `latest_seq` is the newest event already stored (where "from now on" starts).
    pub fn new(store: Arc<dyn Store>, config: Config, latest_seq: i64) -> Self {
        let live = Live::default();
        let metrics = Metrics::default();
        let engine = Engine::new(store.clone(), live.clone(), metrics.clone(), &config);
        let graph = Graph::new(
            &config.meta_graph_url,
            &config.meta_graph_version,
            config.meta_request_timeout,
        );
        let base_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1:8080".into());
        let shared = Shared {
            graph,
            limits: Arc::new(crate::api::limits::Limits::new(config.api_rate_limit)),
            channel_sends: Arc::new(Notify::new()),
            sandbox_scheduled: Arc::new(Notify::new()),
            base_url: base_url.trim_end_matches('/').into(),
            watching: crate::watching::Watching::new(store.clone()),
            store,
            engine,
            live,
            metrics,
            config: Arc::new(config),
            feed: Arc::new(watch::channel(latest_seq).0),
            stopping: CancellationToken::new(),
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Sets the address clients reach this server at, once it is bound (before the app is
    /// shared).
    pub fn with_base_url(mut self, base_url: &str) -> Self {
        Arc::get_mut(&mut self.shared)
            .expect("the base URL is set before the app is shared")
            .base_url = base_url.trim_end_matches('/').into();
        self
    }

    /// The address clients reach this server at.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The clock.
    pub fn clock(&self) -> &Clock {
        &self.config.clock
    }

    /// Now, in milliseconds.
    pub fn now(&self) -> Millis {
        self.config.clock.now_ms()
    }

    /// A receiver that changes whenever new events are committed.
    pub fn subscribe_feed(&self) -> watch::Receiver<i64> {
        self.feed.subscribe()
    }

    /// Marks a watcher of the instance's live news (a long-poll, a stream) for as long as the
    /// answer is held: other processes sharing the database announce that instance's news
    /// only while somebody here watches it.
    pub fn watch(&self, instance_id: i64) -> crate::watching::Watch {
        self.watching.watch(instance_id)
    }

    /// Announces committed events to the engine and the feed.
    pub fn published(&self, records: &[EventRecord]) {
        self.publish(records, true);
    }

    /// Announces committed events to the feed, and to the engine if their write may have
    /// left deliveries due for the claim loop (it had no hand-over, or one that filled up).
    fn publish(&self, records: &[EventRecord], wake_engine: bool) {
        if let Some(max) = records.iter().map(|r| r.seq).max() {
            self.feed.send_if_modified(|latest| {
                let newer = max > *latest;
                if newer {
                    *latest = max;
                }
                newer
            });
            if wake_engine {
                self.engine.wake();
            }
        }
        for record in records {
            self.metrics.event(record.kind.as_str());
            self.live.events(record.instance_id, record.seq);
        }
    }

    /// Announces an event committed elsewhere (another process on the same database); `due`
    /// says its write may have left deliveries for this engine's claim loop.
    pub fn announce(&self, instance_id: i64, seq: i64, due: bool) {
        self.feed.send_if_modified(|latest| {
            let newer = seq > *latest;
            if newer {
                *latest = seq;
            }
            newer
        });
        if due {
            self.engine.wake();
        }
        self.live.events(instance_id, seq);
    }

    /// A customer's message arrives (written at `at`, or now): store it and publish its
    /// `message` event.
    pub async fn receive(
        &self,
        instance: &Instance,
        message: InboundMessage,
        at: Option<Millis>,
    ) -> StoreResult<(String, EventRecord)> {
        let now = self.now();
        let message_id = ids::message_id(now);
        match self
            .record_received(instance, message_id.clone(), at.unwrap_or(now), message)
            .await?
        {
            Some(record) => Ok((message_id, record)),
            None => Err(StoreError::Conflict(format!("message id `{message_id}` is taken"))),
        }
    }

    /// A customer's message arrives through a channel that gave it its id (`wamid`) and
    /// time. `None` when that message was stored before (the channel retried it).
    pub async fn receive_from_channel(
        &self,
        instance: &Instance,
        message_id: String,
        sent_at: Option<Millis>,
        message: InboundMessage,
    ) -> StoreResult<Option<EventRecord>> {
        let at = sent_at.unwrap_or_else(|| self.now());
        self.record_received(instance, message_id, at, message).await
    }

    async fn record_received(
        &self,
        instance: &Instance,
        message_id: String,
        now: Millis,
        message: InboundMessage,
    ) -> StoreResult<Option<EventRecord>> {
        let business = instance.phone_number.as_str();
        let mut event = events::message_event(
            MessageFacts {
                instance_id: instance.id,
                from: message.from.as_str(),
                to: business,
                kind: &message.kind,
                body: &message.body,
                message_id: &message_id,
                detail: &message.detail,
            },
            now,
        );
        stored_now(&mut event, self.now());
        let customer_name = message.detail.get("name").and_then(|n| n.as_str()).map(str::to_string);
        let record = NewMessage {
            message_id: message_id.clone(),
            direction: Direction::Inbound,
            customer: message.from.to_string(),
            customer_name,
            business: business.to_string(),
            kind: message.kind,
            body: message.body,
            detail: message.detail,
            status: MessageStatus::Received,
            created_at: now,
        };
        let hand_over = self.engine.hand_over();
        let Some((stored, handed)) = self.store.record_inbound(instance.id, record, event, hand_over).await? else {
            return Ok(None);
        };
        // The new event's deliveries leave at once, claimed by the write that stored them.
        let all_handed = hand_over.is_some_and(|h| handed.len() < h.limit);
        self.engine.start(handed);
        self.publish(std::slice::from_ref(&stored), !all_handed);
        Ok(Some(stored))
    }

    /// The business sends a message. On the sandbox it leaves at once (`ack.sent` in the
    /// same transaction) and its later statuses are scheduled. On Meta it is `accepted` and
    /// queued for the send worker in the same transaction; `ack.sent` follows when Meta
    /// takes it.
    pub async fn send(
        &self,
        instance: &Instance,
        message: OutboundMessage,
        idempotency: Option<IdempotencyKey>,
    ) -> StoreResult<Sent> {
        let now = self.now();
        let message_id = ids::message_id(now);
        let customer = message.to.to_string();
        let (status, schedule, channel_send) = match instance.channel {
            Channel::Sandbox => {
                let schedule = sandbox_schedule(&self.config, instance.id, &message_id, &customer, now);
                (MessageStatus::Sent, schedule, None)
            }
            Channel::Meta => {
                let send = NewChannelSend {
                    instance_id: instance.id,
                    message_id: Some(message_id.clone()),
                    customer: customer.clone(),
                    request: message_request(&message).to_string(),
                    created_at: now,
                };
                (MessageStatus::Accepted, Vec::new(), Some(send))
            }
        };
        let ack = events::ack_event(instance.id, &message_id, &customer, status, None, now);
        let queued = channel_send.is_some();
        let scheduled = !schedule.is_empty();
        let record = NewMessage {
            message_id: message_id.clone(),
            direction: Direction::Outbound,
            customer,
            customer_name: None,
            business: instance.phone_number.to_string(),
            kind: message.kind,
            body: message.body,
            detail: message.detail,
            status,
            created_at: now,
        };
        let sent = Sent { message_id, status };
        let idempotency = idempotency.map(|key| IdempotencyRecord {
            key: key.key,
            request_hash: key.request_hash,
            response: serde_json::to_string(&sent).expect("Sent serialises"),
            expired_before: now - IDEMPOTENCY_WINDOW_MS,
        });
        let stored = self
            .store
            .record_outbound(
                instance.id,
                record,
                ack.into_iter().collect(),
                schedule,
                channel_send,
                idempotency,
            )
            .await?;
        self.published(&stored);
        if queued {
            self.channel_sends.notify_one();
        }
        if scheduled {
            self.sandbox_scheduled.notify_one();
        }
        Ok(sent)
    }

    /// Marks a conversation read; on Meta, the customer's newest message is marked read
    /// there too (blue ticks on their phone). `false` if there is no such conversation.
    pub async fn mark_read(&self, instance: &Instance, customer: &PhoneNumber) -> StoreResult<bool> {
        if !self.store.mark_read(instance.id, customer.as_str()).await? {
            return Ok(false);
        }
        if instance.channel == Channel::Meta {
            let recent = self
                .store
                .list_messages(instance.id, customer.as_str(), None, 50)
                .await?;
            if let Some(newest) = recent.iter().find(|m| m.direction == Direction::Inbound) {
                let request = crate::channels::meta::outbound::read_request(&newest.message_id);
                self.store
                    .enqueue_channel_send(NewChannelSend {
                        instance_id: instance.id,
                        message_id: None,
                        customer: customer.to_string(),
                        request: request.to_string(),
                        created_at: self.now(),
                    })
                    .await?;
                self.channel_sends.notify_one();
            }
        }
        Ok(true)
    }

    /// What an earlier send with this Idempotency-Key answered, if any.
    pub async fn replay(&self, instance_id: i64, key: &IdempotencyKey) -> StoreResult<Replay> {
        let since = self.now() - IDEMPOTENCY_WINDOW_MS;
        let Some((hash, response)) = self.store.idempotent_response(instance_id, &key.key, since).await? else {
            return Ok(Replay::New);
        };
        if hash != key.request_hash {
            return Ok(Replay::Mismatch);
        }
        Ok(match serde_json::from_str(&response) {
            Ok(sent) => Replay::Same(sent),
            Err(_) => Replay::New,
        })
    }

    /// Moves an outgoing message to `status` and publishes its ack, if that is a move forward.
    pub async fn change_status(
        &self,
        instance_id: i64,
        message_id: &str,
        customer: &str,
        status: MessageStatus,
        error: Option<AckError>,
    ) -> StoreResult<StatusOutcome> {
        self.change_status_at(instance_id, message_id, customer, status, error, self.now())
            .await
    }

    /// Like [`App::change_status`], for a change that happened at `now` (as a channel says).
    pub async fn change_status_at(
        &self,
        instance_id: i64,
        message_id: &str,
        customer: &str,
        status: MessageStatus,
        error: Option<AckError>,
        now: Millis,
    ) -> StoreResult<StatusOutcome> {
        let Some(mut event) = events::ack_event(instance_id, message_id, customer, status, error.as_ref(), now) else {
            return Ok(StatusOutcome::NotFound);
        };
        stored_now(&mut event, self.now());
        let outcome = self
            .store
            .apply_status(StatusChange {
                instance_id,
                message_id: message_id.to_string(),
                status,
                error,
                event,
            })
            .await?;
        if let StatusOutcome::Applied(record) = &outcome {
            self.published(std::slice::from_ref(record));
        }
        Ok(outcome)
    }
}

/// An event's payload carries when the thing happened (a channel may say it happened long
/// ago: Meta retries webhooks for days); its id and storage time are when botlinkd stored
/// it, which is what the feed's order and retention go by.
fn stored_now(event: &mut events::EventDraft, now: Millis) {
    if event.created_at != now {
        event.created_at = now;
        event.id = ids::event_id(now);
    }
}

/// What an Idempotency-Key says about a send.
#[derive(Clone, Debug)]
pub enum Replay {
    /// The key is new (or forgotten): send.
    New,
    /// The same request was sent before: answer as then.
    Same(Sent),
    /// The key was used with another request body.
    Mismatch,
}

/// How long an Idempotency-Key is remembered: a retry within a day gets the first answer.
pub const IDEMPOTENCY_WINDOW_MS: Millis = 24 * 60 * 60 * 1000;

/// An `Idempotency-Key` with the fingerprint of the request it came with.
#[derive(Clone, Debug)]
pub struct IdempotencyKey {
    /// The client's key.
    pub key: String,
    /// SHA-256 of the request body, hex.
    pub request_hash: String,
}

/// The statuses a message sent on the sandbox at `now` takes on its own, after the configured
/// delays (`sandbox_delivered_after`, `sandbox_read_after`; none for a delay that is off).
/// They are stored rows, applied by the sandbox driver (`crate::sandbox`) when due.
fn sandbox_schedule(
    config: &Config,
    instance_id: i64,
    message_id: &str,
    customer: &str,
    now: Millis,
) -> Vec<ScheduledStatus> {
    [
        (MessageStatus::Delivered, config.sandbox_delivered_after),
        (MessageStatus::Read, config.sandbox_read_after),
    ]
    .into_iter()
    .filter_map(|(status, after)| {
        after.map(|after| ScheduledStatus {
            instance_id,
            message_id: message_id.to_string(),
            customer: customer.to_string(),
            status,
            due_at: now + after.as_millis() as Millis,
        })
    })
    .collect()
}

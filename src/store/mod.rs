//! Storage: the [`Store`] trait the rest of the program talks to, the records it returns,
//! the delivery [`rules`] both backends keep, and the backends: [`sqlite`] (one process, the
//! default) and [`postgres`] (any number of processes on one database).
//!
//! The store owns three invariants that everything else relies on:
//! 1. **Outbox.** An event and its deliveries are written in the same transaction as the
//!    change that caused it (a message, a status), before the API answers.
//! 2. **One head per conversation.** For each (endpoint, conversation) at most one delivery is
//!    `pending`; the ones behind it are `waiting` and become `pending` only when the head is
//!    delivered or dead. This is what keeps a conversation's events in order.
//! 3. **Leases.** A claimed delivery is reserved until its lease ends; a process that dies
//!    simply lets the lease run out and the delivery is claimed again (at least once).
//!
//! The store never imports HTTP types (no axum, no reqwest); it knows the domain types and
//! SQL, nothing else. No module outside it names `rusqlite` or `sqlx`: the rest of the
//! program sees only `dyn Store`.
//!
//! [`open`] picks the backend by the URL's scheme ([`is_postgres`]: `postgres://` or
//! `postgresql://` gives PostgreSQL, anything else SQLite). [`lock_for_serving`] gives a real
//! [`ServingLock`] for SQLite and an empty one for PostgreSQL. A [`ClusterNotice`] is an event
//! or an attempt another process committed; `Store::take_notifications` hands their receiver
//! to the server once (`None` for SQLite). [`QueueStats`] feeds `/metrics`; [`DeadFilter`] and
//! [`DeadDelivery`] serve the dead-delivery listing and its bulk resend (the oldest first).
//! [`redact_url`] replaces a database URL's password by `***` for messages and logs.
//!
//! **Nothing answers before its write is committed.** With SQLite, a write returns only after
//! its group's `COMMIT`; should the commit fail, or SQLite abandon the transaction midway,
//! every write of the group is told that nothing was written (`CommitFailed`, or `Closed` for
//! writes that never ran). With PostgreSQL, each store call commits its own transaction before
//! it returns and an error rolls it back. A connection that breaks during `COMMIT` itself
//! leaves the outcome unknown to the process, which answers 503; the client's retry (with an
//! Idempotency-Key for sends) settles it. [`StoreError::is_unavailable`] names the errors that
//! mean "out of reach for now" (see `api::error` for why they answer 503, not 500).
//!
//! **Leases left by a dead process.** With SQLite the serving lock guarantees that only one
//! serving process uses the file, so `Server::start` releases every lease it finds
//! (`start_serving`) and those deliveries are due at once. With PostgreSQL another process
//! may hold live leases, so nothing is released at start: every lease names its process, and
//! the serving processes release the leases of one whose liveness lock has been free for a
//! few seconds (`postgres::liveness`); failing that (a process that never registered), the
//! deliveries fall due when their leases end (`next_at` was set to the lease's end by the
//! claim) and any process claims them. Either way the receiver may see the event twice, which
//! at-least-once allows; the stable `webhook-id` lets it de-duplicate.

pub mod attempt_stats;
pub mod health;
pub mod history;
pub mod postgres;
pub mod rules;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::clock::Millis;
use crate::events::{AckError, EventDraft, EventRecord};
use crate::instances::{AuthKeyHash, ChannelChange, Credentials, Instance, NewInstance};
use crate::messages::{Direction, MessageStatus, StoredMessage};
use crate::templates::Template;
use crate::webhooks::{Endpoint, EndpointChange, NewEndpoint, SigningSecret};

/// A storage failure. The source is kept for the logs; the API answers a generic 500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database said no.
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL said no.
    #[error("database error")]
    Postgres(#[from] sqlx::Error),
    /// The database URL names nothing we can open.
    #[error("unsupported database URL `{0}` (use sqlite://PATH, a file path, or postgres://…)")]
    UnsupportedUrl(String),
    /// A stored value could not be read back.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// A uniqueness rule was broken (for example an Idempotency-Key reused with another body).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The group commit this write was part of failed; nothing of it was written.
    #[error("the database could not commit")]
    CommitFailed,
    /// Another serving process holds the database.
    #[error("another `botlinkd serve` is already using {0}; SQLite is served by one process at a time")]
    InUse(String),
    /// The storage thread is gone (the server is shutting down).
    #[error("the storage worker has stopped")]
    Closed,
}

/// Something another process on the same database committed.
#[derive(Clone, Debug)]
pub enum ClusterNotice {
    /// An instance has events up to this feed position.
    Event {
        /// The instance.
        instance_id: i64,
        /// The newest feed position.
        seq: i64,
        /// Whether the write may have left deliveries due for a claim loop.
        due: bool,
    },
    /// A delivery attempt was recorded.
    Attempt(AttemptNotice),
}

/// A recorded attempt, as watchers see it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttemptNotice {
    /// The instance.
    #[serde(skip)]
    pub instance_id: i64,
    /// `evt_…`
    pub event_id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// The attempt number.
    pub attempt: u32,
    /// When it started, RFC 3339.
    pub started_at: String,
    /// How long it took.
    pub duration_ms: i64,
    /// The receiver's status code, `null` when no answer came.
    pub status_code: Option<u16>,
    /// The first bytes of the answer.
    pub response: String,
    /// Why it failed.
    pub error: Option<String>,
    /// `success` or `failure`.
    pub outcome: String,
    /// On failure: `retrying` or `dead`.
    pub next: Option<String>,
}

impl From<&AttemptResult> for AttemptNotice {
    fn from(r: &AttemptResult) -> Self {
        Self {
            instance_id: r.instance_id,
            event_id: r.event_id.clone(),
            endpoint_id: r.endpoint_id.clone(),
            attempt: r.attempt,
            started_at: rfc3339(r.started_at),
            duration_ms: r.duration_ms,
            status_code: r.status_code,
            response: r.response.clone(),
            error: r.error.clone(),
            outcome: if r.success { "success" } else { "failure" }.to_string(),
            next: match (r.success, r.retry_at) {
                (true, _) => None,
                (false, Some(_)) => Some("retrying".to_string()),
                (false, None) => Some("dead".to_string()),
            },
        }
    }
}

impl StoreError {
    /// Whether the database is out of reach for now (worth retrying), not a bug.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Closed
                | StoreError::CommitFailed
                | StoreError::Postgres(sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_))
        ) || self.is_full()
            || self.is_connection_lost()
    }

    /// Whether PostgreSQL dropped the connection (a restart, an administrator's terminate,
    /// a network cut: SQLSTATE classes 08 and 57P): worth retrying (an Idempotency-Key makes
    /// a retried send safe if the lost statement was a commit that did happen).
    pub fn is_connection_lost(&self) -> bool {
        match self {
            StoreError::Postgres(sqlx::Error::Database(e)) => e
                .code()
                .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
            _ => false,
        }
    }

    /// Whether the disk (or the database's size limit) is full: nothing can be written until
    /// space is made, but nothing written before is harmed.
    pub fn is_full(&self) -> bool {
        matches!(
            self,
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DiskFull
        )
    }
}

/// Unfinished deliveries and paused endpoints, for `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct QueueStats {
    /// Deliveries waiting behind an earlier event of their conversation.
    pub waiting: i64,
    /// Deliveries at the head of their conversation (due, retrying or in flight).
    pub pending: i64,
    /// When the oldest waiting delivery's event happened.
    pub oldest_waiting: Option<Millis>,
    /// When the oldest pending delivery's event happened.
    pub oldest_pending: Option<Millis>,
    /// Disabled (paused) endpoints.
    pub disabled_endpoints: i64,
    /// Leased work of processes that were gone, made due again by this process since it
    /// started (PostgreSQL; always zero on SQLite, whose one process has no one to take over).
    pub taken_over: TakenOver,
}

/// Counts of leased work taken over from processes that were gone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TakenOver {
    /// Deliveries (webhooks and message-bus destinations).
    pub deliveries: u64,
    /// Meta sends.
    pub sends: u64,
    /// Media downloads.
    pub downloads: u64,
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

/// A message to store with the event it causes.
#[derive(Clone, Debug)]
pub struct NewMessage {
    /// `wamid.…`
    pub message_id: String,
    /// Inbound or outbound.
    pub direction: Direction,
    /// The customer's number (the conversation).
    pub customer: String,
    /// The customer's profile name, if known.
    pub customer_name: Option<String>,
    /// The business number.
    pub business: String,
    /// The type.
    pub kind: String,
    /// Text, caption, button title or template name.
    pub body: String,
    /// Type-specific detail.
    pub detail: Map<String, Value>,
    /// Initial status.
    pub status: MessageStatus,
    /// When.
    pub created_at: Millis,
}

/// A status an outgoing sandbox message will take on its own at `due_at`.
#[derive(Clone, Debug)]
pub struct ScheduledStatus {
    /// The instance.
    pub instance_id: i64,
    /// The message.
    pub message_id: String,
    /// Its customer.
    pub customer: String,
    /// The status to take.
    pub status: MessageStatus,
    /// When.
    pub due_at: Millis,
}

/// A request to queue for a channel (the Meta Graph API): a message to send, or a read
/// receipt for a customer's message.
#[derive(Clone, Debug)]
pub struct NewChannelSend {
    /// The instance.
    pub instance_id: i64,
    /// The outgoing message it sends (`None` for a read receipt).
    pub message_id: Option<String>,
    /// The customer: requests of one conversation go out in order.
    pub customer: String,
    /// The request body, JSON.
    pub request: String,
    /// When it was queued.
    pub created_at: Millis,
}

/// A queued channel request, claimed by this process until its lease ends.
#[derive(Clone, Debug)]
pub struct ChannelSend {
    /// The queue row.
    pub id: i64,
    /// The instance.
    pub instance_id: i64,
    /// The outgoing message it sends (`None` for a read receipt).
    pub message_id: Option<String>,
    /// The customer.
    pub customer: String,
    /// The request body, JSON.
    pub request: String,
    /// Attempts made before this one.
    pub attempts: u32,
    /// When it was queued.
    pub created_at: Millis,
    /// The lease this claim holds: a retry or an abandonment only counts while it is still
    /// the request's (an accepted send always counts: the message went).
    pub lease_until: Millis,
}

/// How a channel request ended.
#[derive(Clone, Debug)]
pub enum SendOutcome {
    /// The channel took it; a sent message gets the channel's own id.
    Accepted {
        /// The channel's id of the message (Meta's `wamid`).
        external_id: Option<String>,
    },
    /// Try again at this time.
    Retry {
        /// When.
        at: Millis,
    },
    /// Give up (the message's failure is published separately).
    Abandoned,
}

/// A recorded answer to an `Idempotency-Key`.
#[derive(Clone, Debug)]
pub struct IdempotencyRecord {
    /// The key the client sent.
    pub key: String,
    /// A fingerprint of the request body, to refuse the same key with another body.
    pub request_hash: String,
    /// The answer to repeat.
    pub response: String,
    /// Records older than this are forgotten (the key may be used afresh).
    pub expired_before: Millis,
}

/// A status change of an outgoing message, with the ack event it publishes.
#[derive(Clone, Debug)]
pub struct StatusChange {
    /// The instance.
    pub instance_id: i64,
    /// The message.
    pub message_id: String,
    /// The new status.
    pub status: MessageStatus,
    /// The failure reason, for `failed`.
    pub error: Option<AckError>,
    /// The `ack` event to publish if the status really moves forward.
    pub event: EventDraft,
}

/// The outcome of a status change.
#[derive(Clone, Debug)]
pub enum StatusOutcome {
    /// The status moved and this event was published.
    Applied(EventRecord),
    /// The message is already at or past that status; nothing was published.
    Stale(MessageStatus),
    /// No such outgoing message.
    NotFound,
}

/// A customer's media to download and keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaFetch {
    /// The instance.
    pub instance_id: i64,
    /// The message it belongs to.
    pub message_id: String,
    /// Meta's media id.
    pub media_id: String,
    /// The message type (`image`, `audio`, `video`, `document`, `sticker`): its size cap.
    pub kind: String,
    /// The checksum Meta sent with the message, if any.
    pub sha256: Option<String>,
    /// Failed downloads so far.
    pub attempts: u32,
    /// When the message arrived.
    pub created_at: Millis,
}

/// What came of a media download.
#[derive(Clone, Debug)]
pub enum MediaFetchOutcome {
    /// Downloaded and checked: keep it.
    Kept(KeptMedia),
    /// Try again at this time.
    Retry {
        /// When.
        at: Millis,
    },
    /// Stop trying (too large, checksum wrong every time, or Meta has forgotten it).
    GiveUp,
}

/// botlinkd's copy of a customer's media.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptMedia {
    /// Its MIME type.
    pub content_type: String,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// The file.
    pub bytes: Vec<u8>,
    /// When it was kept.
    pub created_at: Millis,
}

/// A conversation in the list.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationSummary {
    /// The customer's number.
    pub number: String,
    /// The customer's profile name, if known.
    pub name: Option<String>,
    /// The newest message.
    pub last_message: StoredMessage,
    /// How many messages the conversation holds.
    pub message_count: i64,
    /// Inbound messages since the conversation was last marked read or answered.
    pub unread: i64,
    /// When the customer-service window closes (or closed): 24 hours after the customer's
    /// last message, RFC 3339; `null` if the customer never wrote. Outside it only templates
    /// may be sent.
    pub window_expires_at: Option<String>,
}

/// A `LIKE` pattern that finds `text` anywhere, its wildcards taken literally (escape `\\`).
pub fn contains_pattern(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

/// A conversation's `window_expires_at` as the API shows it.
pub fn window_expires_at(last_inbound_at: Option<Millis>) -> Option<String> {
    crate::messages::window::expires_at(last_inbound_at).map(rfc3339)
}

/// A delivery that is due and claimed by this process.
#[derive(Clone, Debug)]
pub struct DueDelivery {
    /// The delivery row.
    pub delivery_id: i64,
    /// The event's feed position.
    pub event_seq: i64,
    /// `evt_…`, sent as `webhook-id`.
    pub event_id: String,
    /// The instance the event belongs to.
    pub instance_id: i64,
    /// The endpoint.
    pub endpoint_id: String,
    /// Where to post.
    pub url: String,
    /// How to sign.
    pub secret: SigningSecret,
    /// The secret before the last rotation, while its grace period lasts: it signs too.
    pub previous_secret: Option<SigningSecret>,
    /// The endpoint's rate limit, deliveries a second, as the claim read it.
    pub rate_limit: Option<u32>,
    /// The body.
    pub payload: Arc<str>,
    /// The number this attempt will have (1 for the first).
    pub attempt: u32,
    /// How many failed attempts this delivery has made (the retry schedule's index).
    pub failures: u32,
    /// The lease this claim holds; the outcome only counts while it is still the delivery's.
    pub lease_until: Millis,
    /// For a delivery handed over while it waits behind another of its conversation: the
    /// delivery it follows. It may start only once that one is delivered, and then it needs
    /// a lease of its own (see [`AttemptResult::follower`]).
    pub after: Option<i64>,
}

/// How a completion may claim the next delivery of each finished conversation.
#[derive(Clone, Copy, Debug)]
pub struct HandOver {
    /// Now.
    pub now: Millis,
    /// The lease the claimed deliveries get.
    pub lease_until: Millis,
    /// At most this many.
    pub limit: usize,
}

/// What one attempt did, as the engine reports it to the store.
#[derive(Clone, Debug)]
pub struct AttemptResult {
    /// The delivery row.
    pub delivery_id: i64,
    /// The event's feed position.
    pub event_seq: i64,
    /// `evt_…`
    pub event_id: String,
    /// The instance the event belongs to.
    pub instance_id: i64,
    /// The endpoint.
    pub endpoint_id: String,
    /// The attempt number.
    pub attempt: u32,
    /// When it started.
    pub started_at: Millis,
    /// How long it took.
    pub duration_ms: i64,
    /// The receiver's status code, if it answered.
    pub status_code: Option<u16>,
    /// The first bytes of the answer.
    pub response: String,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Whether it counts as delivered.
    pub success: bool,
    /// On failure: when to try again, or `None` when the delivery is now dead.
    pub retry_at: Option<Millis>,
    /// The receiver's `Retry-After` (seconds) on a 429 or 503.
    pub retry_after: Option<std::time::Duration>,
    /// The lease the attempt was made under.
    pub lease_until: Millis,
    /// How long an endpoint may fail every attempt before it is disabled (`None`: never).
    pub disable_after: Option<Millis>,
    /// The next delivery of the conversation, which the engine started as soon as this one
    /// succeeded, and the lease it holds: when this outcome promotes it, it is leased rather
    /// than made due (it is on its way already).
    pub follower: Option<(i64, Millis)>,
}

/// One recorded attempt, as the API lists it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AttemptRecord {
    /// The endpoint.
    pub endpoint_id: String,
    /// The attempt number.
    pub attempt: u32,
    /// When it started, RFC 3339.
    pub started_at: String,
    /// How long it took.
    pub duration_ms: i64,
    /// The receiver's status code, `null` when no answer came.
    pub status_code: Option<u16>,
    /// The first bytes of the answer.
    pub response: String,
    /// Why it failed.
    pub error: Option<String>,
    /// `success` or `failure`.
    pub outcome: &'static str,
}

/// The state of one event towards one endpoint.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryStatus {
    /// The endpoint.
    pub endpoint_id: String,
    /// `waiting` (behind an earlier event of its conversation), `pending`, `delivered` or `dead`.
    pub state: &'static str,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due, RFC 3339, while pending.
    pub next_attempt_at: Option<String>,
}

/// Which dead deliveries a listing or a bulk resend covers: all of an instance's, or one
/// endpoint's, and of events that happened in a time range.
#[derive(Clone, Debug, Default)]
pub struct DeadFilter {
    /// Only this endpoint's.
    pub endpoint_id: Option<String>,
    /// Only of events from this time on.
    pub since: Option<Millis>,
    /// Only of events before this time.
    pub until: Option<Millis>,
}

/// A delivery that gave up: the event, where it was going, and how its last attempt went.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DeadDelivery {
    /// Paging position.
    #[serde(skip)]
    pub delivery_id: i64,
    /// The event (`evt_…`).
    pub event_id: String,
    /// `message`, `ack.read`, …
    pub event_type: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// The conversation (the customer's number).
    pub conversation: String,
    /// When the event happened, RFC 3339.
    pub event_created_at: String,
    /// Attempts made.
    pub attempts: u32,
    /// When the last attempt started, RFC 3339.
    pub last_attempt_at: Option<String>,
    /// The receiver's status code on the last attempt, `null` when no answer came.
    pub last_status_code: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// The storage interface. Every backend passes the same contract tests.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Checks that the database answers.
    async fn ping(&self) -> StoreResult<()>;

    /// Creates an instance (only the Auth Key's hash is kept).
    async fn create_instance(&self, new: NewInstance, now: Millis) -> StoreResult<Instance>;
    /// Every instance, oldest first.
    async fn list_instances(&self) -> StoreResult<Vec<Instance>>;
    /// The instance with this App Key, with its Auth Key hash.
    async fn instance_by_app_key(&self, app_key: &str) -> StoreResult<Option<(Instance, AuthKeyHash)>>;
    /// Replaces an instance's keys; `None` if there is no such instance.
    async fn rotate_keys(&self, instance_id: i64, keys: &Credentials) -> StoreResult<Option<Instance>>;
    /// One instance by id.
    async fn instance_by_id(&self, instance_id: i64) -> StoreResult<Option<Instance>>;
    /// Switches an instance's channel and settings (clearing any attention flag); `None` if
    /// there is no such instance, `Conflict` if another instance has that Meta number.
    async fn set_channel(&self, instance_id: i64, change: ChannelChange) -> StoreResult<Option<Instance>>;
    /// Every instance on the `meta` channel.
    async fn meta_instances(&self) -> StoreResult<Vec<Instance>>;
    /// Flags an instance as needing an operator, or clears the flag. With `if_meta` (the
    /// stored form of the Meta settings a failure was seen with), only while the instance
    /// still has those settings: a token replaced in the meantime is not flagged.
    async fn set_attention(
        &self,
        instance_id: i64,
        attention: Option<String>,
        if_meta: Option<String>,
    ) -> StoreResult<()>;

    /// Creates an endpoint.
    async fn create_endpoint(&self, new: NewEndpoint, secret: SigningSecret, now: Millis) -> StoreResult<Endpoint>;
    /// An instance's endpoints, oldest first.
    async fn list_endpoints(&self, instance_id: i64) -> StoreResult<Vec<Endpoint>>;
    /// One endpoint of an instance.
    async fn get_endpoint(&self, instance_id: i64, id: &str) -> StoreResult<Option<Endpoint>>;
    /// Changes an endpoint.
    async fn update_endpoint(
        &self,
        instance_id: i64,
        id: &str,
        change: EndpointChange,
        now: Millis,
    ) -> StoreResult<Option<Endpoint>>;
    /// Replaces an endpoint's signing secret; the old one keeps signing beside it until
    /// `old_valid_until` (`None`: not at all).
    async fn rotate_endpoint_secret(
        &self,
        instance_id: i64,
        id: &str,
        secret: SigningSecret,
        old_valid_until: Option<Millis>,
        now: Millis,
    ) -> StoreResult<Option<Endpoint>>;
    /// Deletes an endpoint and its undelivered deliveries.
    async fn delete_endpoint(&self, instance_id: i64, id: &str) -> StoreResult<bool>;

    /// Stores an inbound message and its `message` event, with a delivery per subscribed
    /// endpoint, in one transaction. `None` (and nothing written) when a message with that
    /// id is already stored: a channel's retry of a message it delivered before.
    /// With `hand_over`, the new deliveries that are due at once (the head of their
    /// conversation, endpoint enabled) are claimed in the same transaction and returned, so
    /// the engine starts them without a claim. A backend may also return deliveries that
    /// wait behind another (`after` set, not leased), for the engine to start the moment the
    /// one ahead succeeds.
    async fn record_inbound(
        &self,
        instance_id: i64,
        message: NewMessage,
        event: EventDraft,
        hand_over: Option<HandOver>,
    ) -> StoreResult<Option<(EventRecord, Vec<DueDelivery>)>>;
    /// Stores an outgoing message, the events it publishes at once, the statuses it will take
    /// later (sandbox) or the request that sends it (Meta), and the answer to its
    /// Idempotency-Key, in one transaction. If the key
    /// is already recorded (a concurrent request won the race), nothing is written and the
    /// result is `Err(StoreError::Conflict)`; the caller then replays the recorded answer.
    async fn record_outbound(
        &self,
        instance_id: i64,
        message: NewMessage,
        events: Vec<EventDraft>,
        schedule: Vec<ScheduledStatus>,
        channel_send: Option<NewChannelSend>,
        idempotency: Option<IdempotencyRecord>,
    ) -> StoreResult<Vec<EventRecord>>;
    /// The answer recorded for an Idempotency-Key no earlier than `since`:
    /// (request hash, response).
    async fn idempotent_response(
        &self,
        instance_id: i64,
        key: &str,
        since: Millis,
    ) -> StoreResult<Option<(String, String)>>;
    /// Moves an outgoing message's status forward and publishes its ack.
    async fn apply_status(&self, change: StatusChange) -> StoreResult<StatusOutcome>;
    /// The id and customer of the outgoing message a channel knows by `external_id`.
    async fn message_by_external_id(
        &self,
        instance_id: i64,
        external_id: &str,
    ) -> StoreResult<Option<(String, String)>>;
    /// Queues a channel request that belongs to no new message (a read receipt).
    async fn enqueue_channel_send(&self, send: NewChannelSend) -> StoreResult<()>;
    /// Claims up to `limit` due channel requests, the oldest of each conversation only,
    /// until `lease_until`.
    async fn claim_channel_sends(&self, now: Millis, limit: u32, lease_until: Millis) -> StoreResult<Vec<ChannelSend>>;
    /// Records how a claimed channel request ended (an accepted message gets its external id).
    async fn finish_channel_send(&self, send: &ChannelSend, outcome: SendOutcome) -> StoreResult<()>;
    /// When the next channel request that can be claimed (the oldest of its conversation)
    /// falls due.
    async fn next_channel_send_due(&self) -> StoreResult<Option<Millis>>;
    /// Whether an instance has channel sends queued or under way (a status Meta reports for
    /// an unknown wamid may be theirs, not yet recorded).
    async fn channel_sends_pending(&self, instance_id: i64) -> StoreResult<bool>;
    /// One message of an instance.
    async fn get_message(&self, instance_id: i64, message_id: &str) -> StoreResult<Option<StoredMessage>>;
    /// Conversations, most recently active first, before a paging position; with `search`,
    /// only those whose number or name contains it (ignoring case: ASCII letters on SQLite,
    /// every letter on PostgreSQL).
    async fn list_conversations(
        &self,
        instance_id: i64,
        before: Option<i64>,
        limit: u32,
        search: Option<String>,
    ) -> StoreResult<Vec<ConversationSummary>>;
    /// Queues the download of a customer's media (nothing if it is queued already).
    async fn enqueue_media_fetch(&self, fetch: MediaFetch, due_at: Millis) -> StoreResult<()>;
    /// Claims due media downloads, leased until `lease_until`.
    async fn claim_media_fetches(&self, now: Millis, limit: u32, lease_until: Millis) -> StoreResult<Vec<MediaFetch>>;
    /// Records what came of a download: keeps the file and ends the fetch, schedules it
    /// again, or ends it.
    async fn finish_media_fetch(&self, fetch: &MediaFetch, outcome: MediaFetchOutcome) -> StoreResult<()>;
    /// botlinkd's copy of a message's media.
    async fn kept_media(&self, instance_id: i64, message_id: &str) -> StoreResult<Option<KeptMedia>>;
    /// Keeps a file the business uploaded, under its media id.
    async fn keep_media(&self, instance_id: i64, media_id: &str, media: KeptMedia) -> StoreResult<()>;
    /// Whether botlinkd holds a file under this key (a message id or an upload's media id).
    async fn has_media(&self, instance_id: i64, key: &str) -> StoreResult<bool>;
    /// Deletes kept media older than `before`; answers how many.
    async fn prune_media(&self, before: Millis) -> StoreResult<u64>;
    /// Replaces an instance's template catalogue with a sync's result, made at `synced_at`.
    async fn replace_templates(&self, instance_id: i64, templates: Vec<Template>, synced_at: Millis)
    -> StoreResult<()>;
    /// An instance's template catalogue, by name and language, and when it was synced
    /// (`None`: never).
    async fn list_templates(&self, instance_id: i64) -> StoreResult<(Vec<Template>, Option<Millis>)>;
    /// When the customer last wrote (their message's time), if ever: the service window.
    async fn last_inbound_at(&self, instance_id: i64, customer: &str) -> StoreResult<Option<Millis>>;
    /// Marks a conversation read; `false` if the instance has no such conversation.
    async fn mark_read(&self, instance_id: i64, customer: &str) -> StoreResult<bool>;
    /// One conversation's messages, newest first, before a paging position.
    async fn list_messages(
        &self,
        instance_id: i64,
        customer: &str,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<StoredMessage>>;
    /// Sandbox statuses due by `now`, oldest first.
    async fn due_statuses(&self, now: Millis, limit: u32) -> StoreResult<Vec<ScheduledStatus>>;
    /// When the next sandbox status is due.
    async fn next_status_due(&self) -> StoreResult<Option<Millis>>;
    /// Forgets a scheduled status (it was applied or overtaken).
    async fn drop_scheduled_status(&self, message_id: &str, status: MessageStatus) -> StoreResult<()>;

    /// The instance's events after a feed position (test events excluded).
    async fn list_events(&self, instance_id: i64, after: i64, limit: u32) -> StoreResult<Vec<EventRecord>>;
    /// An instance's events as the history shows them: filtered, in either order, each with
    /// its outcome (see [`history`]).
    async fn event_history(
        &self,
        instance_id: i64,
        query: &history::EventQuery,
    ) -> StoreResult<Vec<history::HistoryEvent>>;
    /// An endpoint's delivery statistics from `since`, its deliveries not yet made, and its
    /// latest success (see [`attempt_stats`]).
    async fn endpoint_activity(&self, endpoint_id: &str, since: Millis)
    -> StoreResult<attempt_stats::EndpointActivity>;
    /// What the portal's overview counts for an instance from `since` to `until`.
    async fn overview(&self, instance_id: i64, since: Millis, until: Millis) -> StoreResult<history::OverviewCounts>;
    /// One event of an instance.
    async fn get_event(&self, instance_id: i64, event_id: &str) -> StoreResult<Option<EventRecord>>;
    /// Every attempt of an event, oldest first.
    async fn list_attempts(&self, event_seq: i64) -> StoreResult<Vec<AttemptRecord>>;
    /// Where an event stands towards each endpoint.
    async fn delivery_statuses(&self, event_seq: i64) -> StoreResult<Vec<DeliveryStatus>>;
    /// Delivers an event again to each of its endpoints (or to one); returns how many
    /// deliveries were scheduled.
    async fn resend_event(&self, event_seq: i64, endpoint_id: Option<&str>, now: Millis) -> StoreResult<usize>;
    /// An instance's dead deliveries (the latest delivery of an event to an endpoint, when it
    /// gave up), newest first, before a paging position.
    async fn list_dead(
        &self,
        instance_id: i64,
        filter: &DeadFilter,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<DeadDelivery>>;
    /// Delivers up to `limit` of an instance's dead deliveries again, oldest first (so each
    /// conversation keeps its order); returns how many were scheduled.
    async fn resend_dead(&self, instance_id: i64, filter: &DeadFilter, limit: u32, now: Millis) -> StoreResult<usize>;
    /// Stores a test event with one delivery to `endpoint_id`, already claimed by the caller.
    async fn record_test_event(
        &self,
        instance_id: i64,
        endpoint_id: &str,
        event: EventDraft,
        lease_until: Millis,
    ) -> StoreResult<DueDelivery>;

    /// Claims up to `limit` due deliveries (not of `skip_endpoints`, not of disabled
    /// endpoints) until `lease_until`, oldest due first.
    async fn claim_due(
        &self,
        now: Millis,
        limit: u32,
        skip_endpoints: Vec<String>,
        lease_until: Millis,
    ) -> StoreResult<Vec<DueDelivery>>;
    /// Records attempts and moves their deliveries on (delivered, retry, dead), promoting
    /// the next delivery of a conversation where the head is done. With `hand_over`, the
    /// promoted deliveries that are due at once (up to its limit) are claimed in the same
    /// transaction and returned, so the engine starts them without another claim.
    async fn complete(
        &self,
        results: Arc<[AttemptResult]>,
        hand_over: Option<HandOver>,
    ) -> StoreResult<Vec<DueDelivery>>;
    /// Deletes up to `limit` events older than `events_before` whose deliveries are all
    /// finished (with their deliveries and attempts), and Idempotency-Keys older than
    /// `keys_before`. Returns how many events went; call again while it returns `limit`.
    async fn prune(&self, events_before: Option<Millis>, keys_before: Millis, limit: u32) -> StoreResult<u32>;
    /// Unfinished deliveries by state, and paused endpoints.
    async fn queue_stats(&self) -> StoreResult<QueueStats>;
    /// The feed position of the newest stored event (0 when there is none).
    async fn latest_event_seq(&self) -> StoreResult<i64>;
    /// When the earliest pending delivery falls due.
    async fn next_due_at(&self) -> StoreResult<Option<Millis>>;
    /// Reserves the next send slot of `key`, paced at one send per `interval_us` (a generic
    /// cell rate: a slot never starts before `now`, nor sooner than one interval after the
    /// slot before it), and answers when the reserved slot starts. Shared by every process
    /// that uses the database.
    async fn reserve_pace(&self, key: &str, interval_us: i64, now_us: i64) -> StoreResult<i64>;
    /// Hands claimed deliveries back to the queue without an attempt, due at `next_at`:
    /// each `(delivery id, lease_until)` whose lease is still the one given.
    async fn release_claims(&self, claims: Vec<(i64, Millis)>, next_at: Millis) -> StoreResult<()>;
    /// This process began (`on`) or stopped watching an instance's live news (a long-poll, a
    /// stream, the portal): a shared backend tells the other processes, which announce news
    /// only of instances watched elsewhere. Nothing for a backend used by one process.
    fn watching(&self, _instance_id: i64, _on: bool) {}
    /// What other processes sharing the database committed (events, attempts); `None` for a
    /// backend that is only ever used by one process. Taken once.
    fn take_notifications(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<ClusterNotice>> {
        None
    }
    /// Prepares the store for a serving process, once, at start; answers how many deliveries
    /// it made due again. SQLite (one serving process per file) releases every lease it
    /// finds. PostgreSQL releases nothing (others may hold live leases) and registers the
    /// process, so that the others take over its leases should it die, and it theirs.
    async fn start_serving(&self, now: Millis) -> StoreResult<u64>;
}

/// Whether a database URL names PostgreSQL.
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Opens the store a configuration names (`postgres://…` or SQLite), applying migrations.
pub async fn open(url: &str, sqlite_sync: SqliteSync, sqlite_max_pages: Option<u64>) -> StoreResult<Arc<dyn Store>> {
    if is_postgres(url) {
        return Ok(Arc::new(postgres::PgStore::open(url).await?));
    }
    let path = sqlite::path_from_url(url)?;
    Ok(Arc::new(sqlite::SqliteStore::open(
        &path,
        sqlite_sync,
        sqlite_max_pages,
    )?))
}

/// How hard SQLite works to keep a commit through a power cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SqliteSync {
    /// `synchronous=FULL`: a commit survives power loss (the default).
    Full,
    /// `synchronous=NORMAL` in WAL mode: a commit survives a killed process, not a power cut.
    Normal,
}

/// Held by a serving process for as long as it serves: with SQLite, a second `serve` on the
/// same file is refused (both would hand out the same deliveries). Dropping it releases it.
#[derive(Debug)]
pub struct ServingLock {
    _file: Option<std::fs::File>,
}

/// Takes the serving lock of the store a configuration names (PostgreSQL needs none: any
/// number of processes serve one database).
pub fn lock_for_serving(url: &str) -> StoreResult<ServingLock> {
    if is_postgres(url) {
        return Ok(ServingLock { _file: None });
    }
    let path = sqlite::path_from_url(url)?;
    Ok(ServingLock {
        _file: Some(sqlite::lock_for_serving(&path)?),
    })
}

/// A database URL with any password replaced by `***`, fit for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***@{}", &url[..scheme_end], &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// Formats milliseconds as RFC 3339 (UTC, millisecond precision).
pub fn rfc3339(ms: Millis) -> String {
    // Clamped to the year 9999, the last that RFC 3339 can write.
    const LAST: Millis = 253_402_300_799_999;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.clamp(0, LAST) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted_from_database_urls() {
        assert_eq!(
            redact_url("postgres://bot:s3cret@db:5432/botlinkd"),
            "postgres://***@db:5432/botlinkd"
        );
        assert_eq!(redact_url("sqlite://data/botlinkd.db"), "sqlite://data/botlinkd.db");
        assert_eq!(redact_url("botlinkd.db"), "botlinkd.db");
    }
}

//! The PostgreSQL backend, for running several `botlinkd serve` processes on one database.
//!
//! With SQLite, the store's guarantees rest on one fact: a single writer thread in a single
//! process does every write, one after the other. Here many processes write at once, each over
//! a pool of 16 connections (one of them held by the listener; the ingest writer, the
//! completer, the notifier and the liveness lock have one more each of their own), so each
//! guarantee is kept by a
//! mechanism of its own; the rest of the program sees the same `Store` trait. The processes
//! never talk to each other directly: everything they coordinate goes through the database
//! (advisory locks, row locks, leases, `LISTEN`/`NOTIFY`). No lock covers a whole instance:
//! writers of one instance run side by side, and only writers of one conversation wait for
//! each other.
//!
//! - **Feed order and delivery queues**: feed positions from transaction ids, read only below
//!   the oldest running transaction, and a transaction-scoped advisory lock per conversation
//!   (see `append`); the unique partial index `deliveries_one_head` is the backstop.
//! - **Customers' messages** are written in group commits (`ingest`). Other writes (sends,
//!   statuses, endpoint changes) are rarer and run one transaction each; each first takes the
//!   locks of the conversations it touches, and returns once it has committed. A failure rolls
//!   it back.
//! - **Completions** are set-based: the leaders' outcomes in one statement, then the followers
//!   chained behind them in another; a batch of successes is one routine call (`complete`).
//! - **Claims** are one `FOR UPDATE OF d SKIP LOCKED` statement (`outbox::claim`) that selects
//!   due heads of enabled endpoints, oldest `next_at` first, and in the same statement sets
//!   `lease_until` and moves `next_at` to the lease's end: two processes claiming at once take
//!   different rows, and a claimed row is not due again until its lease ends. Completion is
//!   guarded by the lease exactly as on SQLite.
//! - **The authentication lookup** is cached per process for at most a second and forgotten
//!   on notice (`instance_cache`).
//!
//! **No deadlocks.** Every transaction takes its locks in one global order: `endpoints` rows
//! (sorted by id), then conversation locks (sorted by key), then delivery rows. A completion
//! writes endpoint health only when something changes (a failure, or a success after
//! failures), in endpoint-id order (bytewise: outcome by outcome, or, in the completion
//! routine, one statement sorting with `COLLATE "C"`), before its conversation locks; changing
//! or deleting an endpoint locks its row first and then its deliveries; appending writers take
//! conversation locks only. Changing, disabling and deleting an endpoint take no conversation
//! lock: pausing changes no queue's shape, and a delivery appended for an endpoint deleted at
//! the same moment is left without an endpoint, never claimed (claims join `endpoints`) and
//! pruned with its event (pruning counts only deliveries whose endpoint exists).
//!
//! **The delivery path's transactions** are planned once per connection and reach their rows
//! through indexes: an ingest batch, and a completion of successes only, is one call of a
//! PL/pgSQL routine (see `routines`), the whole transaction in one round trip; a completion
//! with a failure begins with `BEGIN_HOT` (see `begin_hot`), which sets the same planner
//! settings. sqlx prepares each statement once per connection and reuses it; PL/pgSQL keeps
//! the routines' plans for the connection's life.
//!
//! **Announcements.** A write that appended events announces, once it has committed, each
//! instance's newest position on `botlinkd_events` as `<instance_id>:<seq>[:handed]`;
//! `:handed` says that the write left no head due for a claim loop (every one was leased to
//! the writing process's engine), so the other processes' engines need not look. A completion
//! sends its outcomes on `botlinkd_attempts` in as few notices as fit under PostgreSQL's
//! 8,000-byte limit: `<origin>\n[{instance_id, notice}, …]` (an outcome too large for a
//! notice alone goes with its response excerpt and error cut to 200 characters). Both go out
//! through `notifier`, after the commit and on a connection of its own, never from inside the
//! write: a `NOTIFY` makes its transaction's commit take a cluster-wide lock until its WAL is
//! flushed, which would make every write of the delivery path commit alone. A trigger on
//! `instances` (migration `0005`) announces every changed instance on `botlinkd_instances`
//! from inside its (rare) transaction. Either way a notice never runs ahead of its data.
//!
//! Event notices that left nothing due, and attempt notices, go only for instances another
//! process watches (`watchers`, which also listens on `botlinkd_watch`).
//!
//! Each `PgStore` keeps one connection as a `PgListener` on the four channels; a task turns
//! notifications into [`ClusterNotice`]s on an unbounded channel, which the server takes with
//! [`PgStore::take_notifications`] and forwards: `Event` to `App::announce` (the feed's
//! `watch` for long-polls, an engine wake-up unless `handed`, a `LiveItem::Events` for
//! streams) and `Attempt` to `Live::attempt`. `origin` is a random id made when the store
//! opens: a process drops its own attempt notices, which it announced locally already, by
//! reading their first line only (so even two servers in one test process tell theirs apart).
//! Its own event notices come back too and are harmless. A notice with a lower position than
//! one already announced does not move the `watch`, which is fine: a reader woken by the higher
//! one waits at the horizon for the lower one's transaction. If the listening connection
//! drops, the listener reconnects and notices sent in between are lost: watchers catch up at
//! their instance's next notice, engines poll at least every 0.5 s anyway, and the instance
//! cache is cleared.
//!
//! **A dead process.** Its transactions roll back and its advisory locks go with its
//! connections, as soon as PostgreSQL notices that they are closed. (A machine that vanishes in
//! the middle of a transaction is noticed only when its connection times out, and until then
//! writers of the conversations it locked wait; `idle_in_transaction_session_timeout` bounds
//! this.) Its leases are released by the other processes as soon as its liveness lock is free
//! (`liveness`: every lease of a delivery, a Meta send or a media download names its process
//! in `lease_owner`), and otherwise stay until they
//! end (`--delivery-lease`, 30 s by default, at least four times the attempt timeout); then
//! the rows are due and any process claims them. `start_serving` (called by a serving process
//! only) releases nothing and registers the process with `liveness`: the leases a restarted
//! process held in its previous life are released there like any gone process's. A late outcome from a process that was only slow, not dead, finds
//! a different lease on the row and changes nothing but the attempts list.
//!
//! **Migrations** run in [`PgStore::open`] (`open`), in one transaction that first takes
//! `pg_advisory_xact_lock(LOCK_SPACE, 0)` (the two-key lock space, apart from the one-key space
//! of the conversation locks). The table `botlinkd_migrations` has one row per applied file;
//! the files after that count are run and recorded, and then this build's routines are created
//! if the database lacks them (see `routines`). Processes that start together wait for one
//! another, and a failed migration leaves nothing behind. `0001_core.sql` is SQLite's schema
//! (with `unread` and the age indexes already in) with `BIGSERIAL` sequences, `BOOLEAN` flags,
//! instance ids from a sequence starting at 10001, and the unique partial index
//! `deliveries_one_head`; `0002_meta.sql` and `0003_endpoint_health.sql` add what SQLite's
//! `0004` and `0005` add; `0004_commit_ordered_feed.sql` drops the sequence default of
//! `events.seq` (positions come from transaction ids); `0005_instance_notices.sql` adds the
//! instance trigger; `0006_rate_limit.sql` adds `endpoints.rate_limit` and the `pacing` table
//! every process reserves its rate-limited sends in; `0007_service_window.sql` adds
//! `conversations.last_inbound_at`; `0008_templates.sql` the `templates` catalogue and
//! `template_syncs`; `0009_media.sql` the kept `media` and the `media_fetches` queue;
//! `0010_history.sql` the event history's indexes and `attempt_stats`, and drops
//! `events_by_age` (retention reads `events_history` instance by instance);
//! `0011_watchers.sql` the unlogged `watchers` table (`watchers`); `0012_lease_owners.sql`
//! `deliveries.lease_owner`, the `processes` table and `botlinkd_process()` (`liveness`).
//! Migrations run on a connection of their own, before the pool opens any.
//!
//! **Warm connections.** A new PostgreSQL connection's first call of a routine reads the
//! tables' definitions, compiles the routine and plans its statements: 5 to 20 ms, where a
//! warm call takes 1 to 3. So every pooled connection calls both routines with an empty batch
//! in a rolled-back transaction as it opens (`routines::warm_up`), and a serving process opens
//! `open::WARM_CONNECTIONS` (12) of them when it starts serving, and keeps them (the pool's
//! minimum), and the ingest writer's and the completer's own connections (`own_thread`),
//! warmed up the same way.
//! A connection the pool opens on demand, beyond those, is warmed up inside the `acquire`
//! that opened it.
//! Before this, the first messages after a start, and after the pool replaced a connection,
//! waited for those first calls: W2's p99 was 11.5 to 54 ms on PostgreSQL, and is 2.4 to 5.2 ms
//! with them in 27 of 29 runs (docs/perf-log.md).
//!
//! **Background work in every process.** The engine, the sandbox driver, the send worker and
//! housekeeping run in each process. The engines share deliveries through claims. Sandbox
//! drivers may pick the same due status; `apply_status` holds the conversation's lock and locks
//! the message row `FOR UPDATE`, and statuses only move forward, so the second finds nothing to
//! do and publishes nothing. Housekeeping selects each batch of prunable events
//! `FOR UPDATE SKIP LOCKED`, so processes pruning at once take different batches and never
//! wait on each other.
//!
//! **What is per process**: the in-flight limits (1024 attempts, 64 per endpoint), the feed's
//! `watch` value, the live channel, the instance cache and the rate-limit buckets, so each
//! process allows the full API rate and its own budget of failed authentications. Settings are
//! per process too: the process that attempts a delivery applies its own timeout, address
//! policy and retry schedule. Durability is the server's configuration (`synchronous_commit`,
//! replication); botlinkd sets nothing.
//!
//! The other files: `catalog` (instances and endpoints), `channel_sends` (the Graph request
//! queue), `messages` (messages, conversations, scheduled sandbox statuses, Idempotency-Keys,
//! `apply_status`) and `outbox` (the feed read, claims, hand-overs, resends, test events,
//! pruning, the dead list).

mod append;
mod catalog;
mod channel_sends;
mod complete;
mod history;
mod ingest;
mod instance_cache;
mod liveness;
mod media;
mod messages;
mod notices;
mod notifier;
mod open;
mod outbox;
mod own_thread;
mod routines;
mod templates;
mod watchers;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{Postgres, Transaction};
use tokio::sync::mpsc;

use crate::clock::Millis;
use crate::events::{EventDraft, EventRecord};
use crate::instances::{AuthKeyHash, ChannelChange, Credentials, Instance, NewInstance};
use crate::messages::{MessageStatus, StoredMessage};
use crate::store::{
    AttemptRecord, AttemptResult, ChannelSend, ClusterNotice, ConversationSummary, DeadDelivery, DeadFilter,
    DeliveryStatus, DueDelivery, HandOver, IdempotencyRecord, KeptMedia, MediaFetch, MediaFetchOutcome, NewChannelSend,
    NewMessage, QueueStats, ScheduledStatus, SendOutcome, StatusChange, StatusOutcome, Store, StoreError, StoreResult,
};
use crate::templates::Template;
use crate::webhooks::{Endpoint, EndpointChange, NewEndpoint, SigningSecret};

/// The advisory-lock namespace of botlinkd (the first key of the two-key lock functions).
const LOCK_SPACE: i32 = 0x000b_071d;

/// The PostgreSQL store.
pub struct PgStore {
    pool: PgPool,
    /// The group commit for customers' messages.
    ingest: ingest::Ingest,
    /// Records the delivery engine's outcomes.
    completer: complete::Completer,
    /// Announces committed writes to the other processes.
    notifier: Arc<notifier::Notifier>,
    /// The instances other processes watch (their news is announced).
    remote: Arc<watchers::RemoteWatch>,
    /// This process's watches, kept in `watchers` for the others.
    watches: watchers::Watches,
    /// Instances looked up by App Key.
    instances: Arc<instance_cache::InstanceCache>,
    notices: Mutex<Option<mpsc::UnboundedReceiver<ClusterNotice>>>,
    /// This process's mark on the notices it sends, so it skips its own.
    origin: String,
    /// This process's number (random): the owner of its leases, the key of its liveness lock
    /// and its writer in `attempt_stats`, so processes never share a row.
    number: i32,
    /// The connection settings, for the liveness connection.
    options: PgConnectOptions,
    /// This process's registration as a serving process, once it serves (see `liveness`).
    liveness: tokio::sync::Mutex<Option<liveness::Liveness>>,
    /// What this process has taken over from processes that were gone.
    taken_over: Arc<liveness::TakeOvers>,
}

type Tx = Transaction<'static, Postgres>;

impl PgStore {
    async fn begin(&self) -> StoreResult<Tx> {
        Ok(self.pool.begin().await?)
    }
}

/// How a completion's transaction begins (see [`begin_hot`]; the ingest routine sets the same
/// for itself, see `routines`).
const BEGIN_HOT: &str = "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_seqscan = off";

/// Begins a transaction of the delivery path, whose statements are planned once per
/// connection and reach their rows through indexes.
///
/// Left to choose, PostgreSQL plans these array statements afresh on every call (their
/// generic plan assumes ten rows per array and so looks dearer than a plan for the arrays at
/// hand): for the ingest statement a millisecond of planning on every batch, more than it
/// takes to run. A generic plan is made once per connection and kept until the tables' next
/// `ANALYZE`, so one made while the tables are nearly empty (a new database) would scan them
/// whole for as long; with sequential scans priced out, every plan takes the indexes these
/// statements were written for, whatever the tables' size. The settings are `LOCAL`: they
/// end with the transaction and touch no other statement.
async fn begin_hot(pool: &PgPool) -> StoreResult<Tx> {
    Ok(pool.begin_with(BEGIN_HOT).await?)
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_instance(&self, new: NewInstance, now: Millis) -> StoreResult<Instance> {
        catalog::create_instance(&self.pool, &new, now).await
    }

    async fn list_instances(&self) -> StoreResult<Vec<Instance>> {
        catalog::list_instances(&self.pool).await
    }

    async fn instance_by_app_key(&self, app_key: &str) -> StoreResult<Option<(Instance, AuthKeyHash)>> {
        if let Some(found) = self.instances.get(app_key) {
            return Ok(Some(found));
        }
        let ticket = self.instances.ticket();
        let found = catalog::instance_by_app_key(&self.pool, app_key).await?;
        if let Some((instance, hash)) = &found {
            self.instances.put(app_key, instance.clone(), *hash, ticket);
        }
        Ok(found)
    }

    async fn rotate_keys(&self, instance_id: i64, keys: &Credentials) -> StoreResult<Option<Instance>> {
        let rotated = catalog::rotate_keys(&self.pool, instance_id, keys).await;
        self.instances.forget(instance_id);
        rotated
    }

    async fn instance_by_id(&self, instance_id: i64) -> StoreResult<Option<Instance>> {
        catalog::instance_by_id(&self.pool, instance_id).await
    }

    async fn set_channel(&self, instance_id: i64, change: ChannelChange) -> StoreResult<Option<Instance>> {
        let changed = catalog::set_channel(&self.pool, instance_id, &change).await;
        self.instances.forget(instance_id);
        changed
    }

    async fn meta_instances(&self) -> StoreResult<Vec<Instance>> {
        catalog::meta_instances(&self.pool).await
    }

    async fn set_attention(
        &self,
        instance_id: i64,
        attention: Option<String>,
        if_meta: Option<String>,
    ) -> StoreResult<()> {
        let flagged = catalog::set_attention(&self.pool, instance_id, attention.as_deref(), if_meta.as_deref()).await;
        self.instances.forget(instance_id);
        flagged
    }

    async fn create_endpoint(&self, new: NewEndpoint, secret: SigningSecret, now: Millis) -> StoreResult<Endpoint> {
        catalog::create_endpoint(&self.pool, &crate::ids::endpoint_id(now), &new, &secret, now).await
    }

    async fn list_endpoints(&self, instance_id: i64) -> StoreResult<Vec<Endpoint>> {
        catalog::list_endpoints(&self.pool, instance_id).await
    }

    async fn get_endpoint(&self, instance_id: i64, id: &str) -> StoreResult<Option<Endpoint>> {
        catalog::get_endpoint(&self.pool, instance_id, id).await
    }

    async fn update_endpoint(
        &self,
        instance_id: i64,
        id: &str,
        change: EndpointChange,
        now: Millis,
    ) -> StoreResult<Option<Endpoint>> {
        let mut tx = self.begin().await?;
        let endpoint = catalog::update_endpoint(&mut tx, instance_id, id, &change, now).await?;
        tx.commit().await?;
        Ok(endpoint)
    }

    async fn rotate_endpoint_secret(
        &self,
        instance_id: i64,
        id: &str,
        secret: SigningSecret,
        old_valid_until: Option<Millis>,
        now: Millis,
    ) -> StoreResult<Option<Endpoint>> {
        catalog::rotate_endpoint_secret(&self.pool, instance_id, id, &secret, old_valid_until, now).await
    }

    async fn delete_endpoint(&self, instance_id: i64, id: &str) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let deleted = catalog::delete_endpoint(&mut tx, instance_id, id).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn record_inbound(
        &self,
        instance_id: i64,
        message: NewMessage,
        event: EventDraft,
        hand_over: Option<HandOver>,
    ) -> StoreResult<Option<(EventRecord, Vec<DueDelivery>)>> {
        self.ingest
            .record(ingest::Inbound {
                instance_id,
                message,
                event,
                hand_over,
            })
            .await
    }

    async fn record_outbound(
        &self,
        instance_id: i64,
        message: NewMessage,
        events: Vec<EventDraft>,
        schedule: Vec<ScheduledStatus>,
        channel_send: Option<NewChannelSend>,
        idempotency: Option<IdempotencyRecord>,
    ) -> StoreResult<Vec<EventRecord>> {
        let mut tx = self.begin().await?;
        append::lock_conversations(&mut tx, [(instance_id, message.customer.as_str())]).await?;
        if let Some(key) = &idempotency
            && !messages::remember_idempotent(&mut tx, instance_id, key, message.created_at).await?
        {
            return Err(StoreError::Conflict(format!(
                "Idempotency-Key `{}` was used already",
                key.key
            )));
        }
        messages::insert(&mut tx, instance_id, &message).await?;
        for s in &schedule {
            messages::schedule(&mut tx, s).await?;
        }
        if let Some(send) = &channel_send {
            channel_sends::enqueue(&mut *tx, send).await?;
        }
        let new_events: Vec<append::NewEvent<'_>> = events
            .iter()
            .map(|draft| append::NewEvent {
                instance_id,
                draft,
                hand_over: None,
            })
            .collect();
        let appended = append::append(&mut tx, &new_events).await?;
        tx.commit().await?;
        self.notifier.events(appended.newest);
        Ok(appended.records)
    }

    async fn idempotent_response(
        &self,
        instance_id: i64,
        key: &str,
        since: Millis,
    ) -> StoreResult<Option<(String, String)>> {
        messages::idempotent_response(&self.pool, instance_id, key, since).await
    }

    async fn apply_status(&self, change: StatusChange) -> StoreResult<StatusOutcome> {
        let mut tx = self.begin().await?;
        append::lock_conversations(&mut tx, [(change.instance_id, change.event.conversation.as_str())]).await?;
        let (outcome, newest) = messages::apply_status(&mut tx, &change).await?;
        tx.commit().await?;
        self.notifier.events(newest);
        Ok(outcome)
    }

    async fn message_by_external_id(
        &self,
        instance_id: i64,
        external_id: &str,
    ) -> StoreResult<Option<(String, String)>> {
        messages::by_external_id(&self.pool, instance_id, external_id).await
    }

    async fn enqueue_channel_send(&self, send: NewChannelSend) -> StoreResult<()> {
        channel_sends::enqueue(&self.pool, &send).await
    }

    async fn claim_channel_sends(&self, now: Millis, limit: u32, lease_until: Millis) -> StoreResult<Vec<ChannelSend>> {
        channel_sends::claim(&self.pool, now, limit, lease_until).await
    }

    async fn finish_channel_send(&self, send: &ChannelSend, outcome: SendOutcome) -> StoreResult<()> {
        channel_sends::finish(&self.pool, send, &outcome).await
    }

    async fn next_channel_send_due(&self) -> StoreResult<Option<Millis>> {
        channel_sends::next_due(&self.pool).await
    }

    async fn channel_sends_pending(&self, instance_id: i64) -> StoreResult<bool> {
        channel_sends::pending(&self.pool, instance_id).await
    }

    async fn get_message(&self, instance_id: i64, message_id: &str) -> StoreResult<Option<StoredMessage>> {
        messages::get(&self.pool, instance_id, message_id).await
    }

    async fn list_conversations(
        &self,
        instance_id: i64,
        before: Option<i64>,
        limit: u32,
        search: Option<String>,
    ) -> StoreResult<Vec<ConversationSummary>> {
        messages::list_conversations(&self.pool, instance_id, before, limit, search.as_deref()).await
    }

    async fn enqueue_media_fetch(&self, fetch: MediaFetch, due_at: Millis) -> StoreResult<()> {
        media::enqueue(&self.pool, &fetch, due_at).await
    }

    async fn claim_media_fetches(&self, now: Millis, limit: u32, lease_until: Millis) -> StoreResult<Vec<MediaFetch>> {
        media::claim(&self.pool, now, limit, lease_until).await
    }

    async fn finish_media_fetch(&self, fetch: &MediaFetch, outcome: MediaFetchOutcome) -> StoreResult<()> {
        media::finish(&self.pool, fetch, &outcome).await
    }

    async fn kept_media(&self, instance_id: i64, message_id: &str) -> StoreResult<Option<KeptMedia>> {
        media::kept(&self.pool, instance_id, message_id).await
    }

    async fn keep_media(&self, instance_id: i64, media_id: &str, kept: KeptMedia) -> StoreResult<()> {
        media::keep(&self.pool, instance_id, media_id, &kept).await
    }

    async fn has_media(&self, instance_id: i64, key: &str) -> StoreResult<bool> {
        media::exists(&self.pool, instance_id, key).await
    }

    async fn prune_media(&self, before: Millis) -> StoreResult<u64> {
        media::prune(&self.pool, before).await
    }

    async fn replace_templates(
        &self,
        instance_id: i64,
        templates: Vec<Template>,
        synced_at: Millis,
    ) -> StoreResult<()> {
        templates::replace(&self.pool, instance_id, &templates, synced_at).await
    }

    async fn list_templates(&self, instance_id: i64) -> StoreResult<(Vec<Template>, Option<Millis>)> {
        templates::list(&self.pool, instance_id).await
    }

    async fn last_inbound_at(&self, instance_id: i64, customer: &str) -> StoreResult<Option<Millis>> {
        messages::last_inbound_at(&self.pool, instance_id, customer).await
    }

    async fn mark_read(&self, instance_id: i64, customer: &str) -> StoreResult<bool> {
        messages::mark_read(&self.pool, instance_id, customer).await
    }

    async fn list_messages(
        &self,
        instance_id: i64,
        customer: &str,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<StoredMessage>> {
        messages::list(&self.pool, instance_id, customer, before, limit).await
    }

    async fn due_statuses(&self, now: Millis, limit: u32) -> StoreResult<Vec<ScheduledStatus>> {
        messages::due_statuses(&self.pool, now, limit).await
    }

    async fn next_status_due(&self) -> StoreResult<Option<Millis>> {
        Ok(sqlx::query_scalar("SELECT MIN(due_at) FROM scheduled_statuses")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn drop_scheduled_status(&self, message_id: &str, status: MessageStatus) -> StoreResult<()> {
        sqlx::query("DELETE FROM scheduled_statuses WHERE message_id = $1 AND status = $2")
            .bind(message_id)
            .bind(status.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn list_events(&self, instance_id: i64, after: i64, limit: u32) -> StoreResult<Vec<EventRecord>> {
        outbox::list_events(&self.pool, instance_id, after, limit).await
    }

    async fn event_history(
        &self,
        instance_id: i64,
        query: &crate::store::history::EventQuery,
    ) -> StoreResult<Vec<crate::store::history::HistoryEvent>> {
        history::event_history(&self.pool, instance_id, query).await
    }

    async fn endpoint_activity(
        &self,
        endpoint_id: &str,
        since: Millis,
    ) -> StoreResult<crate::store::attempt_stats::EndpointActivity> {
        history::endpoint_activity(&self.pool, endpoint_id, since).await
    }

    async fn overview(
        &self,
        instance_id: i64,
        since: Millis,
        until: Millis,
    ) -> StoreResult<crate::store::history::OverviewCounts> {
        history::overview(&self.pool, instance_id, since, until).await
    }

    async fn get_event(&self, instance_id: i64, event_id: &str) -> StoreResult<Option<EventRecord>> {
        outbox::get_event(&self.pool, instance_id, event_id).await
    }

    async fn list_attempts(&self, event_seq: i64) -> StoreResult<Vec<AttemptRecord>> {
        outbox::list_attempts(&self.pool, event_seq).await
    }

    async fn delivery_statuses(&self, event_seq: i64) -> StoreResult<Vec<DeliveryStatus>> {
        outbox::delivery_statuses(&self.pool, event_seq).await
    }

    async fn resend_event(&self, event_seq: i64, endpoint_id: Option<&str>, now: Millis) -> StoreResult<usize> {
        let mut tx = self.begin().await?;
        let (instance_id, conversation): (i64, String) =
            sqlx::query_as("SELECT instance_id, conversation FROM events WHERE seq = $1")
                .bind(event_seq)
                .fetch_one(&mut *tx)
                .await?;
        append::lock_conversations(&mut tx, [(instance_id, conversation.as_str())]).await?;
        let scheduled = outbox::resend(&mut tx, event_seq, endpoint_id, now).await?;
        tx.commit().await?;
        Ok(scheduled)
    }

    async fn list_dead(
        &self,
        instance_id: i64,
        filter: &DeadFilter,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<DeadDelivery>> {
        outbox::list_dead(&self.pool, instance_id, filter, before, limit).await
    }

    async fn resend_dead(&self, instance_id: i64, filter: &DeadFilter, limit: u32, now: Millis) -> StoreResult<usize> {
        let mut tx = self.begin().await?;
        let scheduled = outbox::resend_dead(&mut tx, instance_id, filter, limit, now).await?;
        tx.commit().await?;
        Ok(scheduled)
    }

    async fn record_test_event(
        &self,
        instance_id: i64,
        endpoint_id: &str,
        event: EventDraft,
        lease_until: Millis,
    ) -> StoreResult<DueDelivery> {
        let mut tx = self.begin().await?;
        append::lock_conversations(&mut tx, [(instance_id, event.conversation.as_str())]).await?;
        let due = outbox::test_event(&mut tx, instance_id, endpoint_id, &event, lease_until).await?;
        tx.commit().await?;
        // Its one delivery is the caller's already: nothing due for the claim loops.
        self.notifier.events([(instance_id, due.event_seq, false)]);
        Ok(due)
    }

    async fn claim_due(
        &self,
        now: Millis,
        limit: u32,
        skip_endpoints: Vec<String>,
        lease_until: Millis,
    ) -> StoreResult<Vec<DueDelivery>> {
        outbox::claim(&self.pool, now, limit, &skip_endpoints, lease_until).await
    }

    async fn complete(
        &self,
        results: Arc<[AttemptResult]>,
        hand_over: Option<HandOver>,
    ) -> StoreResult<Vec<DueDelivery>> {
        let handed = self.completer.complete(results.clone(), hand_over).await?;
        // Tell the other processes' live watchers (the portal's monitor) about each attempt
        // of an instance one of them watches.
        let watched = results.iter().filter(|r| self.remote.wants(r.instance_id));
        self.notifier.attempts(notices::attempt_payloads(&self.origin, watched));
        Ok(handed)
    }

    async fn prune(&self, events_before: Option<Millis>, keys_before: Millis, limit: u32) -> StoreResult<u32> {
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(keys_before)
            .execute(&self.pool)
            .await?;
        match events_before {
            Some(before) => {
                history::prune_stats(&self.pool, before).await?;
                outbox::prune_events(&self.pool, before, limit).await
            }
            None => Ok(0),
        }
    }

    async fn queue_stats(&self) -> StoreResult<QueueStats> {
        use sqlx::Row;
        let mut stats = QueueStats {
            disabled_endpoints: sqlx::query_scalar("SELECT COUNT(*) FROM endpoints WHERE NOT enabled")
                .fetch_one(&self.pool)
                .await?,
            taken_over: self.taken_over.counts(),
            ..QueueStats::default()
        };
        let rows = sqlx::query(
            "SELECT d.state, COUNT(*) AS n, MIN(e.created_at) AS oldest FROM deliveries d \
             JOIN events e ON e.seq = d.event_seq WHERE d.state IN (0, 1) GROUP BY d.state",
        )
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            let state: i16 = row.try_get("state")?;
            let count: i64 = row.try_get("n")?;
            let oldest: Option<Millis> = row.try_get("oldest")?;
            if state == 0 {
                (stats.waiting, stats.oldest_waiting) = (count, oldest);
            } else {
                (stats.pending, stats.oldest_pending) = (count, oldest);
            }
        }
        Ok(stats)
    }

    async fn latest_event_seq(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM events")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn next_due_at(&self) -> StoreResult<Option<Millis>> {
        Ok(
            sqlx::query_scalar("SELECT MIN(next_at) FROM deliveries WHERE state = 1 AND next_at != $1")
                .bind(outbox::PAUSED)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn start_serving(&self, _now: Millis) -> StoreResult<u64> {
        // Other processes may hold live leases right now: nothing is released here. The
        // leases of processes that are gone (this one's previous life too) are released by
        // the liveness looks, which this process now takes part in.
        let mut liveness = self.liveness.lock().await;
        if liveness.is_none() {
            tokio::join!(
                open::open_warm(&self.pool),
                self.ingest.connection.open_warm(),
                self.completer.connection.open_warm()
            );
            *liveness = Some(
                liveness::Liveness::start(
                    self.pool.clone(),
                    self.options.clone(),
                    self.number,
                    self.taken_over.clone(),
                )
                .await,
            );
        }
        Ok(0)
    }

    async fn reserve_pace(&self, key: &str, interval_us: i64, now_us: i64) -> StoreResult<i64> {
        // One statement: concurrent reservations of one key queue on its row, each moving
        // the next free slot on by one interval.
        Ok(sqlx::query_scalar(
            "INSERT INTO pacing (key, next_at_us) VALUES ($1, $2 + $3) \
             ON CONFLICT (key) DO UPDATE SET next_at_us = GREATEST(pacing.next_at_us, $2) + $3 \
             RETURNING next_at_us - $3",
        )
        .bind(key)
        .bind(now_us)
        .bind(interval_us)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn release_claims(&self, claims: Vec<(i64, Millis)>, next_at: Millis) -> StoreResult<()> {
        let (ids, leases): (Vec<i64>, Vec<Millis>) = claims.into_iter().unzip();
        sqlx::query(
            "UPDATE deliveries d SET lease_until = NULL, lease_owner = NULL, next_at = $3 \
             FROM UNNEST($1::BIGINT[], $2::BIGINT[]) AS c(id, lease_until) \
             WHERE d.id = c.id AND d.state = 1 AND d.lease_until = c.lease_until",
        )
        .bind(ids)
        .bind(leases)
        .bind(next_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    fn watching(&self, instance_id: i64, on: bool) {
        self.watches.watching(instance_id, on);
    }

    fn take_notifications(&self) -> Option<mpsc::UnboundedReceiver<ClusterNotice>> {
        self.notices.lock().expect("notices lock").take()
    }
}

//! The SQLite backend: the zero-configuration default, one file, WAL mode.
//!
//! Writes go through one writer thread that commits in groups (`db`); reads use a pool of
//! read-only connections. With one writer, the store's invariants need nothing more: events
//! get their `seq` (`AUTOINCREMENT`) in commit order, and no two writes decide a queue's head
//! at once. One serving process per database: [`lock_for_serving`] takes an exclusive lock on
//! `<database>.lock` (`File::try_lock`).
//!
//! Durability: WAL mode with `synchronous=FULL` by default, so a commit survives power loss;
//! `--sqlite-synchronous normal` keeps it through a killed process but not a power cut.
//!
//! The SQL lives in one file per subject: `instances.rs` (also the channel switch, the meta
//! instance list and the attention flag), `endpoints.rs` (also `record_health`, which a
//! completion calls for each outcome, and the secret rotation that keeps the previous secret
//! with its end time), `messages.rs` (also the lookup by external id), `outbox.rs` (the
//! delivery queue: enqueue, pause, claim, complete, promote, resend, prune, and the dead list
//! and its bulk resend) and `channel_sends.rs` (the queue of Graph API requests).

mod channel_sends;
mod db;
mod endpoints;
mod history;
mod instances;
mod media;
mod messages;
mod migrations;
mod outbox;
mod templates;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use self::db::Db;
use crate::clock::Millis;
use crate::events::{EventDraft, EventRecord};
use crate::ids;
use crate::instances::{AuthKeyHash, ChannelChange, Credentials, Instance, NewInstance};
use crate::messages::StoredMessage;
use crate::store::SqliteSync;
use crate::store::{
    AttemptRecord, AttemptResult, ChannelSend, ConversationSummary, DeadDelivery, DeadFilter, DeliveryStatus,
    DueDelivery, HandOver, IdempotencyRecord, KeptMedia, MediaFetch, MediaFetchOutcome, NewChannelSend, NewMessage,
    QueueStats, ScheduledStatus, SendOutcome, StatusChange, StatusOutcome, Store, StoreError, StoreResult,
};
use crate::templates::Template;
use crate::webhooks::{Endpoint, EndpointChange, NewEndpoint, SigningSecret};

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    db: Db,
    /// Paced keys' next free slot. Only one process serves an SQLite file, so the pace lives
    /// in memory.
    pacing: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, i64>>>,
}

/// The file a database URL names: `sqlite://PATH`, `sqlite:PATH` or a plain path.
pub fn path_from_url(url: &str) -> StoreResult<PathBuf> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    if path.is_empty() || url.contains("://") && !url.starts_with("sqlite://") {
        return Err(StoreError::UnsupportedUrl(crate::store::redact_url(url)));
    }
    Ok(PathBuf::from(path.split('?').next().unwrap_or(path)))
}

impl SqliteStore {
    /// Opens the database at `path`, creating it and applying migrations as needed.
    pub fn open(path: &Path, sync: SqliteSync, max_pages: Option<u64>) -> StoreResult<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Corrupt(format!("cannot create {}: {e}", dir.display())))?;
        }
        let db = Db::open(path, sync, max_pages, migrations::apply)?;
        Ok(Self {
            db,
            pacing: Default::default(),
        })
    }
}

/// Takes an exclusive lock on `PATH.lock` for the life of the returned file.
pub fn lock_for_serving(path: &Path) -> StoreResult<std::fs::File> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Corrupt(format!("cannot create {}: {e}", dir.display())))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::Corrupt(format!("cannot open {}: {e}", lock_path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(_) => Err(StoreError::InUse(path.display().to_string())),
    }
}

/// A stored value that does not parse, as a row-mapping error.
pub(super) fn corrupt(column: usize, what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, what.into())
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        // Through the writer, so a stuck or dead writer shows as unhealthy.
        self.db.write(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?)).await
    }

    async fn create_instance(&self, new: NewInstance, now: Millis) -> StoreResult<Instance> {
        self.db.write(move |c| instances::create(c, &new, now)).await
    }

    async fn list_instances(&self) -> StoreResult<Vec<Instance>> {
        self.db.read(instances::list).await
    }

    async fn instance_by_app_key(&self, app_key: &str) -> StoreResult<Option<(Instance, AuthKeyHash)>> {
        // Every API call makes this read: it runs where the request is, not on the blocking pool.
        self.db.read_now(|c| instances::by_app_key(c, app_key))
    }

    async fn rotate_keys(&self, instance_id: i64, keys: &Credentials) -> StoreResult<Option<Instance>> {
        let keys = keys.clone();
        self.db
            .write(move |c| instances::rotate_keys(c, instance_id, &keys))
            .await
    }

    async fn instance_by_id(&self, instance_id: i64) -> StoreResult<Option<Instance>> {
        self.db.read(move |c| instances::by_id(c, instance_id)).await
    }

    async fn set_channel(&self, instance_id: i64, change: ChannelChange) -> StoreResult<Option<Instance>> {
        self.db
            .write(move |c| instances::set_channel(c, instance_id, &change))
            .await
    }

    async fn meta_instances(&self) -> StoreResult<Vec<Instance>> {
        self.db.read(instances::meta_list).await
    }

    async fn set_attention(
        &self,
        instance_id: i64,
        attention: Option<String>,
        if_meta: Option<String>,
    ) -> StoreResult<()> {
        self.db
            .write(move |c| instances::set_attention(c, instance_id, attention.as_deref(), if_meta.as_deref()))
            .await
    }

    async fn create_endpoint(&self, new: NewEndpoint, secret: SigningSecret, now: Millis) -> StoreResult<Endpoint> {
        let id = ids::endpoint_id(now);
        self.db
            .write(move |c| endpoints::create(c, &id, &new, &secret, now))
            .await
    }

    async fn list_endpoints(&self, instance_id: i64) -> StoreResult<Vec<Endpoint>> {
        self.db.read(move |c| endpoints::list(c, instance_id)).await
    }

    async fn get_endpoint(&self, instance_id: i64, id: &str) -> StoreResult<Option<Endpoint>> {
        let id = id.to_string();
        self.db.read(move |c| endpoints::get(c, instance_id, &id)).await
    }

    async fn update_endpoint(
        &self,
        instance_id: i64,
        id: &str,
        change: EndpointChange,
        now: Millis,
    ) -> StoreResult<Option<Endpoint>> {
        let id = id.to_string();
        self.db
            .write(move |c| endpoints::update(c, instance_id, &id, &change, now))
            .await
    }

    async fn rotate_endpoint_secret(
        &self,
        instance_id: i64,
        id: &str,
        secret: SigningSecret,
        old_valid_until: Option<Millis>,
        now: Millis,
    ) -> StoreResult<Option<Endpoint>> {
        let id = id.to_string();
        self.db
            .write(move |c| endpoints::rotate_secret(c, instance_id, &id, &secret, old_valid_until, now))
            .await
    }

    async fn delete_endpoint(&self, instance_id: i64, id: &str) -> StoreResult<bool> {
        let id = id.to_string();
        self.db.write(move |c| endpoints::delete(c, instance_id, &id)).await
    }

    async fn record_inbound(
        &self,
        instance_id: i64,
        message: NewMessage,
        event: EventDraft,
        hand_over: Option<HandOver>,
    ) -> StoreResult<Option<(EventRecord, Vec<DueDelivery>)>> {
        self.db
            .write(move |c| {
                if messages::insert(c, instance_id, &message)?.is_none() {
                    return Ok(None);
                }
                Ok(Some(outbox::append(c, instance_id, &event, hand_over)?))
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
        self.db
            .write(move |c| {
                if let Some(key) = &idempotency {
                    messages::forget_idempotent_before(c, instance_id, &key.key, key.expired_before)?;
                    if messages::idempotent_response(c, instance_id, &key.key, key.expired_before)?.is_some() {
                        return Err(StoreError::Conflict(format!(
                            "Idempotency-Key `{}` was used already",
                            key.key
                        )));
                    }
                    messages::remember_idempotent(
                        c,
                        instance_id,
                        &key.key,
                        &key.request_hash,
                        &key.response,
                        message.created_at,
                    )?;
                }
                messages::insert(c, instance_id, &message)?;
                for s in &schedule {
                    messages::schedule(c, s)?;
                }
                if let Some(send) = &channel_send {
                    channel_sends::enqueue(c, send)?;
                }
                events
                    .iter()
                    .map(|e| Ok(outbox::append(c, instance_id, e, None)?.0))
                    .collect()
            })
            .await
    }

    async fn idempotent_response(
        &self,
        instance_id: i64,
        key: &str,
        since: Millis,
    ) -> StoreResult<Option<(String, String)>> {
        let key = key.to_string();
        self.db
            .read(move |c| messages::idempotent_response(c, instance_id, &key, since))
            .await
    }

    async fn apply_status(&self, change: StatusChange) -> StoreResult<StatusOutcome> {
        self.db
            .write(move |c| {
                let Some((_, current)) = messages::outbound_status(c, change.instance_id, &change.message_id)? else {
                    return Ok(StatusOutcome::NotFound);
                };
                messages::drop_scheduled(c, &change.message_id, Some(change.status))?;
                if !current.can_advance_to(change.status) {
                    return Ok(StatusOutcome::Stale(current));
                }
                messages::set_status(c, &change.message_id, change.status)?;
                if !change.status.can_advance_to(crate::messages::MessageStatus::Read) {
                    messages::drop_scheduled(c, &change.message_id, None)?;
                }
                let (record, _) = outbox::append(c, change.instance_id, &change.event, None)?;
                Ok(StatusOutcome::Applied(record))
            })
            .await
    }

    async fn message_by_external_id(
        &self,
        instance_id: i64,
        external_id: &str,
    ) -> StoreResult<Option<(String, String)>> {
        let external_id = external_id.to_string();
        self.db
            .read(move |c| messages::by_external_id(c, instance_id, &external_id))
            .await
    }

    async fn enqueue_channel_send(&self, send: NewChannelSend) -> StoreResult<()> {
        self.db.write(move |c| channel_sends::enqueue(c, &send)).await
    }

    async fn claim_channel_sends(&self, now: Millis, limit: u32, lease_until: Millis) -> StoreResult<Vec<ChannelSend>> {
        self.db
            .write_relaxed(move |c| channel_sends::claim(c, now, limit, lease_until))
            .await
    }

    async fn finish_channel_send(&self, send: &ChannelSend, outcome: SendOutcome) -> StoreResult<()> {
        let send = send.clone();
        self.db.write(move |c| channel_sends::finish(c, &send, &outcome)).await
    }

    async fn next_channel_send_due(&self) -> StoreResult<Option<Millis>> {
        self.db.read(channel_sends::next_due).await
    }

    async fn channel_sends_pending(&self, instance_id: i64) -> StoreResult<bool> {
        self.db.read(move |c| channel_sends::pending(c, instance_id)).await
    }

    async fn get_message(&self, instance_id: i64, message_id: &str) -> StoreResult<Option<StoredMessage>> {
        let message_id = message_id.to_string();
        self.db.read(move |c| messages::get(c, instance_id, &message_id)).await
    }

    async fn list_conversations(
        &self,
        instance_id: i64,
        before: Option<i64>,
        limit: u32,
        search: Option<String>,
    ) -> StoreResult<Vec<ConversationSummary>> {
        self.db
            .read(move |c| messages::list_conversations(c, instance_id, before, limit, search.as_deref()))
            .await
    }

    async fn enqueue_media_fetch(&self, fetch: MediaFetch, due_at: Millis) -> StoreResult<()> {
        self.db.write(move |c| media::enqueue(c, &fetch, due_at)).await
    }

    async fn claim_media_fetches(&self, now: Millis, limit: u32, lease_until: Millis) -> StoreResult<Vec<MediaFetch>> {
        // Looked for four times a second: a read first keeps the writer free when nothing is due.
        if !self.db.read(move |c| media::any_due(c, now)).await? {
            return Ok(Vec::new());
        }
        self.db.write(move |c| media::claim(c, now, limit, lease_until)).await
    }

    async fn finish_media_fetch(&self, fetch: &MediaFetch, outcome: MediaFetchOutcome) -> StoreResult<()> {
        let fetch = fetch.clone();
        self.db.write(move |c| media::finish(c, &fetch, &outcome)).await
    }

    async fn kept_media(&self, instance_id: i64, message_id: &str) -> StoreResult<Option<KeptMedia>> {
        let message_id = message_id.to_string();
        self.db.read(move |c| media::kept(c, instance_id, &message_id)).await
    }

    async fn keep_media(&self, instance_id: i64, media_id: &str, kept: KeptMedia) -> StoreResult<()> {
        let media_id = media_id.to_string();
        self.db
            .write(move |c| media::keep(c, instance_id, &media_id, &kept))
            .await
    }

    async fn has_media(&self, instance_id: i64, key: &str) -> StoreResult<bool> {
        let key = key.to_string();
        self.db.read(move |c| media::exists(c, instance_id, &key)).await
    }

    async fn prune_media(&self, before: Millis) -> StoreResult<u64> {
        self.db.write(move |c| media::prune(c, before)).await
    }

    async fn replace_templates(
        &self,
        instance_id: i64,
        templates: Vec<Template>,
        synced_at: Millis,
    ) -> StoreResult<()> {
        self.db
            .write(move |c| templates::replace(c, instance_id, &templates, synced_at))
            .await
    }

    async fn list_templates(&self, instance_id: i64) -> StoreResult<(Vec<Template>, Option<Millis>)> {
        self.db.read(move |c| templates::list(c, instance_id)).await
    }

    async fn last_inbound_at(&self, instance_id: i64, customer: &str) -> StoreResult<Option<Millis>> {
        let customer = customer.to_string();
        self.db
            .read(move |c| messages::last_inbound_at(c, instance_id, &customer))
            .await
    }

    async fn mark_read(&self, instance_id: i64, customer: &str) -> StoreResult<bool> {
        let customer = customer.to_string();
        self.db
            .write(move |c| messages::mark_read(c, instance_id, &customer))
            .await
    }

    async fn list_messages(
        &self,
        instance_id: i64,
        customer: &str,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<StoredMessage>> {
        let customer = customer.to_string();
        self.db
            .read(move |c| messages::list(c, instance_id, &customer, before, limit))
            .await
    }

    async fn due_statuses(&self, now: Millis, limit: u32) -> StoreResult<Vec<ScheduledStatus>> {
        self.db.read(move |c| messages::due_statuses(c, now, limit)).await
    }

    async fn next_status_due(&self) -> StoreResult<Option<Millis>> {
        self.db.read(messages::next_status_due).await
    }

    async fn drop_scheduled_status(&self, message_id: &str, status: crate::messages::MessageStatus) -> StoreResult<()> {
        let message_id = message_id.to_string();
        self.db
            .write(move |c| messages::drop_scheduled(c, &message_id, Some(status)))
            .await
    }

    async fn list_events(&self, instance_id: i64, after: i64, limit: u32) -> StoreResult<Vec<EventRecord>> {
        self.db
            .read(move |c| outbox::list_events(c, instance_id, after, limit))
            .await
    }

    async fn event_history(
        &self,
        instance_id: i64,
        query: &crate::store::history::EventQuery,
    ) -> StoreResult<Vec<crate::store::history::HistoryEvent>> {
        let query = query.clone();
        self.db
            .read(move |c| history::event_history(c, instance_id, &query))
            .await
    }

    async fn endpoint_activity(
        &self,
        endpoint_id: &str,
        since: Millis,
    ) -> StoreResult<crate::store::attempt_stats::EndpointActivity> {
        let endpoint_id = endpoint_id.to_string();
        self.db
            .read(move |c| history::endpoint_activity(c, &endpoint_id, since))
            .await
    }

    async fn overview(
        &self,
        instance_id: i64,
        since: Millis,
        until: Millis,
    ) -> StoreResult<crate::store::history::OverviewCounts> {
        self.db
            .read(move |c| history::overview(c, instance_id, since, until))
            .await
    }

    async fn get_event(&self, instance_id: i64, event_id: &str) -> StoreResult<Option<EventRecord>> {
        let event_id = event_id.to_string();
        self.db
            .read(move |c| outbox::get_event(c, instance_id, &event_id))
            .await
    }

    async fn list_attempts(&self, event_seq: i64) -> StoreResult<Vec<AttemptRecord>> {
        self.db.read(move |c| outbox::list_attempts(c, event_seq)).await
    }

    async fn delivery_statuses(&self, event_seq: i64) -> StoreResult<Vec<DeliveryStatus>> {
        self.db.read(move |c| outbox::delivery_statuses(c, event_seq)).await
    }

    async fn resend_event(&self, event_seq: i64, endpoint_id: Option<&str>, now: Millis) -> StoreResult<usize> {
        let endpoint_id = endpoint_id.map(str::to_string);
        self.db
            .write(move |c| outbox::resend(c, event_seq, endpoint_id.as_deref(), now))
            .await
    }

    async fn list_dead(
        &self,
        instance_id: i64,
        filter: &DeadFilter,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<DeadDelivery>> {
        let filter = filter.clone();
        self.db
            .read(move |c| outbox::list_dead(c, instance_id, &filter, before, limit))
            .await
    }

    async fn resend_dead(&self, instance_id: i64, filter: &DeadFilter, limit: u32, now: Millis) -> StoreResult<usize> {
        let filter = filter.clone();
        self.db
            .write(move |c| outbox::resend_dead(c, instance_id, &filter, limit, now))
            .await
    }

    async fn record_test_event(
        &self,
        instance_id: i64,
        endpoint_id: &str,
        event: EventDraft,
        lease_until: Millis,
    ) -> StoreResult<DueDelivery> {
        let endpoint_id = endpoint_id.to_string();
        self.db
            .write(move |c| outbox::test_event(c, instance_id, &endpoint_id, &event, lease_until))
            .await
    }

    async fn claim_due(
        &self,
        now: Millis,
        limit: u32,
        skip_endpoints: Vec<String>,
        lease_until: Millis,
    ) -> StoreResult<Vec<DueDelivery>> {
        self.db
            .write_relaxed(move |c| outbox::claim(c, now, limit, &skip_endpoints, lease_until))
            .await
    }

    async fn complete(
        &self,
        results: Arc<[AttemptResult]>,
        hand_over: Option<HandOver>,
    ) -> StoreResult<Vec<DueDelivery>> {
        self.db
            .write_relaxed(move |c| outbox::complete(c, &results, hand_over))
            .await
    }

    async fn prune(&self, events_before: Option<Millis>, keys_before: Millis, limit: u32) -> StoreResult<u32> {
        self.db
            .write(move |c| {
                c.prepare_cached("DELETE FROM idempotency_keys WHERE created_at < ?1")?
                    .execute([keys_before])?;
                match events_before {
                    Some(before) => {
                        history::prune_stats(c, before)?;
                        outbox::prune_events(c, before, limit)
                    }
                    None => Ok(0),
                }
            })
            .await
    }

    async fn queue_stats(&self) -> StoreResult<QueueStats> {
        self.db
            .read(|c| {
                let mut stats = QueueStats {
                    disabled_endpoints: c.query_row("SELECT COUNT(*) FROM endpoints WHERE enabled = 0", [], |r| r.get(0))?,
                    ..QueueStats::default()
                };
                let mut stmt = c.prepare_cached(
                    "SELECT d.state, COUNT(*), MIN(e.created_at) FROM deliveries d JOIN events e ON e.seq = d.event_seq \
                     WHERE d.state IN (0, 1) GROUP BY d.state",
                )?;
                let mut rows = stmt.query([])?;
                while let Some(row) = rows.next()? {
                    let (state, count, oldest): (i64, i64, Option<Millis>) = (row.get(0)?, row.get(1)?, row.get(2)?);
                    if state == 0 {
                        (stats.waiting, stats.oldest_waiting) = (count, oldest);
                    } else {
                        (stats.pending, stats.oldest_pending) = (count, oldest);
                    }
                }
                Ok(stats)
            })
            .await
    }

    async fn latest_event_seq(&self) -> StoreResult<i64> {
        self.db
            .read(|c| Ok(c.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?))
            .await
    }

    async fn next_due_at(&self) -> StoreResult<Option<Millis>> {
        self.db.read(outbox::next_due_at).await
    }

    async fn start_serving(&self, now: Millis) -> StoreResult<u64> {
        self.db.write_relaxed(move |c| outbox::release_all_leases(c, now)).await
    }

    async fn reserve_pace(&self, key: &str, interval_us: i64, now_us: i64) -> StoreResult<i64> {
        let mut pacing = self.pacing.lock().expect("pacing lock");
        let next = pacing.entry(key.to_string()).or_insert(now_us);
        let slot = (*next).max(now_us);
        *next = slot + interval_us;
        Ok(slot)
    }

    async fn release_claims(&self, claims: Vec<(i64, Millis)>, next_at: Millis) -> StoreResult<()> {
        self.db
            .write_relaxed(move |c| outbox::release_claims(c, &claims, next_at))
            .await
    }
}

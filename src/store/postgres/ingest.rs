//! Group commit for customers' messages on PostgreSQL.
//!
//! `record_inbound` is the write every customer message makes, and under load many arrive at
//! once. Each call hands its message to this module's dispatcher, which gathers whatever is
//! queued into a batch and writes the batch in one transaction with a handful of set-based
//! statements (each takes arrays and writes all the batch's rows), then commits once: one
//! WAL flush and a few round trips for dozens of messages instead of for each. No caller is
//! answered before the commit returns, and `synchronous_commit` stays as the server has it,
//! so an answered message is durable.
//!
//! Up to [`WRITERS`] batches are in flight at once, so a batch gathers while another commits.
//! Batches lock their conversations like any other writer (see [`super::append`]), so two
//! batches only wait for each other when they share a conversation.
//!
//! A batch that fails is rolled back and its messages are written again one transaction each,
//! so one bad message does not fail its neighbours. When the database is out of reach (a lost
//! connection, a restart, no connection to be had), the whole batch fails instead: every
//! caller gets the error (a 503) and nothing of the batch was written.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::append::{self, NewEvent};
use crate::events::{EventDraft, EventRecord};
use crate::messages::Direction;
use crate::store::{DueDelivery, HandOver, NewMessage, StoreError, StoreResult};

/// The most messages written in one transaction.
const MAX_BATCH: usize = 256;
/// Batches written at the same time.
const WRITERS: usize = 2;

/// What `record_inbound` answers: the event and the deliveries handed over, or `None` for a
/// message stored before.
pub(super) type Recorded = Option<(EventRecord, Vec<DueDelivery>)>;

/// One customer message waiting for its batch.
pub(super) struct Inbound {
    /// Its instance.
    pub instance_id: i64,
    /// The message.
    pub message: NewMessage,
    /// Its `message` event.
    pub event: EventDraft,
    /// Whether its deliveries may be claimed for the engine.
    pub hand_over: Option<HandOver>,
}

struct Request {
    inbound: Inbound,
    reply: oneshot::Sender<StoreResult<Recorded>>,
}

/// The handle `PgStore` writes customer messages through.
pub(super) struct Ingest {
    requests: mpsc::UnboundedSender<Request>,
}

impl Ingest {
    /// Starts the dispatcher; it ends when the handle is dropped.
    pub(super) fn start(pool: PgPool) -> Self {
        let (requests, queue) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(pool, queue));
        Self { requests }
    }

    /// Stores a message with its event in the next batch and answers once it is committed.
    pub(super) async fn record(&self, inbound: Inbound) -> StoreResult<Recorded> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request { inbound, reply })
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

async fn dispatch(pool: PgPool, mut queue: mpsc::UnboundedReceiver<Request>) {
    let writers = Arc::new(Semaphore::new(WRITERS));
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // Wait for a free writer first: while both write, requests gather into the next batch.
        let Ok(writer) = writers.clone().acquire_owned().await else {
            return;
        };
        if queue.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let pool = pool.clone();
        let requests = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
        tokio::spawn(async move {
            write_and_answer(&pool, requests).await;
            drop(writer);
        });
    }
}

async fn write_and_answer(pool: &PgPool, requests: Vec<Request>) {
    let (inbound, replies): (Vec<Inbound>, Vec<_>) = requests.into_iter().map(|r| (r.inbound, r.reply)).unzip();
    match write_batch(pool, &inbound).await {
        Ok(recorded) => {
            for (reply, answer) in replies.into_iter().zip(recorded) {
                let _ = reply.send(Ok(answer));
            }
        }
        Err(error) if inbound.len() == 1 || error.is_unavailable() => {
            if inbound.len() > 1 {
                tracing::warn!(error = %error, messages = inbound.len(), "postgres batch failed; nothing of it was written");
            }
            let mut error = Some(error);
            for reply in replies {
                // The first caller gets the error itself; the others learn that their write
                // was part of a batch that did not commit (both answer 503).
                let answer = error.take().unwrap_or(StoreError::CommitFailed);
                let _ = reply.send(Err(answer));
            }
        }
        Err(error) => {
            tracing::debug!(error = %error, "postgres batch failed; writing its messages one by one");
            for (one, reply) in inbound.chunks(1).zip(replies) {
                let answer = write_batch(pool, one).await.map(|mut r| r.pop().flatten());
                let _ = reply.send(answer);
            }
        }
    }
}

/// Writes a batch in one transaction; answers each message's outcome in order.
async fn write_batch(pool: &PgPool, batch: &[Inbound]) -> StoreResult<Vec<Recorded>> {
    let mut tx = pool.begin().await?;
    append::lock_conversations(
        &mut tx,
        batch.iter().map(|b| (b.instance_id, b.event.conversation.as_str())),
    )
    .await?;
    let stored = insert_messages(&mut tx, batch).await?;
    let fresh: Vec<NewEvent<'_>> = batch
        .iter()
        .zip(&stored)
        .filter(|(_, stored)| **stored)
        .map(|(b, _)| NewEvent {
            instance_id: b.instance_id,
            draft: &b.event,
            hand_over: b.hand_over,
        })
        .collect();
    let appended = append::append(&mut tx, &fresh).await?;
    super::notify_events(&mut tx, &appended.records).await?;
    tx.commit().await?;

    let mut handed: HashMap<i64, Vec<DueDelivery>> = HashMap::new();
    for due in appended.handed {
        handed.entry(due.event_seq).or_default().push(due);
    }
    let mut records = appended.records.into_iter();
    Ok(stored
        .iter()
        .map(|&stored| {
            let record = records.next().filter(|_| stored)?;
            let due = handed.remove(&record.seq).unwrap_or_default();
            Some((record, due))
        })
        .collect())
}

/// Inserts the batch's messages (a message whose id is stored already is skipped) and moves
/// their conversations to the top; answers, for each, whether it was new.
async fn insert_messages(tx: &mut super::Tx, batch: &[Inbound]) -> StoreResult<Vec<bool>> {
    let n = batch.len();
    let mut ids = Vec::with_capacity(n);
    let (mut instances, mut customers, mut businesses) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut kinds, mut bodies, mut details) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut statuses, mut times, mut directions) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for b in batch {
        let m = &b.message;
        ids.push(m.message_id.as_str());
        instances.push(b.instance_id);
        directions.push(m.direction.as_str());
        customers.push(m.customer.as_str());
        businesses.push(m.business.as_str());
        kinds.push(m.kind.as_str());
        bodies.push(m.body.as_str());
        details.push(serde_json::Value::Object(m.detail.clone()).to_string());
        statuses.push(m.status.as_str());
        times.push(m.created_at);
    }
    let inserted: Vec<(String, i64)> = sqlx::query_as(
        "INSERT INTO messages (id, instance_id, direction, customer, business, kind, body, detail, status, created_at) \
         SELECT * FROM unnest($1::TEXT[], $2::INT8[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], \
                              $8::TEXT[], $9::TEXT[], $10::INT8[]) \
         ON CONFLICT (id) DO NOTHING RETURNING id, seq",
    )
    .bind(&ids)
    .bind(&instances)
    .bind(&directions)
    .bind(&customers)
    .bind(&businesses)
    .bind(&kinds)
    .bind(&bodies)
    .bind(&details)
    .bind(&statuses)
    .bind(&times)
    .fetch_all(&mut **tx)
    .await?;
    let mut seqs: HashMap<&str, i64> = inserted.iter().map(|(id, seq)| (id.as_str(), *seq)).collect();
    // A message id twice in one batch: the first is stored, the second is a repeat.
    let stored: Vec<Option<i64>> = ids.iter().map(|id| seqs.remove(id)).collect();
    update_conversations(tx, batch, &stored).await?;
    Ok(stored.iter().map(Option::is_some).collect())
}

/// Moves each conversation to its newest message of the batch, counts its messages, keeps
/// the newest name, and adds the batch's messages to its unread count (every message here is
/// a customer's: a business's reply, which resets the count, is written by `record_outbound`).
async fn update_conversations(tx: &mut super::Tx, batch: &[Inbound], stored: &[Option<i64>]) -> StoreResult<()> {
    struct Change<'a> {
        name: Option<&'a str>,
        last_seq: i64,
        count: i64,
    }
    let mut changes: HashMap<(i64, &str), Change<'_>> = HashMap::new();
    let mut order = Vec::new();
    for (b, seq) in batch.iter().zip(stored) {
        let Some(seq) = *seq else { continue };
        debug_assert_eq!(b.message.direction, Direction::Inbound);
        let key = (b.instance_id, b.message.customer.as_str());
        let change = changes.entry(key).or_insert_with(|| {
            order.push(key);
            Change {
                name: None,
                last_seq: seq,
                count: 0,
            }
        });
        change.count += 1;
        change.last_seq = change.last_seq.max(seq);
        change.name = b.message.customer_name.as_deref().or(change.name);
    }
    if order.is_empty() {
        return Ok(());
    }
    let (mut instances, mut customers, mut names, mut last, mut counts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for key in &order {
        let change = &changes[key];
        instances.push(key.0);
        customers.push(key.1);
        names.push(change.name);
        last.push(change.last_seq);
        counts.push(change.count);
    }
    sqlx::query(
        "INSERT INTO conversations (instance_id, customer, name, last_seq, message_count, unread) \
         SELECT i, c, n, s, k, k FROM unnest($1::INT8[], $2::TEXT[], $3::TEXT[], $4::INT8[], $5::INT8[]) \
           AS x(i, c, n, s, k) \
         ON CONFLICT (instance_id, customer) DO UPDATE SET \
           last_seq = GREATEST(conversations.last_seq, EXCLUDED.last_seq), \
           message_count = conversations.message_count + EXCLUDED.message_count, \
           name = COALESCE(EXCLUDED.name, conversations.name), \
           unread = conversations.unread + EXCLUDED.unread",
    )
    .bind(&instances)
    .bind(&customers)
    .bind(&names)
    .bind(&last)
    .bind(&counts)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

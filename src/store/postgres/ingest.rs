//! Group commit for customers' messages on PostgreSQL.
//!
//! `record_inbound` is the write every customer message makes, and under load many arrive at
//! once. Each call hands its message to this module's writer, which gathers whatever is
//! queued (up to [`MAX_BATCH`]) into a batch and writes the batch as one transaction in one
//! round trip: a call of the ingest routine ([`ROUTINE`], see `super::routines`), which takes
//! the batch's conversation locks, writes it with one set-based statement and commits: one
//! WAL flush for dozens of messages instead of for each, and no lock held while botlinkd and
//! PostgreSQL wait for each other. No caller is answered before the commit returns, and
//! `synchronous_commit` stays as the server has it, so an answered message is durable. The
//! batch is announced to the other processes after it commits (`super::notifier`), so its
//! commit shares a WAL flush with whatever else commits at that moment.
//!
//! The statement ([`INGEST`] in front of the append, see [`super::append::statement`]) takes
//! the batch as `unnest` arrays and writes the messages (`ON CONFLICT (id) DO NOTHING`, so a
//! repeated wamid is skipped, within the batch as across batches), the conversations
//! (aggregated per conversation), and the events of the new messages with every delivery. The
//! locks come first, as a statement of their own inside the routine, because a statement
//! reads with the snapshot it started with: one that waited for a lock inside itself would not
//! see the previous lock holder's deliveries.
//!
//! **A thread of its own.** The writer runs on an OS thread of its own (`botlinkd-ingest`)
//! with a connection of its own (`super::own_thread`), as SQLite's writer does. On the request
//! runtime it waited behind the request handlers between one batch's answer and the next
//! batch's call, while the backend that writes the batches sat idle; on its own thread, W1 on
//! one process delivered about 14 % more at less CPU per event, in 11 of 12 alternating pairs
//! (docs/perf-log.md, ninth sitting).
//!
//! One batch is in flight at a time per process: the next one gathers while it commits. (Two
//! in flight, unpartitioned, made each batch smaller and waited on each other's conversation
//! locks; two lanes partitioned by conversation measured within the noise on the 2-core
//! bench machine, where the CPU, not the writer, is what runs out. See docs/perf-log.md.)
//!
//! Batches lock their conversations like any other writer (see [`super::append`]), so batches
//! of several processes only wait for each other when they share a conversation.
//!
//! A batch that fails is rolled back and its messages are written again one call each, so one
//! bad message does not fail its neighbours. (The routine commits before it answers, so an
//! answer that could not be read would report a committed batch as failed; the answer's types
//! are the routine's own `RETURNS TABLE`, checked by every ingest test.) Should the routine be
//! missing, it is created again and the batch written with it. When the database is out of reach (a lost
//! connection, a restart, no connection to be had), the whole batch fails instead: every
//! caller gets the error (a 503) and nothing of the batch was written, or, for a connection
//! lost while the commit was under way, all of it was; a client's retry with the same wamid or
//! Idempotency-Key settles it.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use sqlx::postgres::PgConnectOptions;
use sqlx::{PgPool, Row};
use tokio::sync::{mpsc, oneshot};

use super::append::{self, NewEvent};
use super::notifier::Notifier;
use super::own_thread::{self, OwnConnection};
use super::routines::{self, Routine};
use crate::events::{EventDraft, EventRecord};
use crate::messages::Direction;
use crate::store::{DueDelivery, HandOver, NewMessage, StoreError, StoreResult};

/// The most messages written in one transaction.
const MAX_BATCH: usize = 256;

/// The writer's thread, and how its connection shows in `pg_stat_activity`.
const APPLICATION_NAME: &str = "botlinkd-ingest";

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
    /// The writer thread's connection.
    pub connection: OwnConnection,
}

/// Where a batch is written and announced.
struct Writer {
    pool: PgPool,
    notifier: Arc<Notifier>,
}

impl Ingest {
    /// Starts the writer on a thread of its own (see `super::own_thread`), with a connection
    /// made with `options`. The thread ends when the handle is dropped.
    pub(super) fn start(options: PgConnectOptions, notifier: Arc<Notifier>) -> StoreResult<Self> {
        let (requests, queue) = mpsc::unbounded_channel();
        let connection = own_thread::start(APPLICATION_NAME, options, move |pool| {
            run(Writer { pool, notifier }, queue)
        })?;
        Ok(Self { requests, connection })
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

/// Writes whatever is queued as one batch, then the next, until the handle is dropped. While
/// a batch is written, the next gathers.
async fn run(writer: Writer, mut queue: mpsc::UnboundedReceiver<Request>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let requests = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
        write_and_answer(&writer, requests).await;
    }
}

async fn write_and_answer(writer: &Writer, requests: Vec<Request>) {
    let (inbound, replies): (Vec<Inbound>, Vec<_>) = requests.into_iter().map(|r| (r.inbound, r.reply)).unzip();
    match write_batch(writer, &inbound).await {
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
                let answer = write_batch(writer, one).await.map(|mut r| r.pop().flatten());
                let _ = reply.send(answer);
            }
        }
    }
}

/// The ingest transaction as a function (see `super::routines`): the batch's conversation
/// locks, then the statement (see [`INGEST`]); called on its own, it commits before it answers.
pub(super) static ROUTINE: LazyLock<Routine> = LazyLock::new(|| {
    let statement = append::statement(INGEST, "i.idx IN (SELECT idx FROM fresh)", FRESH);
    Routine::new(
        "botlinkd_ingest",
        "INT8[], TEXT[], INT8[], TEXT[], TEXT[], TEXT[], INT8[], INT2[], INT8[], INT8[], INT8, \
         TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], TEXT[], INT8[], TEXT[]",
        &format!("fresh INT8[], {}", append::ANSWER_TYPES),
        "",
        &format!("{LOCKS} RETURN QUERY {statement};"),
    )
});

/// The conversation locks of the batch's events (instance `$3`, conversation `$5`), in key
/// order, as `append::lock_conversations` takes them.
const LOCKS: &str = "PERFORM pg_advisory_xact_lock(k) FROM ( \
  SELECT DISTINCT hashtextextended(c, i) AS k FROM unnest($5, $3) AS u(c, i) ORDER BY k) AS keys;";

/// Writes a batch in one transaction, one call of [`ROUTINE`], and announces it. Answers each
/// message's outcome in order.
async fn write_batch(writer: &Writer, batch: &[Inbound]) -> StoreResult<Vec<Recorded>> {
    let events: Vec<NewEvent<'_>> = batch
        .iter()
        .map(|b| NewEvent {
            instance_id: b.instance_id,
            draft: &b.event,
            hand_over: b.hand_over,
        })
        .collect();
    let event_columns = append::Columns::new(&events);
    let message_columns = MessageColumns::new(batch);
    let call = || routine_call(&event_columns, &message_columns).fetch_all(&writer.pool);
    let rows = match call().await {
        // The routine is gone (dropped by hand, or a restore without functions): make it
        // again and write the batch with it.
        Err(error) if routines::is_missing(&error) => {
            tracing::warn!(routine = %ROUTINE.name, "postgres ingest routine missing; creating it again");
            routines::reinstall(&writer.pool).await?;
            call().await?
        }
        rows => rows?,
    };
    let fresh: Vec<i64> = rows
        .first()
        .map(|row| row.try_get::<Option<Vec<i64>>, _>("fresh"))
        .transpose()?
        .flatten()
        .unwrap_or_default();
    let stored = |index: usize| fresh.binary_search(&(index as i64)).is_ok();
    let appended = append::read_appended(&rows, &events, stored)?;
    writer.notifier.events(appended.newest);

    let mut handed: HashMap<i64, Vec<DueDelivery>> = HashMap::new();
    for due in appended.handed {
        handed.entry(due.event_seq).or_default().push(due);
    }
    let mut records = appended.records.into_iter();
    Ok((0..batch.len())
        .map(|index| {
            if !stored(index) {
                return None;
            }
            let record = records.next()?;
            let due = handed.remove(&record.seq).unwrap_or_default();
            Some((record, due))
        })
        .collect())
}

/// The call of [`ROUTINE`] with a batch's columns bound.
fn routine_call<'q>(events: &'q append::Columns<'q>, messages: &'q MessageColumns<'q>) -> append::PgQuery<'q> {
    static CALL: LazyLock<String> = LazyLock::new(|| ROUTINE.call(21));
    messages.bind(events.bind(sqlx::query(&CALL)))
}

/// Calls [`ROUTINE`] with an empty batch on `connection`, as `super::routines::warm_up` does
/// for a new connection inside a transaction it rolls back: the same statement and parameter
/// types as a real batch, so the connection keeps both the prepared call and the routine's plans.
pub(super) async fn call_empty(connection: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    let (events, messages) = (append::Columns::new(&[]), MessageColumns::new(&[]));
    routine_call(&events, &messages).fetch_all(connection).await?;
    Ok(())
}

/// The batch's messages and conversations, ahead of its events (see [`append::statement`]).
/// `first` keeps one message per id (the earliest of the batch; a later one is a repeat);
/// `kept` stores those not stored before; `fresh` are the batch indexes of the new ones,
/// whose events the append then writes; `talks` moves each conversation to its newest
/// message, counts its messages, keeps the newest name and the customer's latest message
/// time (the service window), and adds them to its unread count
/// (every message here is a customer's: a business's reply, which resets the count, is
/// written by `record_outbound`).
const INGEST: &str = "\
m AS ( \
  SELECT * FROM unnest($1::INT8[], $12::TEXT[], $3::INT8[], $13::TEXT[], $14::TEXT[], $15::TEXT[], $16::TEXT[], \
                       $17::TEXT[], $18::TEXT[], $19::TEXT[], $20::INT8[], $21::TEXT[]) \
    AS m(idx, id, inst, dir, customer, business, kind, body, detail, status, at, name)), \
first AS (SELECT DISTINCT ON (id) * FROM m ORDER BY id, idx), \
kept AS ( \
  INSERT INTO messages (id, instance_id, direction, customer, business, kind, body, detail, status, created_at) \
  SELECT id, inst, dir, customer, business, kind, body, detail, status, at FROM first ORDER BY idx \
  ON CONFLICT (id) DO NOTHING RETURNING id, seq), \
fresh AS (SELECT f.idx, f.inst, f.customer, f.name, f.at, k.seq FROM kept k JOIN first f ON f.id = k.id), \
talks AS ( \
  INSERT INTO conversations (instance_id, customer, name, last_seq, message_count, unread, last_inbound_at) \
  SELECT inst, customer, (array_agg(name ORDER BY idx DESC) FILTER (WHERE name IS NOT NULL))[1], \
         max(seq), count(*), count(*), max(at) \
  FROM fresh GROUP BY inst, customer \
  ON CONFLICT (instance_id, customer) DO UPDATE SET \
    last_seq = GREATEST(conversations.last_seq, EXCLUDED.last_seq), \
    message_count = conversations.message_count + EXCLUDED.message_count, \
    name = COALESCE(EXCLUDED.name, conversations.name), \
    unread = conversations.unread + EXCLUDED.unread, \
    last_inbound_at = GREATEST(conversations.last_inbound_at, EXCLUDED.last_inbound_at)),";

/// The batch indexes of the new messages, in order.
const FRESH: &str = "(SELECT array_agg(idx ORDER BY idx) FROM fresh) AS fresh,";

/// The batch's messages as the ingest statement's parallel arrays (`$12` to `$21`; the
/// index and instance are the events' `$1` and `$3`).
struct MessageColumns<'a> {
    ids: Vec<&'a str>,
    directions: Vec<&'static str>,
    customers: Vec<&'a str>,
    businesses: Vec<&'a str>,
    kinds: Vec<&'a str>,
    bodies: Vec<&'a str>,
    details: Vec<String>,
    statuses: Vec<&'static str>,
    times: Vec<i64>,
    names: Vec<Option<&'a str>>,
}

impl<'a> MessageColumns<'a> {
    fn new(batch: &'a [Inbound]) -> Self {
        let mut c = Self {
            ids: Vec::with_capacity(batch.len()),
            directions: Vec::with_capacity(batch.len()),
            customers: Vec::with_capacity(batch.len()),
            businesses: Vec::with_capacity(batch.len()),
            kinds: Vec::with_capacity(batch.len()),
            bodies: Vec::with_capacity(batch.len()),
            details: Vec::with_capacity(batch.len()),
            statuses: Vec::with_capacity(batch.len()),
            times: Vec::with_capacity(batch.len()),
            names: Vec::with_capacity(batch.len()),
        };
        for b in batch {
            let m = &b.message;
            debug_assert_eq!(m.direction, Direction::Inbound);
            c.ids.push(m.message_id.as_str());
            c.directions.push(m.direction.as_str());
            c.customers.push(m.customer.as_str());
            c.businesses.push(m.business.as_str());
            c.kinds.push(m.kind.as_str());
            c.bodies.push(m.body.as_str());
            c.details.push(serde_json::Value::Object(m.detail.clone()).to_string());
            c.statuses.push(m.status.as_str());
            c.times.push(m.created_at);
            c.names.push(m.customer_name.as_deref());
        }
        c
    }

    fn bind<'q>(&'q self, query: append::PgQuery<'q>) -> append::PgQuery<'q> {
        query
            .bind(&self.ids)
            .bind(&self.directions)
            .bind(&self.customers)
            .bind(&self.businesses)
            .bind(&self.kinds)
            .bind(&self.bodies)
            .bind(&self.details)
            .bind(&self.statuses)
            .bind(&self.times)
            .bind(&self.names)
    }
}

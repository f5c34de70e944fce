//! Appending events to the outbox on PostgreSQL without an instance-wide lock: the feed
//! position each event gets, the conversation locks that keep each delivery queue in order,
//! and the one statement that writes a set of events with all their deliveries.
//!
//! **Feed positions follow commit order.** An event's `seq` is `xid << FEED_SHIFT | index`:
//! the writing transaction's id (`pg_current_xact_id()`) and the event's place among the
//! events that transaction writes (numbered from 0; a transaction appends once). A reader
//! takes only events whose transaction id lies below the oldest transaction still running
//! (`pg_snapshot_xmin` of its own snapshot, see [`super::outbox::list_events`]). Every
//! transaction below that horizon has finished, so everything the reader returns is final,
//! and every event committed later belongs to a transaction at or above the horizon and so
//! sorts after all of it. A cursor therefore never skips an event and never meets one twice,
//! however commits interleave (even when a transaction that started first, and so holds the
//! lower positions, commits last), and writers of one instance do not wait for each other.
//!
//! A committed event above the horizon is held back until the older transactions end. They
//! are short writes, and the read waits for them (polling from 1 ms, up to 2 s) so that a
//! reader woken by an event's notice finds it. Should something hold a transaction open longer
//! (a long transaction in another database of the same cluster counts too, since transaction
//! ids are cluster-wide), readers wait up to 2 s per read and then return what is final;
//! `idle_in_transaction_session_timeout` bounds such a transaction.
//!
//! This was chosen over the two other known designs. A per-process writer that takes an
//! instance lock once per batch still serialises every process's commits for an instance (the
//! cap this replaced); a sequence with a gap-aware reader needs the same visibility
//! information to tell a gap that will fill from one that never will (a rolled-back
//! transaction), plus a timeout. Positions stay one integer, so cursors stay opaque strings
//! and the `Store` trait did not change. Events written before migration `0004` keep their
//! sequence numbers, which are far below any transaction id shifted by 20 bits.
//!
//! **Delivery queues stay in order under a conversation lock.** Appending decides whether a
//! delivery is the head of its (endpoint, conversation) queue or waits behind it, and a
//! completion promotes the next waiting one; two transactions doing this at once for one
//! queue could both see it empty, or a promotion could miss a delivery appended beside it. So
//! both take a transaction-scoped advisory lock on the conversation
//! (`hashtextextended(conversation, instance_id)`), always all of a transaction's keys at once
//! and in ascending order, so two writers never wait for each other in a circle. Record
//! inbound (a whole batch's conversations), record outbound, apply a status, resend (one
//! event, or a bulk resend's conversations) and a test event take them before their first
//! write ([`lock_conversations`]); a completion takes those of its outcomes after recording
//! its attempts and endpoint health, which touch no queue, and before it moves any delivery.
//! A transaction that waits for a lock before its first write has no transaction id yet, so
//! the writer of a conversation's next event gets a larger id, and a conversation's events
//! keep one order in its queue and in the feed. The unique partial index `deliveries_one_head
//! (endpoint_id, conversation) WHERE state = 1` is the backstop: a mistake fails a write
//! instead of making a second head. A hash collision only makes two conversations wait for
//! each other.
//!
//! **The append statement** ([`statement`]) writes the events, places each delivery (the first
//! of the append to a queue is its head when the queue has nothing unfinished), pauses those
//! of disabled endpoints, leases up to a hand-over's limit of an event's deliveries to enabled
//! endpoints (heads leased; waiting ones returned with `after`, the delivery they follow), and
//! answers each instance's newest position, which the caller announces on `botlinkd_events`
//! once it has committed (see `super::notifier`).

use std::sync::{Arc, LazyLock};

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::Tx;
use super::outbox::PAUSED;
use crate::clock::Millis;
use crate::events::{EventDraft, EventRecord};
use crate::store::{DueDelivery, HandOver, StoreError, StoreResult};
use crate::webhooks::SigningSecret;

/// Bits of a feed position left for the event's index within its transaction (so one
/// transaction may append up to about a million events).
pub(super) const FEED_SHIFT: u32 = 20;

/// Takes the advisory locks of these conversations (instance, customer) for the rest of the
/// transaction, in ascending key order. Call it before the transaction's first write, so
/// that a transaction that waits here has no transaction id yet and gets one only after the
/// conversation's previous writer committed.
pub(super) async fn lock_conversations<'a>(
    tx: &mut Tx,
    conversations: impl IntoIterator<Item = (i64, &'a str)>,
) -> StoreResult<()> {
    let (instances, customers): (Vec<i64>, Vec<&str>) = conversations.into_iter().unzip();
    if instances.is_empty() {
        return Ok(());
    }
    // The sort happens in the subquery; its ORDER BY keeps it from being flattened, so the
    // locks are taken in that order.
    sqlx::query(
        "SELECT pg_advisory_xact_lock(k) FROM ( \
           SELECT DISTINCT hashtextextended(c, i) AS k FROM unnest($1::TEXT[], $2::INT8[]) AS u(c, i) ORDER BY k \
         ) AS keys",
    )
    .bind(customers)
    .bind(instances)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One event to append.
pub(super) struct NewEvent<'a> {
    /// Its instance.
    pub instance_id: i64,
    /// The event.
    pub draft: &'a EventDraft,
    /// Whether its new deliveries may be claimed by this write for the engine.
    pub hand_over: Option<HandOver>,
}

/// An instance's newest position after a write, and whether the write left a delivery due for
/// a claim loop: what [`super::notifier::Notifier::events`] announces once it has committed.
pub(super) type Newest = (i64, i64, bool);

/// What an append wrote: the events, in the order given, and the deliveries it handed over.
pub(super) struct Appended {
    /// The stored events.
    pub records: Vec<EventRecord>,
    /// Claimed deliveries (heads) and deliveries that follow another (`after` set, not leased).
    pub handed: Vec<DueDelivery>,
    /// What to announce once the transaction commits, per instance.
    pub newest: Vec<Newest>,
}

/// Appends events with a delivery for each endpoint whose filter accepts them, in one
/// statement; the caller announces `newest` once it has committed. A delivery is the head of its queue (`pending`) when nothing of its queue is
/// unfinished and no earlier event of this append goes to the same queue; otherwise it waits
/// behind. A disabled endpoint's deliveries are paused. With a hand-over, up to its limit of
/// an event's deliveries to enabled endpoints are returned: heads already leased, and
/// waiting ones with the delivery they follow in `after`.
///
/// Call it at most once per transaction (the events' indexes start at 0), after
/// [`lock_conversations`] for every event's conversation.
pub(super) async fn append<'a>(tx: &mut Tx, events: &[NewEvent<'a>]) -> StoreResult<Appended> {
    if events.is_empty() {
        return Ok(Appended {
            records: Vec::new(),
            handed: Vec::new(),
            newest: Vec::new(),
        });
    }
    static APPEND: LazyLock<String> = LazyLock::new(|| statement("", "", ""));
    let columns = Columns::new(events);
    let rows = columns.bind(sqlx::query(&APPEND)).fetch_all(&mut **tx).await?;
    read_appended(&rows, events, |_| true)
}

/// The text of an append statement (see [`append`]): `before` adds CTEs ahead of the
/// events' `input`, `filter` a condition on each event row `i` (its index is `i.idx`), and
/// `columns` more columns to the answer. The events take parameters `$1` to `$11`
/// (see [`Columns::bind`]); whatever the additions use comes after.
pub(super) fn statement(before: &str, filter: &str, columns: &str) -> String {
    let filter = if filter.is_empty() {
        String::new()
    } else {
        format!("WHERE {filter}")
    };
    format!("WITH {before} input AS ({INPUT} {filter}), {APPEND_CTES} SELECT {columns} {APPEND_ANSWER}")
}

/// Reads what an append statement answered into its events' records (of those `stored`
/// says were written, by index into `events`) and the deliveries it handed over.
pub(super) fn read_appended(
    rows: &[PgRow],
    events: &[NewEvent<'_>],
    stored: impl Fn(usize) -> bool,
) -> StoreResult<Appended> {
    let first = rows
        .first()
        .ok_or_else(|| StoreError::Corrupt("append returned no row".into()))?;
    let xid: i64 = first.try_get("xid")?;
    let instances: Vec<i64> = first.try_get::<Option<_>, _>("newest_instances")?.unwrap_or_default();
    let seqs: Vec<i64> = first.try_get::<Option<_>, _>("newest_seqs")?.unwrap_or_default();
    let due: Vec<bool> = first.try_get::<Option<_>, _>("newest_due")?.unwrap_or_default();
    let newest = instances
        .into_iter()
        .zip(seqs)
        .zip(due)
        .map(|((i, s), d)| (i, s, d))
        .collect();
    let position = |index: usize| (xid << FEED_SHIFT) | index as i64;
    let records: Vec<EventRecord> = events
        .iter()
        .enumerate()
        .filter(|(index, _)| stored(*index))
        .map(|(index, e)| EventRecord {
            seq: position(index),
            id: e.draft.id.clone(),
            instance_id: e.instance_id,
            kind: e.draft.kind,
            conversation: e.draft.conversation.clone(),
            payload: e.draft.payload.clone(),
            created_at: e.draft.created_at,
        })
        .collect();
    let mut handed = Vec::new();
    let mut payloads: Vec<Option<Arc<str>>> = vec![None; events.len()];
    for row in rows {
        let Some(delivery_id) = row.try_get::<Option<i64>, _>("id")? else {
            continue;
        };
        let index = (row.try_get::<i64, _>("event_seq")? - (xid << FEED_SHIFT)) as usize;
        let event = events
            .get(index)
            .ok_or_else(|| StoreError::Corrupt("append returned an unknown event".into()))?;
        let state: i16 = row.try_get("state")?;
        let secret: String = row.try_get("secret")?;
        let payload = payloads[index]
            .get_or_insert_with(|| Arc::from(event.draft.payload.as_str()))
            .clone();
        handed.push(DueDelivery {
            delivery_id,
            event_seq: position(index),
            event_id: event.draft.id.clone(),
            instance_id: event.instance_id,
            endpoint_id: row.try_get("endpoint_id")?,
            url: row.try_get("url")?,
            secret: SigningSecret::parse(&secret).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            previous_secret: row
                .try_get::<Option<String>, _>("previous_secret")?
                .and_then(|p| SigningSecret::parse(&p).ok()),
            rate_limit: super::outbox::rate_limit(row)?,
            payload,
            attempt: 1,
            failures: 0,
            lease_until: row.try_get::<Option<Millis>, _>("lease_until")?.unwrap_or(0),
            after: if state == 0 { row.try_get("after")? } else { None },
        });
    }
    Ok(Appended {
        records,
        handed,
        newest,
    })
}

/// The events of an append, numbered in the transaction: each event's feed position is the
/// transaction id and its index (`idx`).
const INPUT: &str = "\
SELECT (pg_current_xact_id()::TEXT::INT8 << 20) | i.idx AS seq, i.* \
FROM unnest($1::INT8[], $2::TEXT[], $3::INT8[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::INT8[], $8::INT2[], \
            $9::INT8[], $10::INT8[]) \
     AS i(idx, id, inst, kind, conv, payload, at, bit, hand_limit, lease)";

/// The rest of the append: `stored` writes the events; `placed` decides each delivery's
/// place in its queue (the first of this append to a queue is its head when the queue has
/// nothing unfinished); `inserted` numbers deliveries in event order, so a queue's row ids
/// follow its events; `handed` pairs each waiting delivery with the one ahead of it;
/// `newest` is each instance's newest position, `due` unless every head went to this
/// process's engine (nothing left for a claim loop).
const APPEND_CTES: &str = "\
stored AS ( \
  INSERT INTO events (seq, id, instance_id, kind, conversation, payload, created_at) \
  SELECT seq, id, inst, kind, conv, payload, at FROM input), \
placed AS ( \
  SELECT t.*, t.first AND t.tail IS NULL AS head FROM ( \
    SELECT i.seq, i.conv, i.at, i.lease, ep.id AS endpoint_id, ep.enabled, \
           row_number() OVER (PARTITION BY ep.id, i.conv ORDER BY i.seq) = 1 AS first, \
           (SELECT max(d.id) FROM deliveries d WHERE d.endpoint_id = ep.id AND d.conversation = i.conv \
              AND d.state IN (0, 1)) AS tail, \
           ep.enabled AND row_number() OVER (PARTITION BY i.seq ORDER BY ep.id) <= i.hand_limit AS handed \
    FROM input i JOIN endpoints ep ON ep.instance_id = i.inst AND (ep.events & i.bit) <> 0) AS t), \
inserted AS ( \
  INSERT INTO deliveries (event_seq, endpoint_id, conversation, state, next_at, lease_until, lease_owner) \
  SELECT seq, endpoint_id, conv, CASE WHEN head THEN 1 ELSE 0 END, \
         CASE WHEN NOT enabled THEN $11 WHEN head AND handed THEN lease ELSE at END, \
         CASE WHEN head AND handed THEN lease END, CASE WHEN head AND handed THEN botlinkd_process() END \
  FROM placed ORDER BY seq, endpoint_id \
  RETURNING id, event_seq, endpoint_id, conversation, state, lease_until), \
handed AS ( \
  SELECT d.id, d.event_seq, d.endpoint_id, d.state, d.lease_until, \
         COALESCE(lag(d.id) OVER (PARTITION BY d.endpoint_id, d.conversation ORDER BY d.id), p.tail) AS after, \
         p.handed, ep.url, ep.secret, \
         CASE WHEN ep.previous_secret_until > p.at THEN ep.previous_secret END AS previous_secret, ep.rate_limit \
  FROM inserted d JOIN placed p ON p.seq = d.event_seq AND p.endpoint_id = d.endpoint_id \
  JOIN endpoints ep ON ep.id = d.endpoint_id), \
newest AS ( \
  SELECT i.inst, max(i.seq) AS seq, COALESCE(bool_or(p.head AND p.enabled AND NOT p.handed), FALSE) AS due \
  FROM input i LEFT JOIN placed p ON p.seq = i.seq GROUP BY i.inst)";

/// The answer: always one row with the transaction id (`xid`) and the instances' newest
/// positions, then one per delivery handed over.
const APPEND_ANSWER: &str = "\
pg_current_xact_id()::TEXT::INT8 AS xid, \
(SELECT array_agg(inst) FROM newest) AS newest_instances, (SELECT array_agg(seq) FROM newest) AS newest_seqs, \
(SELECT array_agg(due) FROM newest) AS newest_due, h.* \
FROM (SELECT 1) AS one LEFT JOIN handed h ON h.handed";

/// The columns of an append statement's answer and their types (`RETURNS TABLE` of a routine
/// that ends in one, see `super::routines`).
pub(super) const ANSWER_TYPES: &str = "xid INT8, newest_instances INT8[], newest_seqs INT8[], newest_due BOOL[], \
id INT8, event_seq INT8, endpoint_id TEXT, state INT2, lease_until INT8, after INT8, handed BOOL, \
url TEXT, secret TEXT, previous_secret TEXT, rate_limit INT4";

/// A query with its parameters.
pub(super) type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// The events of an append as the statement's parallel arrays.
pub(super) struct Columns<'a> {
    index: Vec<i64>,
    id: Vec<&'a str>,
    instance: Vec<i64>,
    kind: Vec<&'static str>,
    conversation: Vec<&'a str>,
    payload: Vec<&'a str>,
    created_at: Vec<Millis>,
    bit: Vec<i16>,
    hand_limit: Vec<i64>,
    lease: Vec<Option<Millis>>,
}

impl<'a> Columns<'a> {
    /// The columns of these events, each indexed by its place in the slice.
    pub(super) fn new(events: &[NewEvent<'a>]) -> Self {
        let mut columns = Self::with_capacity(events.len());
        for (index, e) in events.iter().enumerate() {
            columns.push(index as i64, e);
        }
        columns
    }

    /// Binds `$1` to `$11` of an append statement.
    pub(super) fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.index)
            .bind(&self.id)
            .bind(&self.instance)
            .bind(&self.kind)
            .bind(&self.conversation)
            .bind(&self.payload)
            .bind(&self.created_at)
            .bind(&self.bit)
            .bind(&self.hand_limit)
            .bind(&self.lease)
            .bind(PAUSED)
    }

    fn with_capacity(n: usize) -> Self {
        Self {
            index: Vec::with_capacity(n),
            id: Vec::with_capacity(n),
            instance: Vec::with_capacity(n),
            kind: Vec::with_capacity(n),
            conversation: Vec::with_capacity(n),
            payload: Vec::with_capacity(n),
            created_at: Vec::with_capacity(n),
            bit: Vec::with_capacity(n),
            hand_limit: Vec::with_capacity(n),
            lease: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, index: i64, e: &NewEvent<'a>) {
        self.index.push(index);
        self.id.push(&e.draft.id);
        self.instance.push(e.instance_id);
        self.kind.push(e.draft.kind.as_str());
        self.conversation.push(&e.draft.conversation);
        self.payload.push(&e.draft.payload);
        self.created_at.push(e.draft.created_at);
        self.bit.push(i16::from(e.draft.kind.bit()));
        self.hand_limit.push(e.hand_over.map_or(0, |h| h.limit as i64));
        self.lease.push(e.hand_over.map(|h| h.lease_until));
    }
}

//! Recording attempt outcomes on PostgreSQL, a batch at a time with set-based statements.
//!
//! The rules are the same as on SQLite (see [`crate::store::rules`]): an outcome moves its
//! delivery only while the delivery still carries the lease the attempt was made under; a
//! success makes it delivered, a failure schedules a retry (or pauses it when its endpoint is
//! disabled), and an exhausted schedule makes it dead; a delivered or dead head promotes the
//! oldest waiting delivery of its queue. A promoted delivery the engine already started as a
//! follower gets the follower's lease instead of becoming due.
//!
//! Batches are written one after another on a thread of the completer's own
//! (`botlinkd-completer`, with a connection of its own, see `super::own_thread`), as the
//! engine's completer sends them: the answer wakes it at once instead of waiting for a worker
//! of the request runtime. That bought W3 (fan-out) about 8 % and one conversation's W5 about
//! 11 % in alternating pairs (docs/perf-log.md, ninth sitting).
//!
//! A batch is one transaction (`PgStore::complete` announces its attempts to the other
//! processes once it has committed): one statement inserts the attempts and names the
//! endpoints whose health may change; their health is written outcome by outcome in
//! endpoint-id order, only when something changes; then the conversations of the outcomes are
//! locked, and only then are deliveries moved (see the lock order in `super`). The moves take
//! the expected state as a column of the outcomes rather than as SQL text, so the planner
//! reaches each row by its primary key rather than through the partial index of pending heads.
//! With a hand-over, the promoted heads that are due are leased by the promotion itself (which
//! also takes the state it expects as a column) and returned for the engine.
//!
//! **Two ways to send it.** Nearly every batch is all successes, and such a batch is one call
//! of a PL/pgSQL routine ([`ROUTINE`], see `super::routines`), commit included: one round trip
//! instead of six or more (`BEGIN`, attempts, locks, moves, promotion, `COMMIT`, and more for a
//! chain or for health), and the conversations stay locked only while the database works, not
//! while botlinkd's runtime gets round to the next statement. It shares the attempts, lock and
//! promotion statements' text with the steps; its health step (which only ever clears
//! `failing_since`, locking the endpoints in the steps' bytewise id order) and its two moves
//! (the delivered state written as such) are its own, so a change to the guards of
//! [`move_deliveries`] must be made in both. A batch with a failure may disable an endpoint, whose
//! reason is worded by Rust (`rules`, shared with SQLite), so it goes statement by statement
//! in a transaction begun by `super::begin_hot`.
//!
//! A batch may hold a follower's outcome together with the outcome of the delivery it
//! followed (under load, whole chains: a busy conversation's events each start the moment the
//! one before succeeds). A follower's row is still `waiting` until its leader's completion
//! promotes it, and promoting it only to finish it in the same transaction would cost two
//! statements per link. So a batch is written in two moves and one promotion: first every
//! outcome whose delivery follows no other outcome of the batch (guarded by its lease); then,
//! in one statement, every follower whose leader was moved and succeeded, straight from
//! `waiting` (guarded by that state: its leader was its queue's head until a moment ago, and
//! the conversation is locked); then the next delivery of each queue whose last moved delivery
//! finished becomes the head.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};

use sqlx::postgres::PgConnectOptions;
use sqlx::{PgPool, Row};
use tokio::sync::{mpsc, oneshot};

use super::Tx;
use super::own_thread::{self, OwnConnection};
use super::routines::{self, Routine};
use crate::clock::Millis;
use crate::store::attempt_stats;
use crate::store::rules::{self, DeliveryState, PAUSED};
use crate::store::{AttemptResult, DueDelivery, HandOver, StoreError, StoreResult};

/// The completer's thread, and how its connection shows in `pg_stat_activity`.
const APPLICATION_NAME: &str = "botlinkd-completer";

/// A batch of outcomes waiting for the completer's thread.
struct Completion {
    results: Arc<[AttemptResult]>,
    hand_over: Option<HandOver>,
    reply: oneshot::Sender<StoreResult<Vec<DueDelivery>>>,
}

/// The handle `PgStore` records outcomes through: [`complete`] on a thread of its own (see
/// `super::own_thread`), one batch after another, as the engine's completer sends them.
pub(super) struct Completer {
    requests: mpsc::UnboundedSender<Completion>,
    /// The completer thread's connection.
    pub connection: OwnConnection,
}

impl Completer {
    /// Starts the completer's thread with a connection made with `options`; `stats_writer`
    /// is this process's row key in `attempt_stats`. The thread ends when the handle is dropped.
    pub(super) fn start(options: PgConnectOptions, stats_writer: i32) -> StoreResult<Self> {
        let (requests, mut queue) = mpsc::unbounded_channel::<Completion>();
        let connection = own_thread::start(APPLICATION_NAME, options, move |pool| async move {
            while let Some(c) = queue.recv().await {
                let _ = c
                    .reply
                    .send(complete(&pool, &c.results, c.hand_over, stats_writer).await);
            }
        })?;
        Ok(Self { requests, connection })
    }

    /// Records a batch of outcomes (see [`complete`]) and answers once it is committed.
    pub(super) async fn complete(
        &self,
        results: Arc<[AttemptResult]>,
        hand_over: Option<HandOver>,
    ) -> StoreResult<Vec<DueDelivery>> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Completion {
                results,
                hand_over,
                reply,
            })
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// Records a batch of outcomes in one transaction; returns the promoted deliveries it claimed
/// for the engine (with `hand_over`, up to its limit). A batch of successes, nearly every
/// batch, is one call of [`ROUTINE`]; a batch with a failure is written a statement at a time.
pub(super) async fn complete(
    pool: &PgPool,
    results: &[AttemptResult],
    hand_over_to: Option<HandOver>,
    stats_writer: i32,
) -> StoreResult<Vec<DueDelivery>> {
    if results.iter().all(|r| r.success) {
        return complete_delivered(pool, results, hand_over_to, stats_writer).await;
    }
    let mut tx = super::begin_hot(pool).await?;
    let handed = complete_in_steps(&mut tx, results, hand_over_to, stats_writer).await?;
    tx.commit().await?;
    Ok(handed)
}

/// Records a batch with a failure, a statement at a time, in `tx`.
async fn complete_in_steps(
    tx: &mut Tx,
    results: &[AttemptResult],
    hand_over_to: Option<HandOver>,
    stats_writer: i32,
) -> StoreResult<Vec<DueDelivery>> {
    // The attempts and the endpoints' health first: they touch no queue, so the
    // conversations stay locked only for the moves below (and the commit).
    let unhealthy = record_attempts(tx, results, stats_writer).await?;
    if !unhealthy.is_empty() {
        record_health(tx, results, &unhealthy).await?;
    }
    lock_queues(tx, results).await?;
    let chains = chain_leaders(results);
    let leaders: Vec<&AttemptResult> = results
        .iter()
        .zip(&chains)
        .filter(|(r, leader)| **leader == Some(r.delivery_id))
        .map(|(r, _)| r)
        .collect();
    let mut moved = move_deliveries(tx, &leaders, Guard::Lease).await?;
    // The chains of the leaders that moved, as far as each goes.
    let chained: Vec<&AttemptResult> = results
        .iter()
        .zip(&chains)
        .filter(|(r, leader)| leader.is_some_and(|l| l != r.delivery_id && moved.iter().any(|m| m.id == l)))
        .map(|(r, _)| r)
        .collect();
    if !chained.is_empty() {
        moved.extend(move_deliveries(tx, &chained, Guard::Waiting).await?);
    }
    // With a hand-over, the conversations' next events go out at once, leased by the
    // promotion itself: no claim round trip between two events of one conversation.
    promote(tx, results, &moved, hand_over_to).await
}

/// The chain each outcome belongs to, named by its leader's delivery id. An outcome whose
/// delivery follows no other outcome of the batch leads its own chain. A follower belongs to
/// its leader's chain when the outcome it followed (matched by delivery id and lease) belongs
/// to it and succeeded; any other follower belongs to none, and is not moved.
fn chain_leaders(results: &[AttemptResult]) -> Vec<Option<i64>> {
    let by_lease: HashMap<(i64, Millis), usize> = results
        .iter()
        .enumerate()
        .map(|(i, r)| ((r.delivery_id, r.lease_until), i))
        .collect();
    let followed: HashSet<i64> = results.iter().filter_map(|r| r.follower.map(|(id, _)| id)).collect();
    let mut chains: Vec<Option<i64>> = results
        .iter()
        .map(|r| (!followed.contains(&r.delivery_id)).then_some(r.delivery_id))
        .collect();
    for (start, r) in results.iter().enumerate() {
        if chains[start] != Some(r.delivery_id) {
            continue;
        }
        let mut link = r;
        while link.success
            && let Some(next) = link.follower.and_then(|f| by_lease.get(&f).copied())
            && chains[next].is_none()
        {
            chains[next] = Some(r.delivery_id);
            link = &results[next];
        }
    }
    chains
}

/// A batch of successes as one function call (see `super::routines`): the same steps as
/// [`complete_in_steps`] takes for a batch with a failure, in one round trip, commit
/// included. Health only ever clears here (`failing_since`, for an endpoint that was failing).
/// The moves take the state each row must still be in as a column (see [`move_deliveries`]):
/// a leader must be `pending` under its lease, a follower of a moved leader `waiting`. The
/// promotion is [`PROMOTE`], fed with the last delivery moved in each queue. It runs even when
/// nothing moved (it then finds no queue), so that warming a connection up with an empty batch
/// plans it too (see `super::routines::warm_up`); the move of followers does not run then.
pub(super) static ROUTINE: LazyLock<Routine> = LazyLock::new(|| {
    let delivered = DeliveryState::Delivered.code();
    let queues = "(SELECT l.ep, l.conv, r.started + r.took, r.follower, r.hold, l.head \
       FROM (SELECT DISTINCT ON (m.ep, m.conv) m.ep, m.conv, m.id AS head \
             FROM unnest(moved_ids, moved_endpoints, moved_conversations) AS m(id, ep, conv) \
             ORDER BY m.ep, m.conv, m.id DESC) AS l \
       JOIN (SELECT DISTINCT ON (r.id) r.* \
             FROM unnest($17::INT8[], $4::INT8[], $5::INT8[], $22::INT8[], $23::INT8[]) WITH ORDINALITY \
               AS r(id, started, took, follower, hold, nth) \
             ORDER BY r.id, r.nth) AS r ON r.id = l.head) AS q(ep, conv, at, follower, hold, head)";
    let body = format!(
        "WITH recorded AS ({RECORD}) {COUNT}; \
         UPDATE endpoints SET failing_since = NULL WHERE id IN ( \
           SELECT id FROM endpoints WHERE id = ANY($2) AND failing_since IS NOT NULL ORDER BY id COLLATE \"C\" FOR UPDATE); \
         PERFORM pg_advisory_xact_lock(k) FROM ({keys}) AS keys; \
         WITH m AS ( \
           UPDATE deliveries d SET state = {delivered}, lease_until = NULL, lease_owner = NULL \
           FROM unnest($17::INT8[], $19::INT8[], $20::INT8[], $21::INT2[]) AS u(id, lease, chain, expected) \
           WHERE d.id = u.id AND u.chain = u.id AND d.state = u.expected AND d.lease_until = u.lease \
           RETURNING d.id, d.endpoint_id, d.conversation) \
         SELECT array_agg(m.id), array_agg(m.endpoint_id), array_agg(m.conversation) \
           INTO moved_ids, moved_endpoints, moved_conversations FROM m; \
         IF NOT $20 = $17 THEN \
           WITH m AS ( \
             UPDATE deliveries d SET state = {delivered}, lease_until = NULL, lease_owner = NULL \
             FROM unnest($17::INT8[], $20::INT8[], $21::INT2[]) AS u(id, chain, expected) \
             WHERE d.id = u.id AND u.chain <> u.id AND u.chain = ANY(moved_ids) AND d.state = u.expected \
             RETURNING d.id, d.endpoint_id, d.conversation) \
           SELECT moved_ids || array_agg(m.id), moved_endpoints || array_agg(m.endpoint_id), \
                  moved_conversations || array_agg(m.conversation) \
             INTO moved_ids, moved_endpoints, moved_conversations FROM m; \
         END IF; \
         RETURN QUERY {promote};",
        keys = queue_keys("$17", "$18"),
        promote = promotion(queues, "$24", "$25", "$26", "$27"),
    );
    Routine::new(
        "botlinkd_delivered",
        "INT8[], TEXT[], INT4[], INT8[], INT8[], INT4[], TEXT[], TEXT[], BOOL[], \
         TEXT[], INT8[], INT2[], INT8[], INT8[], INT8[], INT4, \
         INT8[], INT8[], INT8[], INT8[], INT2[], INT8[], INT8[], INT8, INT8, INT8, INT8",
        "handed BOOL, id INT8, event_seq INT8, event_id TEXT, instance_id INT8, endpoint_id TEXT, url TEXT, \
         secret TEXT, payload TEXT, failures INT4, attempt_offset INT4, previous_secret TEXT, rate_limit INT4",
        "moved_ids INT8[]; moved_endpoints TEXT[]; moved_conversations TEXT[];",
        &body,
    )
});

/// Records a batch of successes with one call of [`ROUTINE`].
async fn complete_delivered(
    pool: &PgPool,
    results: &[AttemptResult],
    hand_over: Option<HandOver>,
    stats_writer: i32,
) -> StoreResult<Vec<DueDelivery>> {
    let columns = DeliveredColumns::new(results, stats_writer);
    let call = || columns.call(hand_over).fetch_all(pool);
    let rows = match call().await {
        Err(error) if routines::is_missing(&error) => {
            tracing::warn!(routine = %ROUTINE.name, "postgres completion routine missing; creating it again");
            routines::reinstall(pool).await?;
            call().await?
        }
        rows => rows?,
    };
    handed_rows(&rows, hand_over)
}

/// Calls [`ROUTINE`] with an empty batch on `connection`, as `super::routines::warm_up` does
/// for a new connection inside a transaction it rolls back: the same statement and parameter
/// types as a real batch, so the connection keeps both the prepared call and the routine's plans.
pub(super) async fn call_empty(connection: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    DeliveredColumns::new(&[], 0).call(None).fetch_all(connection).await?;
    Ok(())
}

/// A batch of successes as [`ROUTINE`]'s arguments: the attempts, then each outcome's
/// delivery, instance, lease, chain, the state it is expected in, and the follower it hands on to.
struct DeliveredColumns<'a> {
    attempts: AttemptColumns<'a>,
    ids: Vec<i64>,
    instances: Vec<i64>,
    leases: Vec<Millis>,
    chains: Vec<Option<i64>>,
    expected: Vec<i16>,
    followers: Vec<Option<i64>>,
    holds: Vec<Option<Millis>>,
}

impl<'a> DeliveredColumns<'a> {
    fn new(results: &'a [AttemptResult], stats_writer: i32) -> Self {
        let chains = chain_leaders(results);
        let n = results.len();
        let mut columns = Self {
            attempts: AttemptColumns::new(results, stats_writer),
            ids: Vec::with_capacity(n),
            instances: Vec::with_capacity(n),
            leases: Vec::with_capacity(n),
            chains: Vec::new(),
            expected: Vec::with_capacity(n),
            followers: Vec::with_capacity(n),
            holds: Vec::with_capacity(n),
        };
        for (r, chain) in results.iter().zip(&chains) {
            columns.ids.push(r.delivery_id);
            columns.instances.push(r.instance_id);
            columns.leases.push(r.lease_until);
            let state = if *chain == Some(r.delivery_id) {
                DeliveryState::Pending
            } else {
                DeliveryState::Waiting
            };
            columns.expected.push(state.code());
            columns.followers.push(r.follower.map(|(id, _)| id));
            columns.holds.push(r.follower.map(|(_, lease)| lease));
        }
        columns.chains = chains;
        columns
    }

    /// The call, with every argument bound.
    fn call(&self, hand_over: Option<HandOver>) -> super::append::PgQuery<'_> {
        static CALL: LazyLock<String> = LazyLock::new(|| ROUTINE.call(27));
        self.attempts
            .bind(sqlx::query(&CALL))
            .bind(&self.ids)
            .bind(&self.instances)
            .bind(&self.leases)
            .bind(&self.chains)
            .bind(&self.expected)
            .bind(&self.followers)
            .bind(&self.holds)
            .bind(PAUSED)
            .bind(hand_over.map_or(0, |h| h.limit as i64))
            .bind(hand_over.map_or(0, |h| h.now))
            .bind(hand_over.map_or(0, |h| h.lease_until))
    }
}

/// Locks the conversations of the batch's deliveries, in key order (see `append`).
async fn lock_queues(tx: &mut Tx, results: &[AttemptResult]) -> StoreResult<()> {
    static LOCK: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT pg_advisory_xact_lock(k) FROM ({}) AS keys",
            queue_keys("$1", "$2")
        )
    });
    let ids: Vec<i64> = results.iter().map(|r| r.delivery_id).collect();
    let instances: Vec<i64> = results.iter().map(|r| r.instance_id).collect();
    sqlx::query(&LOCK).bind(ids).bind(instances).execute(&mut **tx).await?;
    Ok(())
}

/// The lock keys of the conversations of deliveries `ids` (of instances `instances`, two
/// arrays in step), once each and in order.
fn queue_keys(ids: &str, instances: &str) -> String {
    format!(
        "SELECT DISTINCT hashtextextended(d.conversation, u.inst) AS k \
         FROM unnest({ids}::INT8[], {instances}::INT8[]) AS u(id, inst) JOIN deliveries d ON d.id = u.id \
         WHERE d.id = ANY({ids}) ORDER BY k"
    )
}

/// Inserts the batch's attempts (arguments `$1` to `$9`, see [`AttemptColumns`]).
const RECORD: &str = "INSERT INTO attempts (event_seq, endpoint_id, attempt, started_at, duration_ms, status_code, \
   response, error, success) \
 SELECT * FROM unnest($1::INT8[], $2::TEXT[], $3::INT4[], $4::INT8[], $5::INT8[], $6::INT4[], $7::TEXT[], $8::TEXT[], \
   $9::BOOL[])";

/// Adds the batch's attempts to `attempt_stats`, under this process's writer (arguments `$10`
/// to `$16`, see [`AttemptColumns`] and `store::attempt_stats`).
const COUNT: &str = "INSERT INTO attempt_stats (endpoint_id, minute, writer, bucket, successes, failures, last_success_at) \
 SELECT u.endpoint_id, u.minute, $16, u.bucket, u.successes, u.failures, u.last_success_at \
 FROM unnest($10::TEXT[], $11::INT8[], $12::INT2[], $13::INT8[], $14::INT8[], $15::INT8[]) \
   AS u(endpoint_id, minute, bucket, successes, failures, last_success_at) \
 ON CONFLICT (endpoint_id, minute, writer, bucket) DO UPDATE SET \
   successes = attempt_stats.successes + excluded.successes, \
   failures = attempt_stats.failures + excluded.failures, \
   last_success_at = GREATEST(attempt_stats.last_success_at, excluded.last_success_at)";

/// The arguments of [`RECORD`] and [`COUNT`], `$1` to `$16`: the attempts, outcome by outcome,
/// and their `attempt_stats` deltas.
struct AttemptColumns<'a> {
    seqs: Vec<i64>,
    endpoints: Vec<&'a str>,
    numbers: Vec<i32>,
    started: Vec<Millis>,
    durations: Vec<i64>,
    codes: Vec<Option<i32>>,
    responses: Vec<&'a str>,
    errors: Vec<Option<&'a str>>,
    successes: Vec<bool>,
    deltas: Vec<attempt_stats::StatsDelta>,
    writer: i32,
}

impl<'a> AttemptColumns<'a> {
    fn new(results: &'a [AttemptResult], writer: i32) -> Self {
        Self {
            seqs: results.iter().map(|r| r.event_seq).collect(),
            endpoints: results.iter().map(|r| r.endpoint_id.as_str()).collect(),
            numbers: results.iter().map(|r| r.attempt as i32).collect(),
            started: results.iter().map(|r| r.started_at).collect(),
            durations: results.iter().map(|r| r.duration_ms).collect(),
            codes: results.iter().map(|r| r.status_code.map(i32::from)).collect(),
            responses: results.iter().map(|r| r.response.as_str()).collect(),
            errors: results.iter().map(|r| r.error.as_deref()).collect(),
            successes: results.iter().map(|r| r.success).collect(),
            deltas: attempt_stats::deltas(results),
            writer,
        }
    }

    fn bind<'q>(&'q self, query: super::append::PgQuery<'q>) -> super::append::PgQuery<'q> {
        let deltas = &self.deltas;
        query
            .bind(&self.seqs)
            .bind(&self.endpoints)
            .bind(&self.numbers)
            .bind(&self.started)
            .bind(&self.durations)
            .bind(&self.codes)
            .bind(&self.responses)
            .bind(&self.errors)
            .bind(&self.successes)
            .bind(deltas.iter().map(|d| d.endpoint_id.as_str()).collect::<Vec<_>>())
            .bind(deltas.iter().map(|d| d.minute).collect::<Vec<_>>())
            .bind(deltas.iter().map(|d| d.bucket).collect::<Vec<_>>())
            .bind(deltas.iter().map(|d| d.successes).collect::<Vec<_>>())
            .bind(deltas.iter().map(|d| d.failures).collect::<Vec<_>>())
            .bind(deltas.iter().map(|d| d.last_success_at).collect::<Vec<_>>())
            .bind(self.writer)
    }
}

/// Inserts the attempts and adds them to `attempt_stats`, in one statement; answers the
/// endpoints whose health may change: any that failed, and any that succeeded while marked as
/// failing (the usual batch changes none, and then no endpoint row is written or locked).
async fn record_attempts(tx: &mut Tx, results: &[AttemptResult], stats_writer: i32) -> StoreResult<Vec<String>> {
    static STATEMENT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH recorded AS ({RECORD}), counted AS ({COUNT}) \
             SELECT DISTINCT ep.id FROM unnest($2::TEXT[], $9::BOOL[]) AS o(endpoint_id, success) \
             JOIN endpoints ep ON ep.id = o.endpoint_id WHERE NOT o.success OR ep.failing_since IS NOT NULL"
        )
    });
    let columns = AttemptColumns::new(results, stats_writer);
    Ok(columns
        .bind(sqlx::query(&STATEMENT))
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?)
}

/// Keeps the health of the endpoints that may change, outcome by outcome in endpoint order
/// (so every process takes those row locks in one order; the sort is stable, so one
/// endpoint's outcomes keep theirs).
async fn record_health(tx: &mut Tx, results: &[AttemptResult], unhealthy: &[String]) -> StoreResult<()> {
    let mut ordered: Vec<&AttemptResult> = results.iter().filter(|r| unhealthy.contains(&r.endpoint_id)).collect();
    ordered.sort_by(|a, b| a.endpoint_id.cmp(&b.endpoint_id));
    for r in ordered {
        super::catalog::record_health(tx, r).await?;
    }
    Ok(())
}

/// Which rows an outcome may move.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Guard {
    /// The queue's head, still under the lease the attempt was made with.
    Lease,
    /// A follower whose leader this batch has just finished: still `waiting`.
    Waiting,
}

/// A delivery an outcome moved.
struct Moved {
    id: i64,
    endpoint_id: String,
    conversation: String,
    state: DeliveryState,
}

/// Moves deliveries on as their outcomes say (see [`rules::after_attempt`]): a retry stays
/// pending with its next time (paused if its endpoint was disabled); a delivered or dead
/// delivery leaves its queue. Answers the rows that moved.
async fn move_deliveries(tx: &mut Tx, outcomes: &[&AttemptResult], guard: Guard) -> StoreResult<Vec<Moved>> {
    if outcomes.is_empty() {
        return Ok(Vec::new());
    }
    let n = outcomes.len();
    let (mut ids, mut leases, mut states) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut failed, mut retry_at) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for r in outcomes {
        let (state, failure) = rules::after_attempt(r);
        ids.push(r.delivery_id);
        leases.push(r.lease_until);
        states.push(state.code());
        failed.push(failure);
        retry_at.push(r.retry_at.unwrap_or(PAUSED));
    }
    // The guard goes in as a column (the state each row must still be in), not as SQL text:
    // a constant `state = 1` would let the planner reach the rows through the small partial
    // index of pending heads and then compare every row with every outcome; as a column, the
    // only way in is the primary key, one lookup per outcome.
    let expected = match guard {
        Guard::Lease => DeliveryState::Pending.code(),
        Guard::Waiting => DeliveryState::Waiting.code(),
    };
    let rows = sqlx::query(
        "UPDATE deliveries d SET state = u.state, failures = d.failures + u.failed, lease_until = NULL, lease_owner = NULL, \
           next_at = CASE WHEN u.state <> 1 THEN d.next_at \
                          WHEN (SELECT enabled FROM endpoints WHERE id = d.endpoint_id) THEN u.retry_at ELSE $6 END \
         FROM unnest($1::INT8[], $2::INT8[], $3::INT2[], $4::INT4[], $5::INT8[], $7::INT2[]) \
           AS u(id, lease, state, failed, retry_at, expected) \
         WHERE d.id = u.id AND d.state = u.expected AND (u.expected = 0 OR d.lease_until = u.lease) \
         RETURNING d.id, d.endpoint_id, d.conversation, u.state",
    )
    .bind(&ids)
    .bind(&leases)
    .bind(&states)
    .bind(&failed)
    .bind(&retry_at)
    .bind(PAUSED)
    .bind(vec![expected; n])
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Moved {
                id: row.try_get("id")?,
                endpoint_id: row.try_get("endpoint_id")?,
                conversation: row.try_get("conversation")?,
                state: DeliveryState::from_code(row.try_get::<i16, _>("state")?.into())?,
            })
        })
        .collect()
}

/// Promotes the next delivery of each queue whose last moved delivery finished. With a
/// hand-over, the promoted deliveries that are due now (not paused, not already on their way),
/// up to its limit and oldest first, are leased in the same statement and answered for the
/// engine.
async fn promote(
    tx: &mut Tx,
    results: &[AttemptResult],
    moved: &[Moved],
    hand_over: Option<HandOver>,
) -> StoreResult<Vec<DueDelivery>> {
    // The last moved delivery of each queue (a chain's end): the queue goes on after it,
    // unless it is pending again (a retry), and then the queue waits for it.
    let mut last: Vec<&Moved> = Vec::new();
    for m in moved {
        match last
            .iter_mut()
            .find(|l| l.endpoint_id == m.endpoint_id && l.conversation == m.conversation)
        {
            Some(l) if l.id < m.id => *l = m,
            Some(_) => {}
            None => last.push(m),
        }
    }
    let (mut queue_endpoints, mut queue_conversations, mut queue_times) = (Vec::new(), Vec::new(), Vec::new());
    let (mut queue_heads, mut queue_followers, mut queue_holds) = (Vec::new(), Vec::new(), Vec::new());
    for m in last.into_iter().filter(|m| m.state.is_finished()) {
        let Some(r) = results.iter().find(|r| r.delivery_id == m.id) else {
            continue;
        };
        queue_heads.push(m.id);
        queue_endpoints.push(m.endpoint_id.as_str());
        queue_conversations.push(m.conversation.as_str());
        queue_times.push(r.started_at + r.duration_ms);
        queue_followers.push(r.follower.map(|(id, _)| id));
        queue_holds.push(r.follower.map(|(_, lease)| lease));
    }
    if queue_endpoints.is_empty() {
        return Ok(Vec::new());
    }
    static PROMOTE: LazyLock<String> = LazyLock::new(|| {
        promotion(
            "unnest($1::TEXT[], $2::TEXT[], $3::INT8[], $4::INT8[], $5::INT8[], $7::INT8[]) \
             AS q(ep, conv, at, follower, hold, head)",
            "$6",
            "$8",
            "$9",
            "$10",
        )
    });
    let promoted = sqlx::query(&PROMOTE)
        .bind(&queue_endpoints)
        .bind(&queue_conversations)
        .bind(&queue_times)
        .bind(&queue_followers)
        .bind(&queue_holds)
        .bind(PAUSED)
        .bind(&queue_heads)
        .bind(hand_over.map_or(0, |h| h.limit as i64))
        .bind(hand_over.map_or(0, |h| h.now))
        .bind(hand_over.map_or(0, |h| h.lease_until))
        .fetch_all(&mut **tx)
        .await?;
    handed_rows(&promoted, hand_over)
}

/// The oldest waiting delivery of each finished queue becomes its head: due at once,
/// paused if its endpoint is disabled, held under the follower's lease if the engine
/// started it already, or leased to the engine now (`handed`: due, within the hand-over's
/// limit, oldest first). It comes after the finished head (`w.id > q.head`), which also
/// keeps the index scan clear of the entries of the queue's delivered rows that vacuum has
/// not removed yet. Leasing here rather than in a statement of its own writes each
/// promoted row once, not twice. The update checks the state it found (`d.state =
/// h.state`, always 0) as a column, not as SQL text: `d.state = 0` matches the partial
/// queue index, and a generic plan made while the table was small then scanned every
/// unfinished delivery and joined each to every promoted one (18 million comparisons,
/// up to 0.9 s, for 512 promotions on W3's 50,000 deliveries).
///
/// `queues` is a `FROM` item `q(ep, conv, at, follower, hold, head)`: each finished queue's
/// endpoint and conversation, when its head finished, the follower the engine started (with
/// its lease) if any, and the finished head's id; the other arguments are the SQL of
/// [`PAUSED`], the hand-over's limit, its time and its lease's end.
fn promotion(queues: &str, paused: &str, limit: &str, now: &str, lease: &str) -> String {
    format!(
        "WITH next AS ( \
           SELECT w.id, w.event_seq, w.state, q.ep, q.at, q.follower, q.hold, \
                  COALESCE((SELECT enabled FROM endpoints WHERE id = q.ep), FALSE) AS enabled \
           FROM {queues} \
           CROSS JOIN LATERAL ( \
             SELECT w.id, w.event_seq, w.state FROM deliveries w \
             WHERE w.endpoint_id = q.ep AND w.conversation = q.conv AND w.id > q.head \
               AND w.state IN (0, 1) AND w.state = 0 \
             ORDER BY w.id LIMIT 1) AS w), \
         ranked AS ( \
           SELECT n.*, n.enabled AND n.id IS DISTINCT FROM n.follower AS due, \
                  row_number() OVER (PARTITION BY n.enabled AND n.id IS DISTINCT FROM n.follower ORDER BY n.id) AS nth \
           FROM next n), \
         handed AS ( \
           SELECT r.*, r.due AND r.nth <= {limit} AS handed, ev.id AS event_id, ev.instance_id, ev.payload, ep.url, \
                  ep.secret, CASE WHEN ep.previous_secret_until > {now} THEN ep.previous_secret END AS previous_secret, \
                  ep.rate_limit \
           FROM ranked r \
           LEFT JOIN events ev ON r.due AND r.nth <= {limit} AND ev.seq = r.event_seq \
           LEFT JOIN endpoints ep ON r.due AND r.nth <= {limit} AND ep.id = r.ep) \
         UPDATE deliveries d SET state = 1, \
           lease_until = CASE WHEN d.id = h.follower THEN h.hold WHEN h.handed THEN {lease} END, \
           lease_owner = CASE WHEN d.id = h.follower OR h.handed THEN botlinkd_process() END, \
           next_at = CASE WHEN NOT h.enabled THEN {paused} WHEN d.id = h.follower THEN h.hold \
                          WHEN h.handed THEN {lease} ELSE h.at END \
         FROM handed h WHERE d.id = h.id AND d.state = h.state \
         RETURNING h.handed, d.id, d.event_seq, h.event_id, h.instance_id, d.endpoint_id, h.url, h.secret, \
                   h.payload, d.failures, d.attempt_offset, h.previous_secret, h.rate_limit"
    )
}

/// The deliveries a promotion handed over, in id order.
fn handed_rows(promoted: &[sqlx::postgres::PgRow], hand_over: Option<HandOver>) -> StoreResult<Vec<DueDelivery>> {
    let mut handed = Vec::new();
    for row in promoted {
        if let Some(h) = hand_over
            && row.try_get::<bool, _>("handed")?
        {
            handed.push(super::outbox::due_row(row, h.lease_until)?);
        }
    }
    handed.sort_by_key(|d| d.delivery_id);
    Ok(handed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(id: i64, lease: Millis, success: bool, follower: Option<(i64, Millis)>) -> AttemptResult {
        AttemptResult {
            delivery_id: id,
            event_seq: id,
            event_id: format!("evt_{id}"),
            instance_id: 1,
            endpoint_id: "ep_1".into(),
            attempt: 1,
            started_at: 0,
            duration_ms: 1,
            status_code: Some(if success { 200 } else { 500 }),
            response: String::new(),
            error: None,
            success,
            retry_at: (!success).then_some(60_000),
            retry_after: None,
            lease_until: lease,
            disable_after: None,
            follower,
        }
    }

    #[test]
    fn a_chain_runs_from_its_leader_through_successes_matched_by_lease() {
        let results = [
            // 1 → 2 → 3, each a success: one chain, led by 1.
            outcome(1, 10, true, Some((2, 20))),
            outcome(2, 20, true, Some((3, 30))),
            outcome(3, 30, true, None),
            // 4 failed, so 5 (which it started before the failure was known) leads nothing.
            outcome(4, 10, false, Some((5, 50))),
            outcome(5, 50, true, None),
            // 6 names 7 under another lease than 7's outcome was made with: 7 was followed,
            // so it leads nothing either.
            outcome(6, 10, true, Some((7, 70))),
            outcome(7, 71, true, None),
        ];
        assert_eq!(
            chain_leaders(&results),
            [Some(1), Some(1), Some(1), Some(4), None, Some(6), None]
        );
    }
}

//! Recording attempt outcomes on PostgreSQL, a batch at a time with set-based statements.
//!
//! The rules are the same as on SQLite (see `docs/ARCHITECTURE.md`, *Delivery state
//! machine*): an outcome moves its delivery only while the delivery still carries the lease
//! the attempt was made under; a success makes it delivered, a failure schedules a retry (or
//! pauses it when its endpoint is disabled), and an exhausted schedule makes it dead; a
//! delivered or dead head promotes the oldest waiting delivery of its queue. A promoted
//! delivery the engine already started as a follower gets the follower's lease instead of
//! becoming due.
//!
//! A batch may hold a follower's outcome together with the outcome of the delivery it
//! followed; the follower's row only becomes the head when the leader's completion promotes
//! it. So the batch is written in rounds: first every outcome whose delivery does not follow
//! another outcome of the batch, then those that follow one of the first round, and so on.
//! Each round is two statements, whatever its size.

use std::collections::HashSet;

use sqlx::Row;

use super::Tx;
use super::outbox::PAUSED;
use crate::clock::Millis;
use crate::store::{AttemptResult, DueDelivery, HandOver, StoreResult};

const PENDING: i16 = 1;
const DELIVERED: i16 = 2;
const DEAD: i16 = 3;

/// Records a batch of outcomes; returns the promoted deliveries it claimed for the engine
/// (with `hand_over`, up to its limit).
pub(super) async fn complete(
    tx: &mut Tx,
    results: &[AttemptResult],
    hand_over_to: Option<HandOver>,
) -> StoreResult<Vec<DueDelivery>> {
    lock_queues(tx, results).await?;
    let unhealthy = record_attempts(tx, results).await?;
    if !unhealthy.is_empty() {
        record_health(tx, results, &unhealthy).await?;
    }
    let mut promoted = Vec::new();
    let mut rest: Vec<&AttemptResult> = results.iter().collect();
    while !rest.is_empty() {
        // Outcomes whose delivery follows another outcome still to be written wait a round.
        let following: HashSet<i64> = rest.iter().filter_map(|r| r.follower.map(|(id, _)| id)).collect();
        let (round, later): (Vec<&AttemptResult>, Vec<&AttemptResult>) =
            rest.into_iter().partition(|r| !following.contains(&r.delivery_id));
        if round.is_empty() {
            // A cycle cannot happen (a delivery follows an older one); write the rest as one.
            promoted.extend(write_round(tx, &later).await?);
            break;
        }
        promoted.extend(write_round(tx, &round).await?);
        rest = later;
    }
    match hand_over_to {
        // The conversations' next events go out at once, claimed here: no claim round trip
        // between two events of one conversation.
        Some(h) => {
            promoted.truncate(h.limit);
            super::outbox::hand_over(tx, &promoted, h).await
        }
        None => Ok(Vec::new()),
    }
}

/// Locks the conversations of the batch's deliveries, in key order (see `append`).
async fn lock_queues(tx: &mut Tx, results: &[AttemptResult]) -> StoreResult<()> {
    let ids: Vec<i64> = results.iter().map(|r| r.delivery_id).collect();
    let instances: Vec<i64> = results.iter().map(|r| r.instance_id).collect();
    sqlx::query(
        "SELECT pg_advisory_xact_lock(k) FROM ( \
           SELECT DISTINCT hashtextextended(d.conversation, u.inst) AS k \
           FROM unnest($1::INT8[], $2::INT8[]) AS u(id, inst) JOIN deliveries d ON d.id = u.id \
           WHERE d.id = ANY($1) ORDER BY k \
         ) AS keys",
    )
    .bind(ids)
    .bind(instances)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Inserts the attempts; answers the endpoints whose health may change: any that failed, and
/// any that succeeded while marked as failing (the usual batch changes none, and then no
/// endpoint row is written or locked).
async fn record_attempts(tx: &mut Tx, results: &[AttemptResult]) -> StoreResult<Vec<String>> {
    let n = results.len();
    let (mut seqs, mut endpoints, mut numbers) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut started, mut durations, mut codes) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut responses, mut errors, mut successes) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for r in results {
        seqs.push(r.event_seq);
        endpoints.push(r.endpoint_id.as_str());
        numbers.push(r.attempt as i32);
        started.push(r.started_at);
        durations.push(r.duration_ms);
        codes.push(r.status_code.map(i32::from));
        responses.push(r.response.as_str());
        errors.push(r.error.as_deref());
        successes.push(r.success);
    }
    Ok(sqlx::query_scalar(
        "WITH recorded AS ( \
           INSERT INTO attempts (event_seq, endpoint_id, attempt, started_at, duration_ms, status_code, response, error, success) \
           SELECT * FROM unnest($1::INT8[], $2::TEXT[], $3::INT4[], $4::INT8[], $5::INT8[], $6::INT4[], $7::TEXT[], \
                                $8::TEXT[], $9::BOOL[])) \
         SELECT DISTINCT ep.id FROM unnest($2::TEXT[], $9::BOOL[]) AS o(endpoint_id, success) \
         JOIN endpoints ep ON ep.id = o.endpoint_id WHERE NOT o.success OR ep.failing_since IS NOT NULL",
    )
    .bind(&seqs)
    .bind(&endpoints)
    .bind(&numbers)
    .bind(&started)
    .bind(&durations)
    .bind(&codes)
    .bind(&responses)
    .bind(&errors)
    .bind(&successes)
    .fetch_all(&mut **tx)
    .await?)
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

/// Moves one round's deliveries on and promotes the next delivery of each finished queue;
/// answers the promoted deliveries that are due now (not paused, not already on their way).
async fn write_round(tx: &mut Tx, round: &[&AttemptResult]) -> StoreResult<Vec<i64>> {
    let n = round.len();
    let (mut ids, mut leases, mut states) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut failed, mut retry_at, mut finished_at) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut followers, mut holds) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for r in round {
        let (state, failure) = match (r.success, r.retry_at) {
            (true, _) => (DELIVERED, 0),
            (false, Some(_)) => (PENDING, 1),
            (false, None) => (DEAD, 1),
        };
        ids.push(r.delivery_id);
        leases.push(r.lease_until);
        states.push(state);
        failed.push(failure);
        retry_at.push(r.retry_at.unwrap_or(PAUSED));
        finished_at.push(r.started_at + r.duration_ms);
        followers.push(r.follower.map(|(id, _)| id));
        holds.push(r.follower.map(|(_, lease)| lease));
    }
    // A retry stays pending with its next time (paused if its endpoint was disabled); a
    // delivered or dead delivery leaves the queue.
    let finished = sqlx::query(
        "UPDATE deliveries d SET state = u.state, failures = d.failures + u.failed, lease_until = NULL, \
           next_at = CASE WHEN u.state <> 1 THEN d.next_at \
                          WHEN (SELECT enabled FROM endpoints WHERE id = d.endpoint_id) THEN u.retry_at ELSE $7 END \
         FROM unnest($1::INT8[], $2::INT8[], $3::INT2[], $4::INT4[], $5::INT8[], $6::INT8[]) \
           AS u(id, lease, state, failed, retry_at, finished_at) \
         WHERE d.id = ANY($1) AND d.id = u.id AND d.state = 1 AND d.lease_until = u.lease \
         RETURNING d.id, d.endpoint_id, d.conversation, u.state, u.finished_at",
    )
    .bind(&ids)
    .bind(&leases)
    .bind(&states)
    .bind(&failed)
    .bind(&retry_at)
    .bind(&finished_at)
    .bind(PAUSED)
    .fetch_all(&mut **tx)
    .await?;
    let (mut queue_endpoints, mut queue_conversations, mut queue_times) = (Vec::new(), Vec::new(), Vec::new());
    let (mut queue_followers, mut queue_holds) = (Vec::new(), Vec::new());
    for row in &finished {
        if row.try_get::<i16, _>("state")? == PENDING {
            continue;
        }
        let id: i64 = row.try_get("id")?;
        let at = ids.iter().position(|&d| d == id).unwrap_or_default();
        queue_endpoints.push(row.try_get::<String, _>("endpoint_id")?);
        queue_conversations.push(row.try_get::<String, _>("conversation")?);
        queue_times.push(row.try_get::<Millis, _>("finished_at")?);
        queue_followers.push(followers[at]);
        queue_holds.push(holds[at]);
    }
    if queue_endpoints.is_empty() {
        return Ok(Vec::new());
    }
    // The oldest waiting delivery of each finished queue becomes its head: due at once,
    // paused if its endpoint is disabled, or held under the follower's lease if the engine
    // started it already.
    let promoted = sqlx::query(
        "WITH next AS ( \
           SELECT w.id, q.at, q.follower, q.hold, \
                  COALESCE((SELECT enabled FROM endpoints WHERE id = q.ep), FALSE) AS enabled \
           FROM unnest($1::TEXT[], $2::TEXT[], $3::INT8[], $4::INT8[], $5::INT8[]) AS q(ep, conv, at, follower, hold) \
           CROSS JOIN LATERAL ( \
             SELECT w.id FROM deliveries w \
             WHERE w.endpoint_id = q.ep AND w.conversation = q.conv AND w.state IN (0, 1) AND w.state = 0 \
             ORDER BY w.id LIMIT 1) AS w) \
         UPDATE deliveries d SET state = 1, \
           lease_until = CASE WHEN d.id = next.follower THEN next.hold END, \
           next_at = CASE WHEN NOT next.enabled THEN $6 WHEN d.id = next.follower THEN next.hold ELSE next.at END \
         FROM next WHERE d.id = next.id AND d.state = 0 \
         RETURNING d.id, d.lease_until, d.next_at",
    )
    .bind(&queue_endpoints)
    .bind(&queue_conversations)
    .bind(&queue_times)
    .bind(&queue_followers)
    .bind(&queue_holds)
    .bind(PAUSED)
    .fetch_all(&mut **tx)
    .await?;
    let mut due = Vec::new();
    for row in &promoted {
        let held = row.try_get::<Option<Millis>, _>("lease_until")?.is_some();
        if !held && row.try_get::<Millis, _>("next_at")? != PAUSED {
            due.push(row.try_get("id")?);
        }
    }
    due.sort_unstable();
    Ok(due)
}

//! SQL for the outbox: events, their deliveries (with the one-head-per-conversation rule),
//! claims, completions and attempts; the rules themselves are in `store::rules`.
//!
//! A completion records each attempt and the endpoint's health, then moves the delivery and
//! promotes the next one of its queue. These are plain reads followed by updates by rowid: an
//! `UPDATE … RETURNING` has SQLite build a temporary table and a statement journal, which cost
//! 3–4 % of the process's CPU time on W1 (see BENCHMARKS.md). A promoted delivery the engine
//! already started as a follower is held under the follower's lease instead of becoming due.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::corrupt;
use crate::clock::Millis;
use crate::events::{EventDraft, EventKind, EventRecord};
use crate::store::rules::{self, DeliveryState, Latest, ResendStep};
use crate::store::{
    AttemptRecord, AttemptResult, DeadDelivery, DeadFilter, DeliveryStatus, DueDelivery, HandOver, StoreResult, rfc3339,
};
use crate::webhooks::{EventFilter, SigningSecret};

const WAITING: i16 = DeliveryState::Waiting.code();
const PENDING: i16 = DeliveryState::Pending.code();

pub(super) use crate::store::rules::PAUSED;

/// Appends an event to the outbox and creates a delivery for each endpoint of the instance
/// whose filter accepts it. A disabled endpoint's deliveries wait, paused, until it is
/// enabled again: disabling pauses an endpoint, it does not make it miss events.
///
/// With a hand-over, deliveries that are the head of their conversation (to an enabled
/// endpoint) are written already claimed, up to the hand-over's limit, and returned for the
/// engine to start: everything a claim would read back is at hand here. Deliveries that wait
/// behind another are returned too, unleased, with the delivery they follow in `after`.
pub(super) fn append(
    conn: &Connection,
    instance_id: i64,
    e: &EventDraft,
    hand_over: Option<HandOver>,
) -> StoreResult<(EventRecord, Vec<DueDelivery>)> {
    let seq = insert_event(conn, instance_id, e)?;
    let mut endpoints = conn.prepare_cached(
        "SELECT id, events, enabled, url, secret, CASE WHEN previous_secret_until > ?2 THEN previous_secret END, \
         rate_limit FROM endpoints WHERE instance_id = ?1",
    )?;
    let targets: Vec<Target> = endpoints
        .query_map(params![instance_id, e.created_at], |r| {
            Ok(Target {
                id: r.get(0)?,
                events: r.get(1)?,
                enabled: r.get(2)?,
                url: r.get(3)?,
                secret: r.get(4)?,
                previous_secret: r.get(5)?,
                rate_limit: r.get(6)?,
            })
        })?
        .filter(|t| !matches!(t, Ok(t) if !EventFilter::from_bits(t.events).accepts(e.kind)))
        .collect::<Result<_, _>>()?;
    let mut handed = Vec::new();
    let mut payload: Option<Arc<str>> = None;
    for target in targets {
        let tail = queue_tail(conn, &target.id, &e.conversation)?;
        let room = hand_over.filter(|h| target.enabled && handed.len() < h.limit);
        let (state, next_at, lease_until) = match (room, tail) {
            (Some(h), None) => (PENDING, h.lease_until, Some(h.lease_until)),
            (_, Some(_)) => (WAITING, rules::due_at(target.enabled, e.created_at), None),
            (None, None) => (PENDING, rules::due_at(target.enabled, e.created_at), None),
        };
        conn.prepare_cached(
            "INSERT INTO deliveries (event_seq, endpoint_id, conversation, state, next_at, lease_until) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![seq, target.id, e.conversation, state, next_at, lease_until])?;
        // A claimed head, or (unclaimed) a delivery that follows the current tail.
        let (after, lease_until) = match (lease_until, room, tail) {
            (Some(lease_until), _, _) => (None, lease_until),
            (None, Some(_), Some(tail)) => (Some(tail), 0),
            _ => continue,
        };
        let delivery_id = conn.last_insert_rowid();
        let payload = payload.get_or_insert_with(|| Arc::from(e.payload.as_str())).clone();
        handed.push(DueDelivery {
            delivery_id,
            event_seq: seq,
            event_id: e.id.clone(),
            instance_id,
            secret: SigningSecret::parse(&target.secret)
                .map_err(|_| crate::store::StoreError::Corrupt("endpoint secret".into()))?,
            previous_secret: target.previous_secret.and_then(|p| SigningSecret::parse(&p).ok()),
            rate_limit: target.rate_limit,
            endpoint_id: target.id,
            url: target.url,
            payload,
            attempt: 1,
            failures: 0,
            lease_until,
            after,
        });
    }
    Ok((record(seq, instance_id, e), handed))
}

/// An endpoint a new event may go to, with what its delivery needs.
struct Target {
    id: String,
    events: u8,
    enabled: bool,
    url: String,
    secret: String,
    previous_secret: Option<String>,
    rate_limit: Option<u32>,
}

/// The newest unfinished delivery of a conversation's queue to an endpoint, if any.
fn queue_tail(conn: &Connection, endpoint_id: &str, conversation: &str) -> StoreResult<Option<i64>> {
    Ok(conn
        .prepare_cached(
            "SELECT MAX(id) FROM deliveries WHERE endpoint_id = ?1 AND conversation = ?2 AND state IN (0, 1)",
        )?
        .query_row(params![endpoint_id, conversation], |r| r.get(0))?)
}

fn insert_event(conn: &Connection, instance_id: i64, e: &EventDraft) -> StoreResult<i64> {
    conn.prepare_cached(
        "INSERT INTO events (id, instance_id, kind, conversation, payload, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        e.id,
        instance_id,
        e.kind.as_str(),
        e.conversation,
        e.payload,
        e.created_at
    ])?;
    Ok(conn.last_insert_rowid())
}

fn record(seq: i64, instance_id: i64, e: &EventDraft) -> EventRecord {
    EventRecord {
        seq,
        id: e.id.clone(),
        instance_id,
        kind: e.kind,
        conversation: e.conversation.clone(),
        payload: e.payload.clone(),
        created_at: e.created_at,
    }
}

/// Adds a delivery at the tail of its conversation's queue: `pending` if the queue is
/// empty, `waiting` behind the head otherwise.
fn enqueue(
    conn: &Connection,
    event_seq: i64,
    endpoint_id: &str,
    conversation: &str,
    attempt_offset: i64,
    now: Millis,
) -> StoreResult<i64> {
    let busy = queue_tail(conn, endpoint_id, conversation)?.is_some();
    conn.prepare_cached(
        "INSERT INTO deliveries (event_seq, endpoint_id, conversation, state, attempt_offset, next_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, CASE WHEN (SELECT enabled FROM endpoints WHERE id = ?2) THEN ?6 ELSE ?7 END)",
    )?
    .execute(params![
        event_seq,
        endpoint_id,
        conversation,
        if busy { WAITING } else { PENDING },
        attempt_offset,
        now,
        PAUSED
    ])?;
    Ok(conn.last_insert_rowid())
}

const EVENT_COLUMNS: &str = "seq, id, instance_id, kind, conversation, payload, created_at";

pub(super) fn event(row: &Row<'_>) -> rusqlite::Result<EventRecord> {
    let kind: String = row.get(3)?;
    Ok(EventRecord {
        seq: row.get(0)?,
        id: row.get(1)?,
        instance_id: row.get(2)?,
        kind: EventKind::parse(&kind).ok_or_else(|| corrupt(3, format!("event kind `{kind}`")))?,
        conversation: row.get(4)?,
        payload: row.get(5)?,
        created_at: row.get(6)?,
    })
}

pub(super) fn list_events(
    conn: &Connection,
    instance_id: i64,
    after: i64,
    limit: u32,
) -> StoreResult<Vec<EventRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE instance_id = ?1 AND seq > ?2 AND kind != 'test' ORDER BY seq LIMIT ?3"
    ))?;
    let rows = stmt.query_map(params![instance_id, after, limit], event)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn get_event(conn: &Connection, instance_id: i64, id: &str) -> StoreResult<Option<EventRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1 AND instance_id = ?2"
    ))?;
    Ok(stmt.query_row(params![id, instance_id], event).optional()?)
}

pub(super) fn list_attempts(conn: &Connection, event_seq: i64) -> StoreResult<Vec<AttemptRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT endpoint_id, attempt, started_at, duration_ms, status_code, response, error, success \
         FROM attempts WHERE event_seq = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([event_seq], |r| {
        Ok(AttemptRecord {
            endpoint_id: r.get(0)?,
            attempt: r.get(1)?,
            started_at: rfc3339(r.get(2)?),
            duration_ms: r.get(3)?,
            status_code: r.get(4)?,
            response: r.get(5)?,
            error: r.get(6)?,
            outcome: if r.get::<_, bool>(7)? { "success" } else { "failure" },
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn delivery_statuses(conn: &Connection, event_seq: i64) -> StoreResult<Vec<DeliveryStatus>> {
    let mut stmt = conn.prepare_cached(
        "SELECT endpoint_id, state, failures, attempt_offset, next_at FROM deliveries WHERE event_seq = ?1 ORDER BY id",
    )?;
    let rows: Vec<(String, i64, i64, i64, Millis)> = stmt
        .query_map([event_seq], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<_, _>>()?;
    rows.into_iter()
        .map(|(endpoint_id, state, failures, offset, next_at)| {
            Ok(rules::delivery_status(
                endpoint_id,
                DeliveryState::from_code(state)?,
                failures,
                offset,
                next_at,
            ))
        })
        .collect()
}

/// Delivers an event again: a finished delivery gets a new one at the tail of its
/// conversation (so order still holds); a pending one is made due now.
pub(super) fn resend(conn: &Connection, event_seq: i64, endpoint_id: Option<&str>, now: Millis) -> StoreResult<usize> {
    let (instance_id, kind, conversation): (i64, String, String) = conn.query_row(
        "SELECT instance_id, kind, conversation FROM events WHERE seq = ?1",
        [event_seq],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let kind =
        EventKind::parse(&kind).ok_or_else(|| crate::store::StoreError::Corrupt(format!("event kind `{kind}`")))?;
    let mut endpoints =
        conn.prepare_cached("SELECT id, events FROM endpoints WHERE instance_id = ?1 AND (?2 IS NULL OR id = ?2)")?;
    let targets: Vec<(String, u8)> = endpoints
        .query_map(params![instance_id, endpoint_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut scheduled = 0;
    for (endpoint, bits) in targets {
        let latest: Option<(i64, i64, i64, i64)> = conn
            .prepare_cached(
                "SELECT id, state, failures, attempt_offset FROM deliveries \
                 WHERE event_seq = ?1 AND endpoint_id = ?2 ORDER BY id DESC LIMIT 1",
            )?
            .query_row(params![event_seq, endpoint], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let latest = match latest {
            Some((delivery_id, state, failures, offset)) => {
                let state = DeliveryState::from_code(state)?;
                Some(Latest {
                    delivery_id,
                    state,
                    attempts: rules::attempts_made(state, failures, offset),
                })
            }
            None => None,
        };
        // A test event is only ever delivered where it was sent.
        let subscribed = kind != EventKind::Test && EventFilter::from_bits(bits).accepts(kind);
        match rules::resend_step(latest, endpoint_id.is_some(), subscribed) {
            ResendStep::MakeDue(id) => {
                // Not while an attempt is running or the endpoint is paused.
                let moved = conn
                    .prepare_cached(
                        "UPDATE deliveries SET next_at = ?2 \
                         WHERE id = ?1 AND lease_until IS NULL AND next_at != ?3",
                    )?
                    .execute(params![id, now, PAUSED])?;
                if moved == 0 {
                    continue;
                }
            }
            ResendStep::Nothing => continue,
            ResendStep::Enqueue { attempt_offset } => {
                enqueue(
                    conn,
                    event_seq,
                    &endpoint,
                    &conversation,
                    i64::from(attempt_offset),
                    now,
                )?;
            }
        }
        scheduled += 1;
    }
    Ok(scheduled)
}

/// Stores a test event with one delivery, claimed at once by the caller. Each test event is
/// a conversation of its own, so it never waits behind another.
pub(super) fn test_event(
    conn: &Connection,
    instance_id: i64,
    endpoint_id: &str,
    e: &EventDraft,
    lease_until: Millis,
) -> StoreResult<DueDelivery> {
    let seq = insert_event(conn, instance_id, e)?;
    let id = enqueue(conn, seq, endpoint_id, &e.conversation, 0, e.created_at)?;
    lease(conn, id, lease_until)?;
    let (url, secret, previous, rate_limit): (String, String, Option<String>, Option<u32>) = conn
        .query_row(
            "SELECT url, secret, CASE WHEN previous_secret_until > ?2 THEN previous_secret END, rate_limit \
             FROM endpoints WHERE id = ?1",
            params![endpoint_id, e.created_at],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?
        .ok_or_else(|| crate::store::StoreError::Conflict("the endpoint was deleted meanwhile".into()))?;
    Ok(DueDelivery {
        delivery_id: id,
        event_seq: seq,
        event_id: e.id.clone(),
        instance_id,
        endpoint_id: endpoint_id.to_string(),
        url,
        secret: SigningSecret::parse(&secret)
            .map_err(|_| crate::store::StoreError::Corrupt("endpoint secret".into()))?,
        previous_secret: previous.and_then(|p| SigningSecret::parse(&p).ok()),
        rate_limit,
        payload: Arc::from(e.payload.as_str()),
        attempt: 1,
        failures: 0,
        lease_until,
        after: None,
    })
}

fn lease(conn: &Connection, delivery_id: i64, until: Millis) -> StoreResult<()> {
    conn.prepare_cached("UPDATE deliveries SET lease_until = ?2, next_at = ?2 WHERE id = ?1")?
        .execute(params![delivery_id, until])?;
    Ok(())
}

/// What a claim reads of a delivery (`?1` is now, for the rotation grace period).
const DUE_COLUMNS: &str = "d.id, d.event_seq, ev.id, d.endpoint_id, ep.url, ep.secret, ev.payload, d.failures, \
     d.attempt_offset, ev.instance_id, CASE WHEN ep.previous_secret_until > ?1 THEN ep.previous_secret END, \
     ep.rate_limit";

fn due_row(r: &Row<'_>, lease_until: Millis) -> rusqlite::Result<DueDelivery> {
    let secret: String = r.get(5)?;
    let payload: String = r.get(6)?;
    let failures: u32 = r.get(7)?;
    let offset: u32 = r.get(8)?;
    Ok(DueDelivery {
        delivery_id: r.get(0)?,
        event_seq: r.get(1)?,
        event_id: r.get(2)?,
        instance_id: r.get(9)?,
        endpoint_id: r.get(3)?,
        url: r.get(4)?,
        secret: SigningSecret::parse(&secret).map_err(|e| corrupt(5, e.to_string()))?,
        previous_secret: r
            .get::<_, Option<String>>(10)?
            .and_then(|p| SigningSecret::parse(&p).ok()),
        rate_limit: r.get(11)?,
        payload: Arc::from(payload),
        attempt: offset + failures + 1,
        failures,
        lease_until,
        after: None,
    })
}

/// One leased delivery, read as a claim reads it.
fn due_by_id(conn: &Connection, id: i64, now: Millis, lease_until: Millis) -> StoreResult<Option<DueDelivery>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {DUE_COLUMNS} FROM deliveries d JOIN endpoints ep ON ep.id = d.endpoint_id \
             JOIN events ev ON ev.seq = d.event_seq WHERE d.id = ?2"
        ))?
        .query_row(params![now, id], |r| due_row(r, lease_until))
        .optional()?)
}

/// Claims due deliveries: reads the oldest due heads and leases them, in one transaction.
pub(super) fn claim(
    conn: &Connection,
    now: Millis,
    limit: u32,
    skip: &[String],
    lease_until: Millis,
) -> StoreResult<Vec<DueDelivery>> {
    let skip_json = serde_json::to_string(skip).unwrap_or_else(|_| "[]".into());
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {DUE_COLUMNS} FROM deliveries d \
         JOIN endpoints ep ON ep.id = d.endpoint_id \
         JOIN events ev ON ev.seq = d.event_seq \
         WHERE d.state = 1 AND d.next_at <= ?1 AND ep.enabled = 1 \
           AND d.endpoint_id NOT IN (SELECT value FROM json_each(?2)) \
         ORDER BY d.next_at LIMIT ?3"
    ))?;
    let rows = stmt.query_map(params![now, skip_json, limit], |r| due_row(r, lease_until))?;
    let due: Vec<DueDelivery> = rows.collect::<Result<_, _>>()?;
    for d in &due {
        lease(conn, d.delivery_id, lease_until)?;
    }
    Ok(due)
}

/// Records attempts and moves each delivery on. A result only moves its delivery if the
/// delivery still carries the lease it was claimed with: if the lease ran out and another
/// claim took over, the late result is recorded as an attempt but changes nothing else.
pub(super) fn complete(
    conn: &Connection,
    results: &[AttemptResult],
    hand_over: Option<HandOver>,
) -> StoreResult<Vec<DueDelivery>> {
    let mut handed = Vec::new();
    super::history::record_stats(conn, results)?;
    for r in results {
        conn.prepare_cached(
            "INSERT INTO attempts (event_seq, endpoint_id, attempt, started_at, duration_ms, status_code, response, error, success) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            r.event_seq,
            r.endpoint_id,
            r.attempt,
            r.started_at,
            r.duration_ms,
            r.status_code,
            r.response,
            r.error,
            r.success
        ])?;
        super::endpoints::record_health(conn, r)?;
        let finished_at = r.started_at + r.duration_ms;
        if let (false, Some(retry_at)) = (r.success, r.retry_at) {
            conn.prepare_cached(
                "UPDATE deliveries SET failures = failures + 1, lease_until = NULL, \
                   next_at = CASE WHEN (SELECT enabled FROM endpoints WHERE id = endpoint_id) THEN ?2 ELSE ?4 END \
                 WHERE id = ?1 AND state = 1 AND lease_until = ?3",
            )?
            .execute(params![r.delivery_id, retry_at, r.lease_until, PAUSED])?;
            continue;
        }
        let (state, failed) = rules::after_attempt(r);
        let state = state.code();
        // A read, then an update by rowid: an `UPDATE … RETURNING` would have SQLite build a
        // temporary table and a statement journal for the one row.
        let queue: Option<(String, String)> = conn
            .prepare_cached(
                "SELECT endpoint_id, conversation FROM deliveries WHERE id = ?1 AND state = 1 AND lease_until = ?2",
            )?
            .query_row(params![r.delivery_id, r.lease_until], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()?;
        let Some((endpoint_id, conversation)) = queue else {
            continue;
        };
        conn.prepare_cached(
            "UPDATE deliveries SET state = ?2, failures = failures + ?3, lease_until = NULL WHERE id = ?1",
        )?
        .execute(params![r.delivery_id, state, failed])?;
        let Some((next, paused)) = promote_next(conn, &endpoint_id, &conversation, finished_at)? else {
            continue;
        };
        match (r.follower, hand_over) {
            // On its way already: the engine started it when this one succeeded.
            (Some((id, lease_until)), _) if id == next => hold(conn, id, lease_until, paused)?,
            // The conversation's next event goes out at once, claimed here: no claim round
            // trip between two events of one conversation.
            (_, Some(h)) if !paused && handed.len() < h.limit => {
                lease(conn, next, h.lease_until)?;
                if let Some(due) = due_by_id(conn, next, h.now, h.lease_until)? {
                    handed.push(due);
                }
            }
            _ => {}
        }
    }
    Ok(handed)
}

/// Gives a just-promoted head that the engine started already the lease it went out with
/// (so no claim takes it again); a paused one stays paused.
fn hold(conn: &Connection, delivery_id: i64, lease_until: Millis, paused: bool) -> StoreResult<()> {
    if !paused {
        return lease(conn, delivery_id, lease_until);
    }
    conn.prepare_cached("UPDATE deliveries SET lease_until = ?2 WHERE id = ?1")?
        .execute(params![delivery_id, lease_until])?;
    Ok(())
}

/// Makes the oldest waiting delivery of a conversation the new head; returns its id and
/// whether it is paused (its endpoint is disabled).
/// (The redundant `state IN (0, 1)` lets SQLite use the partial queue index; it cannot infer
/// that `state = 0` implies the index's condition.)
fn promote_next(
    conn: &Connection,
    endpoint_id: &str,
    conversation: &str,
    now: Millis,
) -> StoreResult<Option<(i64, bool)>> {
    let waiting: Option<(i64, Option<bool>)> = conn
        .prepare_cached(
            "SELECT id, (SELECT enabled FROM endpoints WHERE id = ?1) FROM deliveries \
             WHERE endpoint_id = ?1 AND conversation = ?2 AND state IN (0, 1) AND state = 0 ORDER BY id LIMIT 1",
        )?
        .query_row(params![endpoint_id, conversation], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((id, enabled)) = waiting else {
        return Ok(None);
    };
    let enabled = enabled.unwrap_or(false);
    conn.prepare_cached("UPDATE deliveries SET state = 1, next_at = ?2 WHERE id = ?1")?
        .execute(params![id, rules::due_at(enabled, now)])?;
    Ok(Some((id, !enabled)))
}

pub(super) fn next_due_at(conn: &Connection) -> StoreResult<Option<Millis>> {
    Ok(conn.query_row(
        "SELECT MIN(next_at) FROM deliveries WHERE state = 1 AND next_at != ?1",
        [PAUSED],
        |r| r.get(0),
    )?)
}

/// Hands claimed deliveries back, due at `next_at`, where the lease is still the one given.
pub(super) fn release_claims(conn: &Connection, claims: &[(i64, Millis)], next_at: Millis) -> StoreResult<()> {
    let mut stmt = conn.prepare_cached(
        "UPDATE deliveries SET lease_until = NULL, next_at = ?3 WHERE id = ?1 AND state = 1 AND lease_until = ?2",
    )?;
    for (id, lease_until) in claims {
        stmt.execute(params![id, lease_until, next_at])?;
    }
    Ok(())
}

pub(super) fn release_all_leases(conn: &Connection, now: Millis) -> StoreResult<u64> {
    let n = conn.execute(
        "UPDATE deliveries SET lease_until = NULL, next_at = ?1 WHERE state = 1 AND lease_until IS NOT NULL",
        [now],
    )?;
    Ok(n as u64)
}

/// Deletes old, finished events with their deliveries and attempts (see [`crate::store::Store::prune`]),
/// instance by instance, each oldest first through `events_history`.
pub(super) fn prune_events(conn: &Connection, before: Millis, limit: u32) -> StoreResult<u32> {
    let instances: Vec<i64> = conn
        .prepare_cached("SELECT id FROM instances ORDER BY id")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut old = conn.prepare_cached(
        "SELECT e.seq FROM events e WHERE e.instance_id = ?1 AND e.created_at < ?2 \
           AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND d.state IN (0, 1)) \
         ORDER BY e.created_at LIMIT ?3",
    )?;
    let mut seqs: Vec<i64> = Vec::new();
    for instance_id in instances {
        let room = limit as usize - seqs.len();
        if room == 0 {
            break;
        }
        let found = old.query_map(params![instance_id, before, room], |r| r.get(0))?;
        seqs.extend(found.collect::<Result<Vec<i64>, _>>()?);
    }
    for seq in &seqs {
        for sql in [
            "DELETE FROM attempts WHERE event_seq = ?1",
            "DELETE FROM deliveries WHERE event_seq = ?1",
            "DELETE FROM events WHERE seq = ?1",
        ] {
            conn.prepare_cached(sql)?.execute([seq])?;
        }
    }
    Ok(seqs.len() as u32)
}

/// The dead-delivery conditions shared by the listing and the bulk resend: the latest
/// delivery of its event to its endpoint, dead, of the instance, within the filter.
const DEAD_WHERE: &str = "e.instance_id = ?1 AND d.state = 3 AND (?2 IS NULL OR d.endpoint_id = ?2) \
     AND (?3 IS NULL OR e.created_at >= ?3) AND (?4 IS NULL OR e.created_at < ?4) \
     AND NOT EXISTS (SELECT 1 FROM deliveries n WHERE n.event_seq = d.event_seq AND n.endpoint_id = d.endpoint_id \
                     AND n.id > d.id)";

pub(super) fn list_dead(
    conn: &Connection,
    instance_id: i64,
    filter: &DeadFilter,
    before: Option<i64>,
    limit: u32,
) -> StoreResult<Vec<DeadDelivery>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT d.id, e.id, e.kind, d.endpoint_id, d.conversation, e.created_at, d.failures + d.attempt_offset, \
           a.started_at, a.status_code, a.error \
         FROM deliveries d JOIN events e ON e.seq = d.event_seq \
         LEFT JOIN attempts a ON a.id = (SELECT MAX(id) FROM attempts WHERE event_seq = d.event_seq AND endpoint_id = d.endpoint_id) \
         WHERE {DEAD_WHERE} AND d.id < ?5 ORDER BY d.id DESC LIMIT ?6"
    ))?;
    let rows = stmt.query_map(
        params![
            instance_id,
            filter.endpoint_id,
            filter.since,
            filter.until,
            before.unwrap_or(i64::MAX),
            limit
        ],
        |r| {
            Ok(DeadDelivery {
                delivery_id: r.get(0)?,
                event_id: r.get(1)?,
                event_type: r.get(2)?,
                endpoint_id: r.get(3)?,
                conversation: r.get(4)?,
                event_created_at: rfc3339(r.get(5)?),
                attempts: r.get(6)?,
                last_attempt_at: r.get::<_, Option<Millis>>(7)?.map(rfc3339),
                last_status_code: r.get(8)?,
                last_error: r.get(9)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn resend_dead(
    conn: &Connection,
    instance_id: i64,
    filter: &DeadFilter,
    limit: u32,
    now: Millis,
) -> StoreResult<usize> {
    let pairs: Vec<(i64, String)> = conn
        .prepare_cached(&format!(
            "SELECT d.event_seq, d.endpoint_id FROM deliveries d JOIN events e ON e.seq = d.event_seq \
             WHERE {DEAD_WHERE} ORDER BY d.id LIMIT ?5"
        ))?
        .query_map(
            params![instance_id, filter.endpoint_id, filter.since, filter.until, limit],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?
        .collect::<Result<_, _>>()?;
    let mut scheduled = 0;
    for (seq, endpoint_id) in pairs {
        scheduled += resend(conn, seq, Some(&endpoint_id), now)?;
    }
    Ok(scheduled)
}

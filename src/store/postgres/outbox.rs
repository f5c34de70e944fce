//! PostgreSQL SQL for the outbox: the feed read, the event, attempt and delivery reads,
//! resends, test events, claims under leases, hand-overs, pruning, and the dead list with its
//! bulk resend (completions are in `super::complete`, appends in `super::append`).
//!
//! The feed read ([`list_events`]) returns only what lies below the horizon (see
//! `super::append`). A claim ([`claim`]) is one `FOR UPDATE OF d SKIP LOCKED` statement: the
//! due heads of enabled endpoints, oldest `next_at` first, leased in the same statement, so
//! processes claiming at once take different rows ([`due_row`] reads a leased delivery, for
//! claims and for the heads a completion promotes and leases, see `super::complete`). Pruning selects each batch `FOR UPDATE SKIP
//! LOCKED`, so the housekeeping of several processes takes different batches, and counts only
//! deliveries whose endpoint still exists. Resends follow `store::rules::resend_step`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use super::Tx;
use super::append::FEED_SHIFT;
use crate::clock::Millis;
use crate::events::{EventDraft, EventKind, EventRecord};
use crate::store::rules::{self, DeliveryState, Latest, ResendStep};
use crate::store::{
    AttemptRecord, DeadDelivery, DeadFilter, DeliveryStatus, DueDelivery, StoreError, StoreResult, rfc3339,
};
use crate::webhooks::SigningSecret;

pub(super) use crate::store::rules::PAUSED;

/// Adds one delivery at the tail of its conversation's queue.
async fn enqueue(
    tx: &mut Tx,
    event_seq: i64,
    endpoint_id: &str,
    conversation: &str,
    offset: i32,
    now: Millis,
) -> StoreResult<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO deliveries (event_seq, endpoint_id, conversation, state, attempt_offset, next_at) \
         SELECT $1, ep.id, $2, \
                CASE WHEN EXISTS (SELECT 1 FROM deliveries d WHERE d.endpoint_id = ep.id \
                                  AND d.conversation = $2 AND d.state IN (0, 1)) THEN 0 ELSE 1 END, \
                $4, CASE WHEN ep.enabled THEN $5 ELSE $6 END \
         FROM endpoints ep WHERE ep.id = $3 RETURNING id",
    )
    .bind(event_seq)
    .bind(conversation)
    .bind(endpoint_id)
    .bind(offset)
    .bind(now)
    .bind(PAUSED)
    .fetch_one(&mut **tx)
    .await?)
}

const EVENT_COLUMNS: &str = "seq, id, instance_id, kind, conversation, payload, created_at";

pub(super) fn event(row: &PgRow) -> StoreResult<EventRecord> {
    let kind: String = row.try_get("kind")?;
    Ok(EventRecord {
        seq: row.try_get("seq")?,
        id: row.try_get("id")?,
        instance_id: row.try_get("instance_id")?,
        kind: EventKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("event kind `{kind}`")))?,
        conversation: row.try_get("conversation")?,
        payload: row.try_get("payload")?,
        created_at: row.try_get("created_at")?,
    })
}

/// The longest a feed read waits for older transactions to finish (see [`list_events`]).
pub(super) const HORIZON_WAIT: Duration = Duration::from_secs(2);

/// An instance's events after a feed position, oldest first, as far as they are final.
///
/// Feed positions follow transaction ids (see [`super::append`]), so an event is returned
/// only once every transaction with a smaller id has finished: its position is below the
/// horizon, the oldest running transaction of this read's snapshot. A committed event above
/// the horizon waits for the older transactions, which are short writes, and the read waits
/// with it (up to [`HORIZON_WAIT`], should something else hold a transaction open), so that a
/// reader woken by an event's notice finds that event.
pub(super) async fn list_events(
    pool: &PgPool,
    instance_id: i64,
    after: i64,
    limit: u32,
) -> StoreResult<Vec<EventRecord>> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS}, pg_snapshot_xmin(pg_current_snapshot())::TEXT::INT8 << {FEED_SHIFT} AS horizon \
             FROM events WHERE instance_id = $1 AND seq > $2 AND kind != 'test' ORDER BY seq LIMIT $3"
        ))
        .bind(instance_id)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
        let Some(horizon) = rows.first().map(|r| r.try_get::<i64, _>("horizon")).transpose()? else {
            return Ok(Vec::new());
        };
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            let record = event(row)?;
            if record.seq >= horizon {
                break;
            }
            events.push(record);
        }
        if events.len() == rows.len() || started.elapsed() >= HORIZON_WAIT {
            return Ok(events);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

pub(super) async fn get_event(pool: &PgPool, instance_id: i64, id: &str) -> StoreResult<Option<EventRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE id = $1 AND instance_id = $2"
    ))
    .bind(id)
    .bind(instance_id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(event).transpose()
}

pub(super) async fn list_attempts(pool: &PgPool, event_seq: i64) -> StoreResult<Vec<AttemptRecord>> {
    let rows = sqlx::query(
        "SELECT endpoint_id, attempt, started_at, duration_ms, status_code, response, error, success \
         FROM attempts WHERE event_seq = $1 ORDER BY id",
    )
    .bind(event_seq)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let status: Option<i32> = r.try_get("status_code")?;
            let attempt: i32 = r.try_get("attempt")?;
            Ok(AttemptRecord {
                endpoint_id: r.try_get("endpoint_id")?,
                attempt: attempt as u32,
                started_at: rfc3339(r.try_get("started_at")?),
                duration_ms: r.try_get("duration_ms")?,
                status_code: status.map(|s| s as u16),
                response: r.try_get("response")?,
                error: r.try_get("error")?,
                outcome: if r.try_get::<bool, _>("success")? {
                    "success"
                } else {
                    "failure"
                },
            })
        })
        .collect()
}

pub(super) async fn delivery_statuses(pool: &PgPool, event_seq: i64) -> StoreResult<Vec<DeliveryStatus>> {
    let rows = sqlx::query(
        "SELECT endpoint_id, state, failures, attempt_offset, next_at FROM deliveries WHERE event_seq = $1 ORDER BY id",
    )
    .bind(event_seq)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(rules::delivery_status(
                r.try_get("endpoint_id")?,
                DeliveryState::from_code(r.try_get::<i16, _>("state")?.into())?,
                r.try_get::<i32, _>("failures")?.into(),
                r.try_get::<i32, _>("attempt_offset")?.into(),
                r.try_get("next_at")?,
            ))
        })
        .collect()
}

/// Delivers an event again (see the SQLite backend for the rules, which are the same).
pub(super) async fn resend(tx: &mut Tx, event_seq: i64, endpoint_id: Option<&str>, now: Millis) -> StoreResult<usize> {
    let row = sqlx::query("SELECT instance_id, kind, conversation FROM events WHERE seq = $1")
        .bind(event_seq)
        .fetch_one(&mut **tx)
        .await?;
    let instance_id: i64 = row.try_get("instance_id")?;
    let kind: String = row.try_get("kind")?;
    let conversation: String = row.try_get("conversation")?;
    let kind = EventKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("event kind `{kind}`")))?;
    let targets =
        sqlx::query("SELECT id, events FROM endpoints WHERE instance_id = $1 AND ($2::TEXT IS NULL OR id = $2)")
            .bind(instance_id)
            .bind(endpoint_id)
            .fetch_all(&mut **tx)
            .await?;
    let mut scheduled = 0;
    for target in targets {
        let endpoint: String = target.try_get("id")?;
        let bits: i16 = target.try_get("events")?;
        let latest = sqlx::query(
            "SELECT id, state, failures, attempt_offset FROM deliveries WHERE event_seq = $1 AND endpoint_id = $2 \
             ORDER BY id DESC LIMIT 1",
        )
        .bind(event_seq)
        .bind(&endpoint)
        .fetch_optional(&mut **tx)
        .await?;
        let latest = match latest {
            Some(row) => {
                let state = DeliveryState::from_code(row.try_get::<i16, _>("state")?.into())?;
                Some(Latest {
                    delivery_id: row.try_get("id")?,
                    state,
                    attempts: rules::attempts_made(
                        state,
                        row.try_get::<i32, _>("failures")?.into(),
                        row.try_get::<i32, _>("attempt_offset")?.into(),
                    ),
                })
            }
            None => None,
        };
        // A test event is only ever delivered where it was sent.
        let subscribed = kind != EventKind::Test && crate::webhooks::EventFilter::from_bits(bits as u8).accepts(kind);
        match rules::resend_step(latest, endpoint_id.is_some(), subscribed) {
            ResendStep::MakeDue(id) => {
                // Not while an attempt is running or the endpoint is paused.
                let moved = sqlx::query(
                    "UPDATE deliveries SET next_at = $2 WHERE id = $1 AND lease_until IS NULL AND next_at != $3",
                )
                .bind(id)
                .bind(now)
                .bind(PAUSED)
                .execute(&mut **tx)
                .await?
                .rows_affected();
                if moved == 0 {
                    continue;
                }
            }
            ResendStep::Nothing => continue,
            ResendStep::Enqueue { attempt_offset } => {
                enqueue(tx, event_seq, &endpoint, &conversation, attempt_offset as i32, now).await?;
            }
        }
        scheduled += 1;
    }
    Ok(scheduled)
}

/// Stores a test event with one delivery, claimed at once by the caller.
pub(super) async fn test_event(
    tx: &mut Tx,
    instance_id: i64,
    endpoint_id: &str,
    e: &EventDraft,
    lease_until: Millis,
) -> StoreResult<DueDelivery> {
    let record = super::append::append(
        tx,
        &[super::append::NewEvent {
            instance_id,
            draft: e,
            hand_over: None,
        }],
    )
    .await?
    .records
    .remove(0);
    let id = enqueue(tx, record.seq, endpoint_id, &e.conversation, 0, e.created_at).await?;
    sqlx::query("UPDATE deliveries SET lease_until = $2, lease_owner = botlinkd_process(), next_at = $2 WHERE id = $1")
        .bind(id)
        .bind(lease_until)
        .execute(&mut **tx)
        .await?;
    let row = sqlx::query(
        "SELECT url, secret, CASE WHEN previous_secret_until > $2 THEN previous_secret END AS previous_secret, \
         rate_limit FROM endpoints WHERE id = $1",
    )
    .bind(endpoint_id)
    .bind(e.created_at)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| StoreError::Conflict("the endpoint was deleted meanwhile".into()))?;
    let secret: String = row.try_get("secret")?;
    Ok(DueDelivery {
        delivery_id: id,
        event_seq: record.seq,
        event_id: e.id.clone(),
        instance_id,
        endpoint_id: endpoint_id.to_string(),
        url: row.try_get("url")?,
        secret: SigningSecret::parse(&secret).map_err(|err| StoreError::Corrupt(err.to_string()))?,
        previous_secret: row
            .try_get::<Option<String>, _>("previous_secret")?
            .and_then(|p| SigningSecret::parse(&p).ok()),
        rate_limit: rate_limit(&row)?,
        payload: Arc::from(e.payload.as_str()),
        attempt: 1,
        failures: 0,
        lease_until,
        after: None,
    })
}

/// Claims due deliveries: the oldest due heads, locked with SKIP LOCKED so that processes
/// claiming at the same time take different ones, leased until `lease_until`.
pub(super) async fn claim(
    pool: &PgPool,
    now: Millis,
    limit: u32,
    skip: &[String],
    lease_until: Millis,
) -> StoreResult<Vec<DueDelivery>> {
    let rows = sqlx::query(&format!(
        "WITH due AS ( \
           SELECT d.id FROM deliveries d JOIN endpoints ep ON ep.id = d.endpoint_id \
           WHERE d.state = 1 AND d.next_at <= $1 AND ep.enabled AND NOT (d.endpoint_id = ANY($2)) \
           ORDER BY d.next_at LIMIT $3 FOR UPDATE OF d SKIP LOCKED) \
         UPDATE deliveries d SET lease_until = $4, lease_owner = botlinkd_process(), next_at = $4 FROM due, events ev, endpoints ep \
         WHERE d.id = due.id AND ev.seq = d.event_seq AND ep.id = d.endpoint_id \
         RETURNING {DUE_RETURNING}",
    ))
    .bind(now)
    .bind(skip.to_vec())
    .bind(i64::from(limit))
    .bind(lease_until)
    .fetch_all(pool)
    .await?;
    let mut due: Vec<DueDelivery> = rows
        .iter()
        .map(|r| due_row(r, lease_until))
        .collect::<StoreResult<_>>()?;
    due.sort_by_key(|d| d.delivery_id);
    Ok(due)
}

/// What a claim returns of a delivery (`$1` is now, for the rotation grace period).
const DUE_RETURNING: &str = "d.id, d.event_seq, ev.id AS event_id, ev.instance_id, d.endpoint_id, ep.url, ep.secret, \
     ev.payload, d.failures, d.attempt_offset, \
     CASE WHEN ep.previous_secret_until > $1 THEN ep.previous_secret END AS previous_secret, ep.rate_limit";

/// A leased delivery as the engine takes it, from a row with [`DUE_RETURNING`]'s columns.
pub(super) fn due_row(r: &PgRow, lease_until: Millis) -> StoreResult<DueDelivery> {
    let secret: String = r.try_get("secret")?;
    let payload: String = r.try_get("payload")?;
    let failures: i32 = r.try_get("failures")?;
    let offset: i32 = r.try_get("attempt_offset")?;
    Ok(DueDelivery {
        delivery_id: r.try_get("id")?,
        event_seq: r.try_get("event_seq")?,
        event_id: r.try_get("event_id")?,
        instance_id: r.try_get("instance_id")?,
        endpoint_id: r.try_get("endpoint_id")?,
        url: r.try_get("url")?,
        secret: SigningSecret::parse(&secret).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        previous_secret: r
            .try_get::<Option<String>, _>("previous_secret")?
            .and_then(|p| SigningSecret::parse(&p).ok()),
        rate_limit: rate_limit(r)?,
        payload: Arc::from(payload),
        attempt: (offset + failures + 1) as u32,
        failures: failures as u32,
        lease_until,
        after: None,
    })
}

/// The endpoint's `rate_limit` column of a row.
pub(super) fn rate_limit(r: &PgRow) -> StoreResult<Option<u32>> {
    Ok(r.try_get::<Option<i32>, _>("rate_limit")?.map(|n| n.max(1) as u32))
}

/// Deletes old, finished events with their deliveries and attempts.
pub(super) async fn prune_events(pool: &PgPool, before: Millis, limit: u32) -> StoreResult<u32> {
    let mut tx = pool.begin().await?;
    // Instance by instance, each oldest first through `events_history`.
    let seqs: Vec<i64> = sqlx::query_scalar(
        "SELECT old.seq FROM instances i CROSS JOIN LATERAL ( \
           SELECT e.seq, e.created_at FROM events e WHERE e.instance_id = i.id AND e.created_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM deliveries d JOIN endpoints ep ON ep.id = d.endpoint_id \
                             WHERE d.event_seq = e.seq AND d.state IN (0, 1)) \
           ORDER BY e.created_at LIMIT $2 FOR UPDATE OF e SKIP LOCKED) AS old \
         LIMIT $2",
    )
    .bind(before)
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await?;
    for sql in [
        "DELETE FROM attempts WHERE event_seq = ANY($1)",
        "DELETE FROM deliveries WHERE event_seq = ANY($1)",
        "DELETE FROM events WHERE seq = ANY($1)",
    ] {
        sqlx::query(sql).bind(&seqs).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(seqs.len() as u32)
}

/// The dead-delivery conditions shared by the listing and the bulk resend: the latest
/// delivery of its event to its endpoint, dead, of the instance, within the filter.
const DEAD_WHERE: &str = "e.instance_id = $1 AND d.state = 3 AND ($2::TEXT IS NULL OR d.endpoint_id = $2) \
     AND ($3::BIGINT IS NULL OR e.created_at >= $3) AND ($4::BIGINT IS NULL OR e.created_at < $4) \
     AND NOT EXISTS (SELECT 1 FROM deliveries n WHERE n.event_seq = d.event_seq AND n.endpoint_id = d.endpoint_id \
                     AND n.id > d.id)";

pub(super) async fn list_dead(
    pool: &PgPool,
    instance_id: i64,
    filter: &DeadFilter,
    before: Option<i64>,
    limit: u32,
) -> StoreResult<Vec<DeadDelivery>> {
    let rows = sqlx::query(&format!(
        "SELECT d.id AS delivery_id, e.id AS event_id, e.kind, d.endpoint_id, d.conversation, e.created_at, \
           d.failures + d.attempt_offset AS attempts, a.started_at, a.status_code, a.error \
         FROM deliveries d JOIN events e ON e.seq = d.event_seq \
         LEFT JOIN attempts a ON a.id = (SELECT MAX(id) FROM attempts WHERE event_seq = d.event_seq AND endpoint_id = d.endpoint_id) \
         WHERE {DEAD_WHERE} AND d.id < $5 ORDER BY d.id DESC LIMIT $6"
    ))
    .bind(instance_id)
    .bind(filter.endpoint_id.as_deref())
    .bind(filter.since)
    .bind(filter.until)
    .bind(before.unwrap_or(i64::MAX))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(DeadDelivery {
                delivery_id: r.try_get("delivery_id")?,
                event_id: r.try_get("event_id")?,
                event_type: r.try_get("kind")?,
                endpoint_id: r.try_get("endpoint_id")?,
                conversation: r.try_get("conversation")?,
                event_created_at: rfc3339(r.try_get("created_at")?),
                attempts: r.try_get::<i32, _>("attempts")? as u32,
                last_attempt_at: r.try_get::<Option<Millis>, _>("started_at")?.map(rfc3339),
                last_status_code: r.try_get::<Option<i32>, _>("status_code")?.map(|c| c as u16),
                last_error: r.try_get("error")?,
            })
        })
        .collect()
}

pub(super) async fn resend_dead(
    tx: &mut Tx,
    instance_id: i64,
    filter: &DeadFilter,
    limit: u32,
    now: Millis,
) -> StoreResult<usize> {
    let pairs: Vec<(i64, String, String)> = sqlx::query_as(&format!(
        "SELECT d.event_seq, d.endpoint_id, d.conversation FROM deliveries d JOIN events e ON e.seq = d.event_seq \
         WHERE {DEAD_WHERE} ORDER BY d.id LIMIT $5"
    ))
    .bind(instance_id)
    .bind(filter.endpoint_id.as_deref())
    .bind(filter.since)
    .bind(filter.until)
    .bind(i64::from(limit))
    .fetch_all(&mut **tx)
    .await?;
    super::append::lock_conversations(tx, pairs.iter().map(|(_, _, c)| (instance_id, c.as_str()))).await?;
    let mut scheduled = 0;
    for (seq, endpoint_id, _) in pairs {
        scheduled += resend(tx, seq, Some(&endpoint_id), now).await?;
    }
    Ok(scheduled)
}

//! PostgreSQL SQL for messages, conversations and unread counts, sandbox schedules and
//! idempotency keys, and `apply_status`, which locks the message row `FOR UPDATE` (under its
//! conversation's lock), so that two processes applying the same status publish it once.

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use super::Tx;
use super::append::Newest;
use crate::clock::Millis;
use crate::messages::{Direction, MessageStatus, StoredMessage};
use crate::store::{
    ConversationSummary, IdempotencyRecord, NewMessage, ScheduledStatus, StatusChange, StatusOutcome, StoreError,
    StoreResult,
};

const COLUMNS: &str =
    "m.seq, m.id, m.direction, m.customer, m.business, m.kind, m.body, m.detail, m.status, m.created_at";

fn message(row: &PgRow) -> StoreResult<StoredMessage> {
    let direction: String = row.try_get("direction")?;
    let direction =
        Direction::parse(&direction).ok_or_else(|| StoreError::Corrupt(format!("direction `{direction}`")))?;
    let customer: String = row.try_get("customer")?;
    let business: String = row.try_get("business")?;
    let (from, to) = match direction {
        Direction::Inbound => (customer, business),
        Direction::Outbound => (business, customer),
    };
    let detail: String = row.try_get("detail")?;
    let status: String = row.try_get("status")?;
    let created_at: Millis = row.try_get("created_at")?;
    Ok(StoredMessage {
        seq: row.try_get("seq")?,
        message_id: row.try_get("id")?,
        direction,
        from,
        to,
        kind: row.try_get("kind")?,
        body: row.try_get("body")?,
        detail: serde_json::from_str(&detail).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        status: MessageStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("status `{status}`")))?,
        timestamp: created_at / 1000,
        created_at,
    })
}

/// Stores a message and moves its conversation to the top; `None` (and nothing written)
/// when a message with that id is already stored.
pub(super) async fn insert(tx: &mut Tx, instance_id: i64, m: &NewMessage) -> StoreResult<Option<i64>> {
    let detail = serde_json::Value::Object(m.detail.clone()).to_string();
    let seq: Option<i64> = sqlx::query_scalar(
        "INSERT INTO messages (id, instance_id, direction, customer, business, kind, body, detail, status, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING RETURNING seq",
    )
    .bind(&m.message_id)
    .bind(instance_id)
    .bind(m.direction.as_str())
    .bind(&m.customer)
    .bind(&m.business)
    .bind(&m.kind)
    .bind(&m.body)
    .bind(detail)
    .bind(m.status.as_str())
    .bind(m.created_at)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(seq) = seq else { return Ok(None) };
    // An inbound message adds to the unread count; a reply means the business read them.
    let inbound = i64::from(m.direction == Direction::Inbound);
    sqlx::query(
        "INSERT INTO conversations (instance_id, customer, name, last_seq, message_count, unread, last_inbound_at) \
         VALUES ($1, $2, $3, $4, 1, $5, $6) \
         ON CONFLICT (instance_id, customer) DO UPDATE SET \
           last_seq = EXCLUDED.last_seq, message_count = conversations.message_count + 1, \
           name = COALESCE(EXCLUDED.name, conversations.name), \
           unread = CASE WHEN EXCLUDED.unread = 1 THEN conversations.unread + 1 ELSE 0 END, \
           last_inbound_at = GREATEST(conversations.last_inbound_at, EXCLUDED.last_inbound_at)",
    )
    .bind(instance_id)
    .bind(&m.customer)
    .bind(m.customer_name.as_deref())
    .bind(seq)
    .bind(inbound)
    .bind((inbound == 1).then_some(m.created_at))
    .execute(&mut **tx)
    .await?;
    Ok(Some(seq))
}

pub(super) async fn get(pool: &PgPool, instance_id: i64, message_id: &str) -> StoreResult<Option<StoredMessage>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM messages m WHERE m.id = $1 AND m.instance_id = $2"
    ))
    .bind(message_id)
    .bind(instance_id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(message).transpose()
}

/// When the customer last wrote in this conversation, if ever.
pub(super) async fn last_inbound_at(pool: &PgPool, instance_id: i64, customer: &str) -> StoreResult<Option<Millis>> {
    Ok(sqlx::query_scalar::<_, Option<Millis>>(
        "SELECT last_inbound_at FROM conversations WHERE instance_id = $1 AND customer = $2",
    )
    .bind(instance_id)
    .bind(customer)
    .fetch_optional(pool)
    .await?
    .flatten())
}

pub(super) async fn list_conversations(
    pool: &PgPool,
    instance_id: i64,
    before: Option<i64>,
    limit: u32,
    search: Option<&str>,
) -> StoreResult<Vec<ConversationSummary>> {
    let rows = sqlx::query(&format!(
        "SELECT c.name AS customer_name, c.message_count, c.unread, c.last_inbound_at, {COLUMNS} \
         FROM conversations c JOIN messages m ON m.seq = c.last_seq \
         WHERE c.instance_id = $1 AND c.last_seq < $2 \
           AND ($4::TEXT IS NULL OR c.customer ILIKE $4 OR c.name ILIKE $4) \
         ORDER BY c.last_seq DESC LIMIT $3"
    ))
    .bind(instance_id)
    .bind(before.unwrap_or(i64::MAX))
    .bind(i64::from(limit))
    .bind(search.map(crate::store::contains_pattern))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ConversationSummary {
                number: row.try_get("customer")?,
                name: row.try_get("customer_name")?,
                message_count: row.try_get("message_count")?,
                unread: row.try_get("unread")?,
                window_expires_at: crate::store::window_expires_at(row.try_get("last_inbound_at")?),
                last_message: message(row)?,
            })
        })
        .collect()
}

pub(super) async fn mark_read(pool: &PgPool, instance_id: i64, customer: &str) -> StoreResult<bool> {
    let changed = sqlx::query("UPDATE conversations SET unread = 0 WHERE instance_id = $1 AND customer = $2")
        .bind(instance_id)
        .bind(customer)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(changed > 0)
}

pub(super) async fn list(
    pool: &PgPool,
    instance_id: i64,
    customer: &str,
    before: Option<i64>,
    limit: u32,
) -> StoreResult<Vec<StoredMessage>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM messages m WHERE m.instance_id = $1 AND m.customer = $2 AND m.seq < $3 \
         ORDER BY m.seq DESC LIMIT $4"
    ))
    .bind(instance_id)
    .bind(customer)
    .bind(before.unwrap_or(i64::MAX))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(message).collect()
}

pub(super) async fn schedule(tx: &mut Tx, s: &ScheduledStatus) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO scheduled_statuses (message_id, status, instance_id, customer, due_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (message_id, status) DO UPDATE SET due_at = EXCLUDED.due_at",
    )
    .bind(&s.message_id)
    .bind(s.status.as_str())
    .bind(s.instance_id)
    .bind(&s.customer)
    .bind(s.due_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(super) async fn due_statuses(pool: &PgPool, now: Millis, limit: u32) -> StoreResult<Vec<ScheduledStatus>> {
    let rows = sqlx::query(
        "SELECT message_id, status, instance_id, customer, due_at FROM scheduled_statuses \
         WHERE due_at <= $1 ORDER BY due_at LIMIT $2",
    )
    .bind(now)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let status: String = r.try_get("status")?;
            Ok(ScheduledStatus {
                message_id: r.try_get("message_id")?,
                status: MessageStatus::parse(&status)
                    .ok_or_else(|| StoreError::Corrupt(format!("status `{status}`")))?,
                instance_id: r.try_get("instance_id")?,
                customer: r.try_get("customer")?,
                due_at: r.try_get("due_at")?,
            })
        })
        .collect()
}

/// Records an Idempotency-Key (forgetting an expired one first); `false` if it is taken.
pub(super) async fn remember_idempotent(
    tx: &mut Tx,
    instance_id: i64,
    key: &IdempotencyRecord,
    now: Millis,
) -> StoreResult<bool> {
    sqlx::query("DELETE FROM idempotency_keys WHERE instance_id = $1 AND key = $2 AND created_at < $3")
        .bind(instance_id)
        .bind(&key.key)
        .bind(key.expired_before)
        .execute(&mut **tx)
        .await?;
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (instance_id, key, request_hash, response, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (instance_id, key) DO NOTHING",
    )
    .bind(instance_id)
    .bind(&key.key)
    .bind(&key.request_hash)
    .bind(&key.response)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

pub(super) async fn idempotent_response(
    pool: &PgPool,
    instance_id: i64,
    key: &str,
    since: Millis,
) -> StoreResult<Option<(String, String)>> {
    let row = sqlx::query(
        "SELECT request_hash, response FROM idempotency_keys WHERE instance_id = $1 AND key = $2 AND created_at >= $3",
    )
    .bind(instance_id)
    .bind(key)
    .bind(since)
    .fetch_optional(pool)
    .await?;
    row.map(|r| Ok((r.try_get("request_hash")?, r.try_get("response")?)))
        .transpose()
}

/// Moves an outgoing message's status forward and publishes its ack (see the trait); with the
/// outcome, what to announce once the transaction commits.
pub(super) async fn apply_status(tx: &mut Tx, change: &StatusChange) -> StoreResult<(StatusOutcome, Vec<Newest>)> {
    let current: Option<String> = sqlx::query_scalar(
        "SELECT status FROM messages WHERE id = $1 AND instance_id = $2 AND direction = 'outbound' FOR UPDATE",
    )
    .bind(&change.message_id)
    .bind(change.instance_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(current) = current.as_deref().and_then(MessageStatus::parse) else {
        return Ok((StatusOutcome::NotFound, Vec::new()));
    };
    sqlx::query("DELETE FROM scheduled_statuses WHERE message_id = $1 AND status = $2")
        .bind(&change.message_id)
        .bind(change.status.as_str())
        .execute(&mut **tx)
        .await?;
    if !current.can_advance_to(change.status) {
        return Ok((StatusOutcome::Stale(current), Vec::new()));
    }
    sqlx::query("UPDATE messages SET status = $2 WHERE id = $1")
        .bind(&change.message_id)
        .bind(change.status.as_str())
        .execute(&mut **tx)
        .await?;
    if !change.status.can_advance_to(MessageStatus::Read) {
        sqlx::query("DELETE FROM scheduled_statuses WHERE message_id = $1")
            .bind(&change.message_id)
            .execute(&mut **tx)
            .await?;
    }
    let event = super::append::NewEvent {
        instance_id: change.instance_id,
        draft: &change.event,
        hand_over: None,
    };
    let mut appended = super::append::append(tx, &[event]).await?;
    Ok((StatusOutcome::Applied(appended.records.remove(0)), appended.newest))
}

/// The id and customer of the outgoing message a channel knows by `external_id`.
pub(super) async fn by_external_id(
    pool: &PgPool,
    instance_id: i64,
    external_id: &str,
) -> StoreResult<Option<(String, String)>> {
    Ok(
        sqlx::query_as("SELECT id, customer FROM messages WHERE instance_id = $1 AND external_id = $2")
            .bind(instance_id)
            .bind(external_id)
            .fetch_optional(pool)
            .await?,
    )
}

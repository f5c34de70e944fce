//! SQL for messages, conversations, sandbox status schedules and idempotency keys.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::corrupt;
use crate::clock::Millis;
use crate::messages::{Direction, MessageStatus, StoredMessage};
use crate::store::{ConversationSummary, NewMessage, ScheduledStatus, StoreResult};

const COLUMNS: &str = "seq, id, direction, customer, business, kind, body, detail, status, created_at";

fn message(row: &Row<'_>) -> rusqlite::Result<StoredMessage> {
    message_at(row, 0)
}

/// Reads a message whose columns (in `COLUMNS` order) start at column `o`, for joins.
fn message_at(row: &Row<'_>, o: usize) -> rusqlite::Result<StoredMessage> {
    let direction: String = row.get(o + 2)?;
    let direction = Direction::parse(&direction).ok_or_else(|| corrupt(o + 2, format!("direction `{direction}`")))?;
    let customer: String = row.get(o + 3)?;
    let business: String = row.get(o + 4)?;
    let (from, to) = match direction {
        Direction::Inbound => (customer, business),
        Direction::Outbound => (business, customer),
    };
    let detail: String = row.get(o + 7)?;
    let status: String = row.get(o + 8)?;
    let created_at: Millis = row.get(o + 9)?;
    Ok(StoredMessage {
        seq: row.get(o)?,
        message_id: row.get(o + 1)?,
        direction,
        from,
        to,
        kind: row.get(o + 5)?,
        body: row.get(o + 6)?,
        detail: serde_json::from_str(&detail).map_err(|e| corrupt(o + 7, e.to_string()))?,
        status: MessageStatus::parse(&status).ok_or_else(|| corrupt(o + 8, format!("status `{status}`")))?,
        timestamp: created_at / 1000,
        created_at,
    })
}

/// Stores a message and moves its conversation to the top; `None` (and nothing written)
/// when a message with that id is already stored.
pub(super) fn insert(conn: &Connection, instance_id: i64, m: &NewMessage) -> StoreResult<Option<i64>> {
    let detail = serde_json::Value::Object(m.detail.clone()).to_string();
    let inserted = conn
        .prepare_cached(
            "INSERT INTO messages (id, instance_id, direction, customer, business, kind, body, detail, status, \
             created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![
            m.message_id,
            instance_id,
            m.direction.as_str(),
            m.customer,
            m.business,
            m.kind,
            m.body,
            detail,
            m.status.as_str(),
            m.created_at
        ])?;
    if inserted == 0 {
        return Ok(None);
    }
    let seq = conn.last_insert_rowid();
    conn.prepare_cached(
        "INSERT INTO conversations (instance_id, customer, name, last_seq, message_count, unread, last_inbound_at) \
         VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6) \
         ON CONFLICT (instance_id, customer) DO UPDATE SET \
           last_seq = excluded.last_seq, message_count = message_count + 1, name = COALESCE(excluded.name, name), \
           unread = CASE WHEN excluded.unread = 1 THEN unread + 1 ELSE 0 END, \
           last_inbound_at = CASE WHEN last_inbound_at IS NULL OR excluded.last_inbound_at > last_inbound_at \
             THEN COALESCE(excluded.last_inbound_at, last_inbound_at) ELSE last_inbound_at END",
    )?
    // An inbound message adds to the unread count and opens the service window; a reply
    // means the business read them.
    .execute(params![
        instance_id,
        m.customer,
        m.customer_name,
        seq,
        m.direction == Direction::Inbound,
        (m.direction == Direction::Inbound).then_some(m.created_at)
    ])?;
    Ok(Some(seq))
}

pub(super) fn get(conn: &Connection, instance_id: i64, message_id: &str) -> StoreResult<Option<StoredMessage>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM messages WHERE id = ?1 AND instance_id = ?2"
    ))?;
    Ok(stmt.query_row(params![message_id, instance_id], message).optional()?)
}

/// The outgoing message's customer and status, for a status change.
pub(super) fn outbound_status(
    conn: &Connection,
    instance_id: i64,
    message_id: &str,
) -> StoreResult<Option<(String, MessageStatus)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT customer, status FROM messages WHERE id = ?1 AND instance_id = ?2 AND direction = 'outbound'",
    )?;
    let row = stmt
        .query_row(params![message_id, instance_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .optional()?;
    Ok(row.and_then(|(customer, status)| MessageStatus::parse(&status).map(|s| (customer, s))))
}

pub(super) fn set_status(conn: &Connection, message_id: &str, status: MessageStatus) -> StoreResult<()> {
    conn.prepare_cached("UPDATE messages SET status = ?2 WHERE id = ?1")?
        .execute(params![message_id, status.as_str()])?;
    Ok(())
}

/// When the customer last wrote in this conversation, if ever.
pub(super) fn last_inbound_at(conn: &Connection, instance_id: i64, customer: &str) -> StoreResult<Option<Millis>> {
    Ok(conn
        .prepare_cached("SELECT last_inbound_at FROM conversations WHERE instance_id = ?1 AND customer = ?2")?
        .query_row(params![instance_id, customer], |r| r.get::<_, Option<Millis>>(0))
        .optional()?
        .flatten())
}

pub(super) fn list_conversations(
    conn: &Connection,
    instance_id: i64,
    before: Option<i64>,
    limit: u32,
    search: Option<&str>,
) -> StoreResult<Vec<ConversationSummary>> {
    let pattern = search.map(crate::store::contains_pattern);
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT c.customer, c.name, c.message_count, c.unread, c.last_inbound_at, {} FROM conversations c JOIN messages m ON m.seq = c.last_seq \
         WHERE c.instance_id = ?1 AND c.last_seq < ?2 \
           AND (?4 IS NULL OR c.customer LIKE ?4 ESCAPE '\\' OR c.name LIKE ?4 ESCAPE '\\') \
         ORDER BY c.last_seq DESC LIMIT ?3",
        COLUMNS.split(", ").map(|c| format!("m.{c}")).collect::<Vec<_>>().join(", ")
    ))?;
    let rows = stmt.query_map(
        params![instance_id, before.unwrap_or(i64::MAX), limit, pattern],
        |row| {
            let last = message_at(row, 5)?;
            Ok(ConversationSummary {
                number: row.get(0)?,
                name: row.get(1)?,
                message_count: row.get(2)?,
                unread: row.get(3)?,
                window_expires_at: crate::store::window_expires_at(row.get(4)?),
                last_message: last,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Marks a conversation read; `false` if there is no such conversation.
pub(super) fn mark_read(conn: &Connection, instance_id: i64, customer: &str) -> StoreResult<bool> {
    let changed = conn
        .prepare_cached("UPDATE conversations SET unread = 0 WHERE instance_id = ?1 AND customer = ?2")?
        .execute(params![instance_id, customer])?;
    Ok(changed > 0)
}

pub(super) fn list(
    conn: &Connection,
    instance_id: i64,
    customer: &str,
    before: Option<i64>,
    limit: u32,
) -> StoreResult<Vec<StoredMessage>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM messages WHERE instance_id = ?1 AND customer = ?2 AND seq < ?3 ORDER BY seq DESC LIMIT ?4"
    ))?;
    let rows = stmt.query_map(
        params![instance_id, customer, before.unwrap_or(i64::MAX), limit],
        message,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn schedule(conn: &Connection, s: &ScheduledStatus) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO scheduled_statuses (message_id, status, instance_id, customer, due_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![s.message_id, s.status.as_str(), s.instance_id, s.customer, s.due_at])?;
    Ok(())
}

pub(super) fn due_statuses(conn: &Connection, now: Millis, limit: u32) -> StoreResult<Vec<ScheduledStatus>> {
    let mut stmt = conn.prepare_cached(
        "SELECT message_id, status, instance_id, customer, due_at FROM scheduled_statuses WHERE due_at <= ?1 ORDER BY due_at LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![now, limit], |r| {
        let status: String = r.get(1)?;
        Ok(ScheduledStatus {
            message_id: r.get(0)?,
            status: MessageStatus::parse(&status).ok_or_else(|| corrupt(1, format!("status `{status}`")))?,
            instance_id: r.get(2)?,
            customer: r.get(3)?,
            due_at: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn next_status_due(conn: &Connection) -> StoreResult<Option<Millis>> {
    Ok(conn.query_row("SELECT MIN(due_at) FROM scheduled_statuses", [], |r| r.get(0))?)
}

pub(super) fn drop_scheduled(conn: &Connection, message_id: &str, status: Option<MessageStatus>) -> StoreResult<()> {
    match status {
        Some(status) => conn
            .prepare_cached("DELETE FROM scheduled_statuses WHERE message_id = ?1 AND status = ?2")?
            .execute(params![message_id, status.as_str()])?,
        None => conn
            .prepare_cached("DELETE FROM scheduled_statuses WHERE message_id = ?1")?
            .execute([message_id])?,
    };
    Ok(())
}

pub(super) fn idempotent_response(
    conn: &Connection,
    instance_id: i64,
    key: &str,
    since: Millis,
) -> StoreResult<Option<(String, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT request_hash, response FROM idempotency_keys WHERE instance_id = ?1 AND key = ?2 AND created_at >= ?3",
    )?;
    Ok(stmt
        .query_row(params![instance_id, key, since], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

pub(super) fn forget_idempotent_before(
    conn: &Connection,
    instance_id: i64,
    key: &str,
    before: Millis,
) -> StoreResult<()> {
    conn.prepare_cached("DELETE FROM idempotency_keys WHERE instance_id = ?1 AND key = ?2 AND created_at < ?3")?
        .execute(params![instance_id, key, before])?;
    Ok(())
}

pub(super) fn remember_idempotent(
    conn: &Connection,
    instance_id: i64,
    key: &str,
    request_hash: &str,
    response: &str,
    now: Millis,
) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO idempotency_keys (instance_id, key, request_hash, response, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![instance_id, key, request_hash, response, now])?;
    Ok(())
}

/// The id and customer of the outgoing message a channel knows by `external_id`.
pub(super) fn by_external_id(
    conn: &Connection,
    instance_id: i64,
    external_id: &str,
) -> StoreResult<Option<(String, String)>> {
    let mut stmt =
        conn.prepare_cached("SELECT id, customer FROM messages WHERE instance_id = ?1 AND external_id = ?2")?;
    Ok(stmt
        .query_row(params![instance_id, external_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Records the channel's own id of an outgoing message.
pub(super) fn set_external_id(conn: &Connection, message_id: &str, external_id: &str) -> StoreResult<()> {
    conn.prepare_cached("UPDATE messages SET external_id = ?2 WHERE id = ?1")?
        .execute(params![message_id, external_id])?;
    Ok(())
}

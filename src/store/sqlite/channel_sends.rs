//! SQL for the queue of requests waiting to go to a channel (the Meta Graph API): enqueue,
//! claim the oldest row of each conversation, and finish (retry, accepted with the external
//! id, or abandoned). Claims are relaxed writes (see `db`).

use rusqlite::{Connection, OptionalExtension, params};

use super::messages;
use crate::clock::Millis;
use crate::store::{ChannelSend, NewChannelSend, SendOutcome, StoreResult};

pub(super) fn enqueue(conn: &Connection, send: &NewChannelSend) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO channel_sends (instance_id, message_id, customer, request, next_at, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
    )?
    .execute(params![
        send.instance_id,
        send.message_id,
        send.customer,
        send.request,
        send.created_at
    ])?;
    Ok(())
}

/// Claims due requests, only the oldest of each conversation (so one conversation's
/// messages leave in order), moving them out of reach until `lease_until`.
pub(super) fn claim(conn: &Connection, now: Millis, limit: u32, lease_until: Millis) -> StoreResult<Vec<ChannelSend>> {
    let mut stmt = conn.prepare_cached(
        "SELECT s.id, s.instance_id, s.message_id, s.customer, s.request, s.attempts, s.created_at \
         FROM channel_sends s WHERE s.next_at <= ?1 AND NOT EXISTS ( \
           SELECT 1 FROM channel_sends e WHERE e.instance_id = s.instance_id AND e.customer = s.customer \
           AND e.id < s.id) \
         ORDER BY s.next_at LIMIT ?2",
    )?;
    let claimed: Vec<ChannelSend> = stmt
        .query_map(params![now, limit], |r| {
            Ok(ChannelSend {
                id: r.get(0)?,
                instance_id: r.get(1)?,
                message_id: r.get(2)?,
                customer: r.get(3)?,
                request: r.get(4)?,
                attempts: r.get(5)?,
                created_at: r.get(6)?,
                lease_until,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut lease = conn.prepare_cached("UPDATE channel_sends SET next_at = ?2 WHERE id = ?1")?;
    for send in &claimed {
        lease.execute(params![send.id, lease_until])?;
    }
    Ok(claimed)
}

pub(super) fn finish(conn: &Connection, send: &ChannelSend, outcome: &SendOutcome) -> StoreResult<()> {
    match outcome {
        SendOutcome::Retry { at } => {
            conn.prepare_cached(
                "UPDATE channel_sends SET next_at = ?2, attempts = attempts + 1 WHERE id = ?1 AND next_at = ?3",
            )?
            .execute(params![send.id, at, send.lease_until])?;
        }
        SendOutcome::Accepted { external_id } => {
            if let (Some(message_id), Some(external_id)) = (&send.message_id, external_id) {
                messages::set_external_id(conn, message_id, external_id)?;
            }
            conn.prepare_cached("DELETE FROM channel_sends WHERE id = ?1")?
                .execute([send.id])?;
        }
        SendOutcome::Abandoned => {
            conn.prepare_cached("DELETE FROM channel_sends WHERE id = ?1 AND next_at = ?2")?
                .execute(params![send.id, send.lease_until])?;
        }
    }
    Ok(())
}

pub(super) fn next_due(conn: &Connection) -> StoreResult<Option<Millis>> {
    Ok(conn
        .query_row(
            "SELECT MIN(s.next_at) FROM channel_sends s WHERE NOT EXISTS ( \
               SELECT 1 FROM channel_sends e WHERE e.instance_id = s.instance_id AND e.customer = s.customer \
               AND e.id < s.id)",
            [],
            |r| r.get(0),
        )
        .optional()?
        .flatten())
}

pub(super) fn pending(conn: &Connection, instance_id: i64) -> StoreResult<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM channel_sends WHERE instance_id = ?1 AND message_id IS NOT NULL)",
        [instance_id],
        |r| r.get(0),
    )?)
}

//! PostgreSQL SQL for the queue of requests waiting to go to a channel (the Meta Graph API).
//! Claims use `FOR UPDATE SKIP LOCKED`, so several processes share the queue.

use sqlx::{PgPool, Row};

use crate::clock::Millis;
use crate::store::{ChannelSend, NewChannelSend, SendOutcome, StoreResult};

pub(super) async fn enqueue<'e, E: sqlx::PgExecutor<'e>>(executor: E, send: &NewChannelSend) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO channel_sends (instance_id, message_id, customer, request, next_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(send.instance_id)
    .bind(&send.message_id)
    .bind(&send.customer)
    .bind(&send.request)
    .bind(send.created_at)
    .execute(executor)
    .await?;
    Ok(())
}

/// Claims due requests, only the oldest of each conversation (so one conversation's
/// messages leave in order), moving them out of reach until `lease_until`.
pub(super) async fn claim(
    pool: &PgPool,
    now: Millis,
    limit: u32,
    lease_until: Millis,
) -> StoreResult<Vec<ChannelSend>> {
    let rows = sqlx::query(
        "UPDATE channel_sends SET next_at = $3, lease_owner = botlinkd_process() WHERE id IN ( \
           SELECT s.id FROM channel_sends s WHERE s.next_at <= $1 AND NOT EXISTS ( \
             SELECT 1 FROM channel_sends e WHERE e.instance_id = s.instance_id AND e.customer = s.customer \
             AND e.id < s.id) \
           ORDER BY s.next_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
         RETURNING id, instance_id, message_id, customer, request, attempts, created_at",
    )
    .bind(now)
    .bind(i64::from(limit))
    .bind(lease_until)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ChannelSend {
                id: r.try_get("id")?,
                instance_id: r.try_get("instance_id")?,
                message_id: r.try_get("message_id")?,
                customer: r.try_get("customer")?,
                request: r.try_get("request")?,
                attempts: r.try_get::<i32, _>("attempts")? as u32,
                created_at: r.try_get("created_at")?,
                lease_until,
            })
        })
        .collect()
}

pub(super) async fn finish(pool: &PgPool, send: &ChannelSend, outcome: &SendOutcome) -> StoreResult<()> {
    match outcome {
        SendOutcome::Retry { at } => {
            sqlx::query(
                "UPDATE channel_sends SET next_at = $2, attempts = attempts + 1, lease_owner = NULL \
                 WHERE id = $1 AND next_at = $3",
            )
            .bind(send.id)
            .bind(at)
            .bind(send.lease_until)
            .execute(pool)
            .await?;
        }
        SendOutcome::Accepted { external_id } => {
            let mut tx = pool.begin().await?;
            if let (Some(message_id), Some(external_id)) = (&send.message_id, external_id) {
                sqlx::query("UPDATE messages SET external_id = $2 WHERE id = $1")
                    .bind(message_id)
                    .bind(external_id)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("DELETE FROM channel_sends WHERE id = $1")
                .bind(send.id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        SendOutcome::Abandoned => {
            sqlx::query("DELETE FROM channel_sends WHERE id = $1 AND next_at = $2")
                .bind(send.id)
                .bind(send.lease_until)
                .execute(pool)
                .await?;
        }
    }
    Ok(())
}

pub(super) async fn next_due(pool: &PgPool) -> StoreResult<Option<Millis>> {
    Ok(sqlx::query_scalar(
        "SELECT MIN(s.next_at) FROM channel_sends s WHERE NOT EXISTS ( \
           SELECT 1 FROM channel_sends e WHERE e.instance_id = s.instance_id AND e.customer = s.customer \
           AND e.id < s.id)",
    )
    .fetch_one(pool)
    .await?)
}

pub(super) async fn pending(pool: &PgPool, instance_id: i64) -> StoreResult<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM channel_sends WHERE instance_id = $1 AND message_id IS NOT NULL)",
    )
    .bind(instance_id)
    .fetch_one(pool)
    .await?)
}

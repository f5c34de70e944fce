//! SQL for kept media and the downloads still to make.

use sqlx::{PgPool, Row};

use crate::clock::Millis;
use crate::store::{KeptMedia, MediaFetch, MediaFetchOutcome, StoreResult};

pub(super) async fn enqueue(pool: &PgPool, f: &MediaFetch, due_at: Millis) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO media_fetches (instance_id, message_id, media_id, kind, sha256, attempts, next_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, 0, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(f.instance_id)
    .bind(&f.message_id)
    .bind(&f.media_id)
    .bind(&f.kind)
    .bind(f.sha256.as_deref())
    .bind(due_at)
    .bind(f.created_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// Due downloads, locked `SKIP LOCKED` so that processes claiming at once take different ones.
pub(super) async fn claim(pool: &PgPool, now: Millis, limit: u32, lease_until: Millis) -> StoreResult<Vec<MediaFetch>> {
    let rows = sqlx::query(
        "UPDATE media_fetches f SET next_at = $3, lease_owner = botlinkd_process() FROM ( \
           SELECT instance_id, message_id FROM media_fetches WHERE next_at <= $1 \
           ORDER BY next_at LIMIT $2 FOR UPDATE SKIP LOCKED) due \
         WHERE f.instance_id = due.instance_id AND f.message_id = due.message_id \
         RETURNING f.instance_id, f.message_id, f.media_id, f.kind, f.sha256, f.attempts, f.created_at",
    )
    .bind(now)
    .bind(i64::from(limit))
    .bind(lease_until)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(MediaFetch {
                instance_id: r.try_get("instance_id")?,
                message_id: r.try_get("message_id")?,
                media_id: r.try_get("media_id")?,
                kind: r.try_get("kind")?,
                sha256: r.try_get("sha256")?,
                attempts: r.try_get::<i32, _>("attempts")? as u32,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}

pub(super) async fn finish(pool: &PgPool, f: &MediaFetch, outcome: &MediaFetchOutcome) -> StoreResult<()> {
    let mut tx = pool.begin().await?;
    match outcome {
        MediaFetchOutcome::Retry { at } => {
            sqlx::query(
                "UPDATE media_fetches SET attempts = attempts + 1, next_at = $3, lease_owner = NULL \
                 WHERE instance_id = $1 AND message_id = $2",
            )
            .bind(f.instance_id)
            .bind(&f.message_id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(());
        }
        MediaFetchOutcome::Kept(m) => {
            sqlx::query(
                "INSERT INTO media (instance_id, message_id, content_type, sha256, bytes, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (instance_id, message_id) DO NOTHING",
            )
            .bind(f.instance_id)
            .bind(&f.message_id)
            .bind(&m.content_type)
            .bind(&m.sha256)
            .bind(&m.bytes)
            .bind(m.created_at)
            .execute(&mut *tx)
            .await?;
        }
        MediaFetchOutcome::GiveUp => {}
    }
    sqlx::query("DELETE FROM media_fetches WHERE instance_id = $1 AND message_id = $2")
        .bind(f.instance_id)
        .bind(&f.message_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn kept(pool: &PgPool, instance_id: i64, message_id: &str) -> StoreResult<Option<KeptMedia>> {
    let row = sqlx::query(
        "SELECT content_type, sha256, bytes, created_at FROM media WHERE instance_id = $1 AND message_id = $2",
    )
    .bind(instance_id)
    .bind(message_id)
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok(KeptMedia {
            content_type: r.try_get("content_type")?,
            sha256: r.try_get("sha256")?,
            bytes: r.try_get("bytes")?,
            created_at: r.try_get("created_at")?,
        })
    })
    .transpose()
}

pub(super) async fn keep(pool: &PgPool, instance_id: i64, key: &str, m: &KeptMedia) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO media (instance_id, message_id, content_type, sha256, bytes, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (instance_id, message_id) DO UPDATE SET \
         content_type = EXCLUDED.content_type, sha256 = EXCLUDED.sha256, bytes = EXCLUDED.bytes, created_at = EXCLUDED.created_at",
    )
    .bind(instance_id)
    .bind(key)
    .bind(&m.content_type)
    .bind(&m.sha256)
    .bind(&m.bytes)
    .bind(m.created_at)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn exists(pool: &PgPool, instance_id: i64, key: &str) -> StoreResult<bool> {
    Ok(
        sqlx::query_scalar::<_, i32>("SELECT 1 FROM media WHERE instance_id = $1 AND message_id = $2")
            .bind(instance_id)
            .bind(key)
            .fetch_optional(pool)
            .await?
            .is_some(),
    )
}

pub(super) async fn prune(pool: &PgPool, before: Millis) -> StoreResult<u64> {
    Ok(sqlx::query("DELETE FROM media WHERE created_at < $1")
        .bind(before)
        .execute(pool)
        .await?
        .rows_affected())
}

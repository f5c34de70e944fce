//! SQL for kept media and the downloads still to make.

use rusqlite::{Connection, OptionalExtension, params};

use crate::clock::Millis;
use crate::store::{KeptMedia, MediaFetch, MediaFetchOutcome, StoreResult};

pub(super) fn enqueue(conn: &Connection, f: &MediaFetch, due_at: Millis) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO media_fetches (instance_id, message_id, media_id, kind, sha256, attempts, next_at, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7)",
    )?
    .execute(params![f.instance_id, f.message_id, f.media_id, f.kind, f.sha256, due_at, f.created_at])?;
    Ok(())
}

pub(super) fn any_due(conn: &Connection, now: Millis) -> StoreResult<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM media_fetches WHERE next_at <= ?1 LIMIT 1")?
        .query_row([now], |_| Ok(()))
        .optional()?
        .is_some())
}

pub(super) fn claim(conn: &Connection, now: Millis, limit: u32, lease_until: Millis) -> StoreResult<Vec<MediaFetch>> {
    let fetches = conn
        .prepare_cached(
            "SELECT instance_id, message_id, media_id, kind, sha256, attempts, created_at FROM media_fetches \
             WHERE next_at <= ?1 ORDER BY next_at LIMIT ?2",
        )?
        .query_map(params![now, limit], |r| {
            Ok(MediaFetch {
                instance_id: r.get(0)?,
                message_id: r.get(1)?,
                media_id: r.get(2)?,
                kind: r.get(3)?,
                sha256: r.get(4)?,
                attempts: r.get(5)?,
                created_at: r.get(6)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut lease =
        conn.prepare_cached("UPDATE media_fetches SET next_at = ?3 WHERE instance_id = ?1 AND message_id = ?2")?;
    for f in &fetches {
        lease.execute(params![f.instance_id, f.message_id, lease_until])?;
    }
    Ok(fetches)
}

pub(super) fn finish(conn: &Connection, f: &MediaFetch, outcome: &MediaFetchOutcome) -> StoreResult<()> {
    match outcome {
        MediaFetchOutcome::Retry { at } => {
            conn.prepare_cached(
                "UPDATE media_fetches SET attempts = attempts + 1, next_at = ?3 WHERE instance_id = ?1 AND message_id = ?2",
            )?
            .execute(params![f.instance_id, f.message_id, at])?;
            return Ok(());
        }
        MediaFetchOutcome::Kept(m) => {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO media (instance_id, message_id, content_type, sha256, bytes, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                f.instance_id,
                f.message_id,
                m.content_type,
                m.sha256,
                m.bytes,
                m.created_at
            ])?;
        }
        MediaFetchOutcome::GiveUp => {}
    }
    conn.prepare_cached("DELETE FROM media_fetches WHERE instance_id = ?1 AND message_id = ?2")?
        .execute(params![f.instance_id, f.message_id])?;
    Ok(())
}

pub(super) fn kept(conn: &Connection, instance_id: i64, message_id: &str) -> StoreResult<Option<KeptMedia>> {
    Ok(conn
        .prepare_cached(
            "SELECT content_type, sha256, bytes, created_at FROM media WHERE instance_id = ?1 AND message_id = ?2",
        )?
        .query_row(params![instance_id, message_id], |r| {
            Ok(KeptMedia {
                content_type: r.get(0)?,
                sha256: r.get(1)?,
                bytes: r.get(2)?,
                created_at: r.get(3)?,
            })
        })
        .optional()?)
}

pub(super) fn keep(conn: &Connection, instance_id: i64, key: &str, m: &KeptMedia) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO media (instance_id, message_id, content_type, sha256, bytes, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        instance_id,
        key,
        m.content_type,
        m.sha256,
        m.bytes,
        m.created_at
    ])?;
    Ok(())
}

pub(super) fn exists(conn: &Connection, instance_id: i64, key: &str) -> StoreResult<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM media WHERE instance_id = ?1 AND message_id = ?2")?
        .query_row(params![instance_id, key], |_| Ok(()))
        .optional()?
        .is_some())
}

pub(super) fn prune(conn: &Connection, before: Millis) -> StoreResult<u64> {
    Ok(conn.execute("DELETE FROM media WHERE created_at < ?1", [before])? as u64)
}

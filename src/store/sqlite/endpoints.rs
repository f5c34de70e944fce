//! SQL for webhook endpoints.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::corrupt;
use super::outbox::PAUSED;
use crate::clock::Millis;
use crate::store::{StoreError, StoreResult};
use crate::webhooks::{Endpoint, EndpointChange, EventFilter, NewEndpoint, SigningSecret};

const COLUMNS: &str = "id, instance_id, url, description, events, enabled, secret, created_at, updated_at";

fn endpoint(row: &Row<'_>) -> rusqlite::Result<Endpoint> {
    let secret: String = row.get(6)?;
    Ok(Endpoint {
        id: row.get(0)?,
        instance_id: row.get(1)?,
        url: row.get(2)?,
        description: row.get(3)?,
        events: EventFilter::from_bits(row.get::<_, u8>(4)?),
        enabled: row.get(5)?,
        secret: SigningSecret::parse(&secret).map_err(|e| corrupt(6, e.to_string()))?,
        created_at: row.get(7)?,
        updated_at: row.get(8)?,
    })
}

pub(super) fn create(
    conn: &Connection,
    id: &str,
    new: &NewEndpoint,
    secret: &SigningSecret,
    now: Millis,
) -> StoreResult<Endpoint> {
    conn.execute(
        &format!("INSERT INTO endpoints ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)"),
        params![
            id,
            new.instance_id,
            new.url.as_str(),
            new.description,
            new.events.bits(),
            new.enabled,
            secret.expose(),
            now
        ],
    )?;
    get(conn, new.instance_id, id)?.ok_or(StoreError::Corrupt("endpoint vanished".into()))
}

pub(super) fn list(conn: &Connection, instance_id: i64) -> StoreResult<Vec<Endpoint>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM endpoints WHERE instance_id = ?1 ORDER BY created_at, id"
    ))?;
    let rows = stmt.query_map([instance_id], endpoint)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn get(conn: &Connection, instance_id: i64, id: &str) -> StoreResult<Option<Endpoint>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM endpoints WHERE instance_id = ?1 AND id = ?2"
    ))?;
    Ok(stmt.query_row(params![instance_id, id], endpoint).optional()?)
}

pub(super) fn update(
    conn: &Connection,
    instance_id: i64,
    id: &str,
    change: &EndpointChange,
    now: Millis,
) -> StoreResult<Option<Endpoint>> {
    let changed = conn.execute(
        "UPDATE endpoints SET \
           url = COALESCE(?3, url), description = COALESCE(?4, description), \
           events = COALESCE(?5, events), enabled = COALESCE(?6, enabled), updated_at = ?7 \
         WHERE instance_id = ?1 AND id = ?2",
        params![
            instance_id,
            id,
            change.url.as_ref().map(|u| u.as_str().to_string()),
            change.description,
            change.events.map(|e| e.bits()),
            change.enabled,
            now
        ],
    )?;
    if changed == 0 {
        return Ok(None);
    }
    match change.enabled {
        // Disabling pauses the endpoint's pending heads (attempts under way finish first)…
        Some(false) => conn
            .prepare_cached(
                "UPDATE deliveries SET next_at = ?2 WHERE endpoint_id = ?1 AND state = 1 AND lease_until IS NULL",
            )?
            .execute(params![id, PAUSED])?,
        // …and enabling makes them due at once.
        Some(true) => conn
            .prepare_cached("UPDATE deliveries SET next_at = ?2 WHERE endpoint_id = ?1 AND state = 1 AND next_at = ?3")?
            .execute(params![id, now, PAUSED])?,
        None => 0,
    };
    get(conn, instance_id, id)
}

pub(super) fn rotate_secret(
    conn: &Connection,
    instance_id: i64,
    id: &str,
    secret: &SigningSecret,
    now: Millis,
) -> StoreResult<Option<Endpoint>> {
    let changed = conn.execute(
        "UPDATE endpoints SET secret = ?3, updated_at = ?4 WHERE instance_id = ?1 AND id = ?2",
        params![instance_id, id, secret.expose(), now],
    )?;
    if changed == 0 {
        return Ok(None);
    }
    get(conn, instance_id, id)
}

pub(super) fn delete(conn: &Connection, instance_id: i64, id: &str) -> StoreResult<bool> {
    let changed = conn.execute(
        "DELETE FROM endpoints WHERE instance_id = ?1 AND id = ?2",
        params![instance_id, id],
    )?;
    if changed > 0 {
        conn.execute(
            "DELETE FROM deliveries WHERE endpoint_id = ?1 AND state IN (0, 1)",
            [id],
        )?;
    }
    Ok(changed > 0)
}

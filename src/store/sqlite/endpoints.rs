//! SQL for webhook endpoints.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::corrupt;
use super::outbox::PAUSED;
use crate::clock::Millis;
use crate::store::health::disable_reason;
use crate::store::{AttemptResult, StoreError, StoreResult};
use crate::webhooks::{Endpoint, EndpointChange, EventFilter, NewEndpoint, SigningSecret};

const COLUMNS: &str = "id, instance_id, url, description, events, enabled, secret, created_at, updated_at, rate_limit";
/// What is read back: the written columns and the health ones.
const READ_COLUMNS: &str = "id, instance_id, url, description, events, enabled, secret, created_at, updated_at, disabled_reason, failing_since, previous_secret_until, rate_limit";

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
        disabled_reason: row.get(9)?,
        failing_since: row.get(10)?,
        previous_secret_until: row.get(11)?,
        rate_limit: row.get(12)?,
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
        &format!("INSERT INTO endpoints ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)"),
        params![
            id,
            new.instance_id,
            new.url.as_str(),
            new.description,
            new.events.bits(),
            new.enabled,
            secret.expose(),
            now,
            new.rate_limit
        ],
    )?;
    get(conn, new.instance_id, id)?.ok_or(StoreError::Corrupt("endpoint vanished".into()))
}

pub(super) fn list(conn: &Connection, instance_id: i64) -> StoreResult<Vec<Endpoint>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {READ_COLUMNS} FROM endpoints WHERE instance_id = ?1 ORDER BY created_at, id"
    ))?;
    let rows = stmt.query_map([instance_id], endpoint)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn get(conn: &Connection, instance_id: i64, id: &str) -> StoreResult<Option<Endpoint>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {READ_COLUMNS} FROM endpoints WHERE instance_id = ?1 AND id = ?2"
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
           events = COALESCE(?5, events), enabled = COALESCE(?6, enabled), updated_at = ?7, \
           disabled_reason = CASE WHEN ?6 IS NULL THEN disabled_reason ELSE NULL END, \
           failing_since = CASE WHEN ?6 = 1 THEN NULL ELSE failing_since END, \
           rate_limit = CASE WHEN ?8 THEN ?9 ELSE rate_limit END \
         WHERE instance_id = ?1 AND id = ?2",
        params![
            instance_id,
            id,
            change.url.as_ref().map(|u| u.as_str().to_string()),
            change.description,
            change.events.map(|e| e.bits()),
            change.enabled,
            now,
            change.rate_limit.is_some(),
            change.rate_limit.flatten()
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
    old_valid_until: Option<Millis>,
    now: Millis,
) -> StoreResult<Option<Endpoint>> {
    let changed = conn.execute(
        "UPDATE endpoints SET previous_secret = CASE WHEN ?5 IS NULL THEN NULL ELSE secret END, \
           previous_secret_until = ?5, secret = ?3, updated_at = ?4 WHERE instance_id = ?1 AND id = ?2",
        params![instance_id, id, secret.expose(), now, old_valid_until],
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

/// Keeps an endpoint's health after an attempt: a success ends its run of failures; a
/// failure starts or extends one and may disable it (see [`crate::store::health`]).
pub(super) fn record_health(conn: &Connection, r: &AttemptResult) -> StoreResult<()> {
    if r.success {
        conn.prepare_cached("UPDATE endpoints SET failing_since = NULL WHERE id = ?1 AND failing_since IS NOT NULL")?
            .execute([&r.endpoint_id])?;
        return Ok(());
    }
    let failing_since: Option<Millis> = conn
        .prepare_cached(
            "UPDATE endpoints SET failing_since = COALESCE(failing_since, ?2) WHERE id = ?1 AND enabled \
             RETURNING failing_since",
        )?
        .query_row(params![r.endpoint_id, r.started_at], |row| row.get(0))
        .optional()?;
    let Some(since) = failing_since else { return Ok(()) };
    let Some(reason) = disable_reason(r.status_code, since, r.started_at, r.disable_after, r.error.as_deref()) else {
        return Ok(());
    };
    tracing::warn!(endpoint_id = %r.endpoint_id, reason, "endpoint disabled");
    conn.prepare_cached("UPDATE endpoints SET enabled = 0, disabled_reason = ?2, updated_at = ?3 WHERE id = ?1")?
        .execute(params![r.endpoint_id, reason, r.started_at])?;
    conn.prepare_cached(
        "UPDATE deliveries SET next_at = ?2 WHERE endpoint_id = ?1 AND state = 1 AND lease_until IS NULL",
    )?
    .execute(params![r.endpoint_id, PAUSED])?;
    Ok(())
}

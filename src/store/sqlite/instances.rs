//! SQL for instances and their credentials.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::corrupt;
use crate::clock::Millis;
use crate::instances::MetaSettings;
use crate::instances::{AuthKeyHash, Channel, ChannelChange, Credentials, Instance, NewInstance};
use crate::phone::PhoneNumber;
use crate::store::{StoreError, StoreResult};

/// Instance ids start here, so they look like the numeric ids users know.
const FIRST_ID: i64 = 10001;

const COLUMNS: &str = "id, name, channel, phone_number, app_key, created_at, meta, attention";

fn instance(row: &Row<'_>) -> rusqlite::Result<Instance> {
    let channel: String = row.get(2)?;
    let phone: String = row.get(3)?;
    Ok(Instance {
        id: row.get(0)?,
        name: row.get(1)?,
        channel: Channel::parse(&channel).ok_or_else(|| corrupt(2, format!("unknown channel `{channel}`")))?,
        phone_number: PhoneNumber::parse(&phone).map_err(|e| corrupt(3, e.to_string()))?,
        app_key: row.get(4)?,
        created_at: row.get(5)?,
        meta: row
            .get::<_, Option<String>>(6)?
            .map(|m| MetaSettings::from_stored(&m))
            .transpose()
            .map_err(|e| corrupt(6, e))?,
        attention: row.get(7)?,
    })
}

pub(super) fn create(conn: &Connection, new: &NewInstance, now: Millis) -> StoreResult<Instance> {
    let id: i64 = conn.query_row("SELECT COALESCE(MAX(id) + 1, ?1) FROM instances", [FIRST_ID], |r| {
        r.get(0)
    })?;
    conn.execute(
        "INSERT INTO instances (id, name, channel, phone_number, app_key, auth_key_hash, created_at, meta, \
         meta_phone_number_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            id,
            new.name,
            new.channel.as_str(),
            new.phone_number.as_str(),
            new.credentials.app_key,
            &new.credentials.auth_key.hash().0[..],
            now,
            new.meta.as_ref().map(MetaSettings::to_stored),
            new.meta.as_ref().map(|m| m.phone_number_id.as_str()),
        ],
    )
    .map_err(meta_number_taken)?;
    Ok(Instance {
        id,
        name: new.name.clone(),
        channel: new.channel,
        phone_number: new.phone_number.clone(),
        app_key: new.credentials.app_key.clone(),
        created_at: now,
        meta: new.meta.clone(),
        attention: None,
    })
}

/// A uniqueness failure on the Meta number, as the conflict it is.
fn meta_number_taken(error: rusqlite::Error) -> StoreError {
    match &error {
        rusqlite::Error::SqliteFailure(e, Some(message))
            if e.code == rusqlite::ErrorCode::ConstraintViolation && message.contains("meta_phone_number_id") =>
        {
            StoreError::Conflict("another instance already has this Meta phone-number id".into())
        }
        _ => StoreError::from(error),
    }
}

pub(super) fn by_id(conn: &Connection, id: i64) -> StoreResult<Option<Instance>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM instances WHERE id = ?1"))?;
    Ok(stmt.query_row([id], instance).optional()?)
}

pub(super) fn meta_list(conn: &Connection) -> StoreResult<Vec<Instance>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM instances WHERE channel = 'meta' AND meta IS NOT NULL ORDER BY id"
    ))?;
    let rows = stmt.query_map([], instance)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn set_channel(conn: &Connection, id: i64, change: &ChannelChange) -> StoreResult<Option<Instance>> {
    let changed = conn
        .execute(
            "UPDATE instances SET channel = ?2, phone_number = ?3, meta = ?4, meta_phone_number_id = ?5, \
             attention = NULL WHERE id = ?1",
            params![
                id,
                change.channel.as_str(),
                change.phone_number.as_str(),
                change.meta.as_ref().map(MetaSettings::to_stored),
                change.meta.as_ref().map(|m| m.phone_number_id.as_str()),
            ],
        )
        .map_err(meta_number_taken)?;
    if changed == 0 {
        return Ok(None);
    }
    by_id(conn, id)
}

pub(super) fn set_attention(
    conn: &Connection,
    id: i64,
    attention: Option<&str>,
    if_meta: Option<&str>,
) -> StoreResult<()> {
    conn.execute(
        "UPDATE instances SET attention = ?2 WHERE id = ?1 AND (?3 IS NULL OR meta = ?3)",
        params![id, attention, if_meta],
    )?;
    Ok(())
}

pub(super) fn list(conn: &Connection) -> StoreResult<Vec<Instance>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM instances ORDER BY id"))?;
    let rows = stmt.query_map([], instance)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn by_app_key(conn: &Connection, app_key: &str) -> StoreResult<Option<(Instance, AuthKeyHash)>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS}, auth_key_hash FROM instances WHERE app_key = ?1"
    ))?;
    let found = stmt
        .query_row([app_key], |row| {
            let hash: Vec<u8> = row.get(8)?;
            Ok((instance(row)?, hash))
        })
        .optional()?;
    let Some((instance, hash)) = found else {
        return Ok(None);
    };
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| StoreError::Corrupt("auth key hash length".into()))?;
    Ok(Some((instance, AuthKeyHash(hash))))
}

pub(super) fn rotate_keys(conn: &Connection, id: i64, keys: &Credentials) -> StoreResult<Option<Instance>> {
    let changed = conn.execute(
        "UPDATE instances SET app_key = ?2, auth_key_hash = ?3 WHERE id = ?1",
        params![id, keys.app_key, &keys.auth_key.hash().0[..]],
    )?;
    if changed == 0 {
        return Ok(None);
    }
    Ok(Some(conn.query_row(
        &format!("SELECT {COLUMNS} FROM instances WHERE id = ?1"),
        [id],
        instance,
    )?))
}

//! PostgreSQL SQL for instances (with the channel switch, the meta instance list and the
//! attention flag) and webhook endpoints: pausing and un-pausing an endpoint's heads when it is
//! disabled or enabled, deleting its open deliveries with it, the secret rotation, and
//! `record_health`, as SQLite's. Changing or deleting an endpoint locks its row and then its
//! deliveries, and takes no conversation lock (see the lock order in `super`).

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use super::Tx;
use super::outbox::PAUSED;
use crate::clock::Millis;
use crate::instances::MetaSettings;
use crate::instances::{AuthKeyHash, Channel, ChannelChange, Credentials, Instance, NewInstance};
use crate::phone::PhoneNumber;
use crate::store::health::disable_reason;
use crate::store::{AttemptResult, StoreError, StoreResult};
use crate::webhooks::{Endpoint, EndpointChange, EventFilter, NewEndpoint, SigningSecret};

const INSTANCE_COLUMNS: &str = "id, name, channel, phone_number, app_key, created_at, meta, attention";

fn instance(row: &PgRow) -> StoreResult<Instance> {
    let channel: String = row.try_get("channel")?;
    let phone: String = row.try_get("phone_number")?;
    Ok(Instance {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        channel: Channel::parse(&channel).ok_or_else(|| StoreError::Corrupt(format!("channel `{channel}`")))?,
        phone_number: PhoneNumber::parse(&phone).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        app_key: row.try_get("app_key")?,
        created_at: row.try_get("created_at")?,
        meta: row
            .try_get::<Option<String>, _>("meta")?
            .map(|m| MetaSettings::from_stored(&m))
            .transpose()
            .map_err(StoreError::Corrupt)?,
        attention: row.try_get("attention")?,
    })
}

/// A uniqueness failure on the Meta number, as the conflict it is.
fn meta_number_taken(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(e) if e.is_unique_violation() && e.constraint().is_some_and(|c| c.contains("meta")) => {
            StoreError::Conflict("another instance already has this Meta phone-number id".into())
        }
        _ => StoreError::from(error),
    }
}

pub(super) async fn instance_by_id(pool: &PgPool, id: i64) -> StoreResult<Option<Instance>> {
    let row = sqlx::query(&format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(instance).transpose()
}

pub(super) async fn meta_instances(pool: &PgPool) -> StoreResult<Vec<Instance>> {
    let rows = sqlx::query(&format!(
        "SELECT {INSTANCE_COLUMNS} FROM instances WHERE channel = 'meta' AND meta IS NOT NULL ORDER BY id"
    ))
    .fetch_all(pool)
    .await?;
    rows.iter().map(instance).collect()
}

pub(super) async fn set_channel(pool: &PgPool, id: i64, change: &ChannelChange) -> StoreResult<Option<Instance>> {
    let row = sqlx::query(&format!(
        "UPDATE instances SET channel = $2, phone_number = $3, meta = $4, meta_phone_number_id = $5, \
         attention = NULL WHERE id = $1 RETURNING {INSTANCE_COLUMNS}"
    ))
    .bind(id)
    .bind(change.channel.as_str())
    .bind(change.phone_number.as_str())
    .bind(change.meta.as_ref().map(MetaSettings::to_stored))
    .bind(change.meta.as_ref().map(|m| m.phone_number_id.clone()))
    .fetch_optional(pool)
    .await
    .map_err(meta_number_taken)?;
    row.as_ref().map(instance).transpose()
}

pub(super) async fn set_attention(
    pool: &PgPool,
    id: i64,
    attention: Option<&str>,
    if_meta: Option<&str>,
) -> StoreResult<()> {
    sqlx::query("UPDATE instances SET attention = $2 WHERE id = $1 AND ($3::TEXT IS NULL OR meta = $3)")
        .bind(id)
        .bind(attention)
        .bind(if_meta)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn create_instance(pool: &PgPool, new: &NewInstance, now: Millis) -> StoreResult<Instance> {
    let row = sqlx::query(&format!(
        "INSERT INTO instances (name, channel, phone_number, app_key, auth_key_hash, created_at, meta, \
         meta_phone_number_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {INSTANCE_COLUMNS}"
    ))
    .bind(&new.name)
    .bind(new.channel.as_str())
    .bind(new.phone_number.as_str())
    .bind(&new.credentials.app_key)
    .bind(&new.credentials.auth_key.hash().0[..])
    .bind(now)
    .bind(new.meta.as_ref().map(MetaSettings::to_stored))
    .bind(new.meta.as_ref().map(|m| m.phone_number_id.clone()))
    .fetch_one(pool)
    .await
    .map_err(meta_number_taken)?;
    instance(&row)
}

pub(super) async fn list_instances(pool: &PgPool) -> StoreResult<Vec<Instance>> {
    let rows = sqlx::query(&format!("SELECT {INSTANCE_COLUMNS} FROM instances ORDER BY id"))
        .fetch_all(pool)
        .await?;
    rows.iter().map(instance).collect()
}

pub(super) async fn instance_by_app_key(pool: &PgPool, app_key: &str) -> StoreResult<Option<(Instance, AuthKeyHash)>> {
    let row = sqlx::query(&format!(
        "SELECT {INSTANCE_COLUMNS}, auth_key_hash FROM instances WHERE app_key = $1"
    ))
    .bind(app_key)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let hash: Vec<u8> = row.try_get("auth_key_hash")?;
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| StoreError::Corrupt("auth key hash length".into()))?;
    Ok(Some((instance(&row)?, AuthKeyHash(hash))))
}

pub(super) async fn rotate_keys(pool: &PgPool, id: i64, keys: &Credentials) -> StoreResult<Option<Instance>> {
    let row = sqlx::query(&format!(
        "UPDATE instances SET app_key = $2, auth_key_hash = $3 WHERE id = $1 RETURNING {INSTANCE_COLUMNS}"
    ))
    .bind(id)
    .bind(&keys.app_key)
    .bind(&keys.auth_key.hash().0[..])
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(instance).transpose()
}

const ENDPOINT_COLUMNS: &str =
    "id, instance_id, url, description, events, enabled, secret, created_at, updated_at, rate_limit";
/// What is read back: the written columns and the health ones.
const READ_COLUMNS: &str = "id, instance_id, url, description, events, enabled, secret, created_at, updated_at, disabled_reason, failing_since, previous_secret_until, rate_limit";

fn endpoint(row: &PgRow) -> StoreResult<Endpoint> {
    let secret: String = row.try_get("secret")?;
    let events: i16 = row.try_get("events")?;
    Ok(Endpoint {
        id: row.try_get("id")?,
        instance_id: row.try_get("instance_id")?,
        url: row.try_get("url")?,
        description: row.try_get("description")?,
        events: EventFilter::from_bits(events as u8),
        enabled: row.try_get("enabled")?,
        secret: SigningSecret::parse(&secret).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        disabled_reason: row.try_get("disabled_reason")?,
        failing_since: row.try_get("failing_since")?,
        previous_secret_until: row.try_get("previous_secret_until")?,
        rate_limit: row.try_get::<Option<i32>, _>("rate_limit")?.map(|n| n as u32),
    })
}

pub(super) async fn create_endpoint(
    pool: &PgPool,
    id: &str,
    new: &NewEndpoint,
    secret: &SigningSecret,
    now: Millis,
) -> StoreResult<Endpoint> {
    let row = sqlx::query(&format!(
        "INSERT INTO endpoints ({ENDPOINT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9) RETURNING {READ_COLUMNS}"
    ))
    .bind(id)
    .bind(new.instance_id)
    .bind(new.url.as_str())
    .bind(&new.description)
    .bind(new.events.bits() as i16)
    .bind(new.enabled)
    .bind(secret.expose())
    .bind(now)
    .bind(new.rate_limit.map(|n| n as i32))
    .fetch_one(pool)
    .await?;
    endpoint(&row)
}

pub(super) async fn list_endpoints(pool: &PgPool, instance_id: i64) -> StoreResult<Vec<Endpoint>> {
    let rows = sqlx::query(&format!(
        "SELECT {READ_COLUMNS} FROM endpoints WHERE instance_id = $1 ORDER BY created_at, id"
    ))
    .bind(instance_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(endpoint).collect()
}

pub(super) async fn get_endpoint(pool: &PgPool, instance_id: i64, id: &str) -> StoreResult<Option<Endpoint>> {
    let row = sqlx::query(&format!(
        "SELECT {READ_COLUMNS} FROM endpoints WHERE instance_id = $1 AND id = $2"
    ))
    .bind(instance_id)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(endpoint).transpose()
}

pub(super) async fn update_endpoint(
    tx: &mut Tx,
    instance_id: i64,
    id: &str,
    change: &EndpointChange,
    now: Millis,
) -> StoreResult<Option<Endpoint>> {
    let row = sqlx::query(&format!(
        "UPDATE endpoints SET url = COALESCE($3, url), description = COALESCE($4, description), \
           events = COALESCE($5, events), enabled = COALESCE($6, enabled), updated_at = $7, \
           disabled_reason = CASE WHEN $6::BOOLEAN IS NULL THEN disabled_reason ELSE NULL END, \
           failing_since = CASE WHEN $6::BOOLEAN THEN NULL ELSE failing_since END, \
           rate_limit = CASE WHEN $8 THEN $9 ELSE rate_limit END \
         WHERE instance_id = $1 AND id = $2 RETURNING {READ_COLUMNS}"
    ))
    .bind(instance_id)
    .bind(id)
    .bind(change.url.as_ref().map(|u| u.as_str().to_string()))
    .bind(change.description.as_deref())
    .bind(change.events.map(|e| e.bits() as i16))
    .bind(change.enabled)
    .bind(now)
    .bind(change.rate_limit.is_some())
    .bind(change.rate_limit.flatten().map(|n| n as i32))
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    match change.enabled {
        // Disabling pauses the endpoint's pending heads (attempts under way finish first)…
        Some(false) => {
            sqlx::query(
                "UPDATE deliveries SET next_at = $2 WHERE endpoint_id = $1 AND state = 1 AND lease_until IS NULL",
            )
            .bind(id)
            .bind(PAUSED)
            .execute(&mut **tx)
            .await?;
        }
        // …and enabling makes them due at once.
        Some(true) => {
            sqlx::query("UPDATE deliveries SET next_at = $2 WHERE endpoint_id = $1 AND state = 1 AND next_at = $3")
                .bind(id)
                .bind(now)
                .bind(PAUSED)
                .execute(&mut **tx)
                .await?;
        }
        None => {}
    }
    endpoint(&row).map(Some)
}

pub(super) async fn rotate_endpoint_secret(
    pool: &PgPool,
    instance_id: i64,
    id: &str,
    secret: &SigningSecret,
    old_valid_until: Option<Millis>,
    now: Millis,
) -> StoreResult<Option<Endpoint>> {
    let row = sqlx::query(&format!(
        "UPDATE endpoints SET previous_secret = CASE WHEN $5::BIGINT IS NULL THEN NULL ELSE secret END, \
           previous_secret_until = $5, secret = $3, updated_at = $4 \
         WHERE instance_id = $1 AND id = $2 RETURNING {READ_COLUMNS}"
    ))
    .bind(instance_id)
    .bind(id)
    .bind(secret.expose())
    .bind(now)
    .bind(old_valid_until)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(endpoint).transpose()
}

pub(super) async fn delete_endpoint(tx: &mut Tx, instance_id: i64, id: &str) -> StoreResult<bool> {
    let deleted = sqlx::query("DELETE FROM endpoints WHERE instance_id = $1 AND id = $2")
        .bind(instance_id)
        .bind(id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if deleted > 0 {
        sqlx::query("DELETE FROM deliveries WHERE endpoint_id = $1 AND state IN (0, 1)")
            .bind(id)
            .execute(&mut **tx)
            .await?;
        // Its pace, if it had a rate limit (paced keys are endpoint ids).
        sqlx::query("DELETE FROM pacing WHERE key = $1")
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(deleted > 0)
}

/// Keeps an endpoint's health after an attempt: a success ends its run of failures; a
/// failure starts or extends one and may disable it (see [`crate::store::health`]).
pub(super) async fn record_health(tx: &mut Tx, r: &AttemptResult) -> StoreResult<()> {
    if r.success {
        sqlx::query("UPDATE endpoints SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL")
            .bind(&r.endpoint_id)
            .execute(&mut **tx)
            .await?;
        return Ok(());
    }
    let failing_since: Option<Millis> = sqlx::query_scalar(
        "UPDATE endpoints SET failing_since = COALESCE(failing_since, $2) WHERE id = $1 AND enabled \
         RETURNING failing_since",
    )
    .bind(&r.endpoint_id)
    .bind(r.started_at)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(since) = failing_since else { return Ok(()) };
    let Some(reason) = disable_reason(r.status_code, since, r.started_at, r.disable_after, r.error.as_deref()) else {
        return Ok(());
    };
    tracing::warn!(endpoint_id = %r.endpoint_id, reason, "endpoint disabled");
    sqlx::query("UPDATE endpoints SET enabled = FALSE, disabled_reason = $2, updated_at = $3 WHERE id = $1")
        .bind(&r.endpoint_id)
        .bind(&reason)
        .bind(r.started_at)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE deliveries SET next_at = $2 WHERE endpoint_id = $1 AND state = 1 AND lease_until IS NULL")
        .bind(&r.endpoint_id)
        .bind(PAUSED)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

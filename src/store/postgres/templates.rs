//! SQL for the message-template catalogue.

use sqlx::{PgPool, Row};

use crate::clock::Millis;
use crate::store::StoreResult;
use crate::templates::Template;

pub(super) async fn replace(
    pool: &PgPool,
    instance_id: i64,
    templates: &[Template],
    synced_at: Millis,
) -> StoreResult<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM templates WHERE instance_id = $1")
        .bind(instance_id)
        .execute(&mut *tx)
        .await?;
    for t in templates {
        sqlx::query(
            "INSERT INTO templates (instance_id, name, language, category, status, body, params, buttons) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (instance_id, name, language) DO NOTHING",
        )
        .bind(instance_id)
        .bind(&t.name)
        .bind(&t.language)
        .bind(&t.category)
        .bind(&t.status)
        .bind(&t.body)
        .bind(t.params as i32)
        .bind(serde_json::to_string(&t.buttons).expect("labels serialise"))
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "INSERT INTO template_syncs (instance_id, synced_at) VALUES ($1, $2) \
         ON CONFLICT (instance_id) DO UPDATE SET synced_at = EXCLUDED.synced_at",
    )
    .bind(instance_id)
    .bind(synced_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn list(pool: &PgPool, instance_id: i64) -> StoreResult<(Vec<Template>, Option<Millis>)> {
    // The sync time first: a sync commits its templates and its time together, so templates
    // read after the time are at least that sync's (never "synced" with a catalogue not yet seen).
    let synced_at = sqlx::query_scalar("SELECT synced_at FROM template_syncs WHERE instance_id = $1")
        .bind(instance_id)
        .fetch_optional(pool)
        .await?;
    let rows = sqlx::query(
        "SELECT name, language, category, status, body, params, buttons FROM templates \
         WHERE instance_id = $1 ORDER BY name, language",
    )
    .bind(instance_id)
    .fetch_all(pool)
    .await?;
    let templates = rows
        .iter()
        .map(|r| {
            let buttons: String = r.try_get("buttons")?;
            Ok(Template {
                name: r.try_get("name")?,
                language: r.try_get("language")?,
                category: r.try_get("category")?,
                status: r.try_get("status")?,
                body: r.try_get("body")?,
                params: r.try_get::<i32, _>("params")? as u32,
                buttons: serde_json::from_str(&buttons).unwrap_or_default(),
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok((templates, synced_at))
}

//! SQL for the message-template catalogue.

use rusqlite::{Connection, OptionalExtension, params};

use crate::clock::Millis;
use crate::store::StoreResult;
use crate::templates::Template;

pub(super) fn replace(
    conn: &Connection,
    instance_id: i64,
    templates: &[Template],
    synced_at: Millis,
) -> StoreResult<()> {
    conn.execute("DELETE FROM templates WHERE instance_id = ?1", [instance_id])?;
    let mut insert = conn.prepare_cached(
        "INSERT OR REPLACE INTO templates (instance_id, name, language, category, status, body, params, buttons) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for t in templates {
        let buttons = serde_json::to_string(&t.buttons).expect("labels serialise");
        insert.execute(params![
            instance_id,
            t.name,
            t.language,
            t.category,
            t.status,
            t.body,
            t.params,
            buttons
        ])?;
    }
    conn.execute(
        "INSERT INTO template_syncs (instance_id, synced_at) VALUES (?1, ?2) \
         ON CONFLICT (instance_id) DO UPDATE SET synced_at = excluded.synced_at",
        params![instance_id, synced_at],
    )?;
    Ok(())
}

pub(super) fn list(conn: &Connection, instance_id: i64) -> StoreResult<(Vec<Template>, Option<Millis>)> {
    // The sync time first: a sync commits its templates and its time together, so templates
    // read after the time are at least that sync's (never "synced" with a catalogue not yet seen).
    let synced_at = conn
        .query_row(
            "SELECT synced_at FROM template_syncs WHERE instance_id = ?1",
            [instance_id],
            |r| r.get(0),
        )
        .optional()?;
    let mut stmt = conn.prepare_cached(
        "SELECT name, language, category, status, body, params, buttons FROM templates \
         WHERE instance_id = ?1 ORDER BY name, language",
    )?;
    let templates = stmt
        .query_map([instance_id], |r| {
            let buttons: String = r.get(6)?;
            Ok(Template {
                name: r.get(0)?,
                language: r.get(1)?,
                category: r.get(2)?,
                status: r.get(3)?,
                body: r.get(4)?,
                params: r.get(5)?,
                buttons: serde_json::from_str(&buttons).unwrap_or_default(),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok((templates, synced_at))
}

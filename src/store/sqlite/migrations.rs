//! SQLite migrations, numbered, applied in order; `PRAGMA user_version` records how far.
//!
//! `0001_core.sql`; `0002_unread.sql` adds `conversations.unread`; `0003_retention.sql` the
//! age indexes pruning uses; `0004_meta.sql` adds `instances.meta`, `meta_phone_number_id`
//! (unique where set) and `attention`, `messages.external_id` (unique per instance where set)
//! and the `channel_sends` table; `0005_endpoint_health.sql` adds `endpoints.disabled_reason`,
//! `failing_since`, `previous_secret` and `previous_secret_until` and the partial index
//! `deliveries_dead`; `0006_rate_limit.sql` adds `endpoints.rate_limit`; `0007_service_window.sql`
//! `conversations.last_inbound_at`; `0008_templates.sql` the `templates` catalogue and
//! `template_syncs`; `0009_media.sql` the kept `media` and the `media_fetches` queue; `0010_history.sql` the
//! event history's indexes and `attempt_stats`, and drops `events_by_age` (retention reads
//! `events_history` instance by instance).

use rusqlite::Connection;

use crate::store::StoreResult;

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_core.sql"),
    include_str!("migrations/0002_unread.sql"),
    include_str!("migrations/0003_retention.sql"),
    include_str!("migrations/0004_meta.sql"),
    include_str!("migrations/0005_endpoint_health.sql"),
    include_str!("migrations/0006_rate_limit.sql"),
    include_str!("migrations/0007_service_window.sql"),
    include_str!("migrations/0008_templates.sql"),
    include_str!("migrations/0009_media.sql"),
    include_str!("migrations/0010_history.sql"),
];

/// Applies every migration the database has not seen, each in its own transaction.
pub(super) fn apply(conn: &mut Connection) -> StoreResult<()> {
    let current: usize = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", index + 1))?;
        tx.commit()?;
        tracing::info!(version = index + 1, "applied sqlite migration");
    }
    Ok(())
}

//! SQLite migrations, numbered, applied in order; `PRAGMA user_version` records how far.

use rusqlite::Connection;

use crate::store::StoreResult;

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_core.sql"),
    include_str!("migrations/0002_unread.sql"),
    include_str!("migrations/0003_retention.sql"),
    include_str!("migrations/0004_meta.sql"),
    include_str!("migrations/0005_endpoint_health.sql"),
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

//! Housekeeping: removes what is no longer needed, in small batches so that no write waits
//! long behind it: events (with their deliveries and attempts) older than the retention
//! period once every delivery of theirs is finished, and expired Idempotency-Keys.
//! Conversation history (messages) is kept.
//!
//! [`step`] prunes in batches of 500 events, each its own write, until nothing is left; [`run`]
//! repeats it every ten minutes. Events are the bulk of the database (payload, deliveries,
//! attempts), so those older than `--retention` (30 days by default, `off` keeps them) go once
//! no delivery of theirs is waiting or pending; an event still owed to an endpoint, even a
//! paused one, is kept. Idempotency-Keys go after 24 hours (`IDEMPOTENCY_WINDOW_MS`). Messages
//! and conversations are history, not outbox, and are never pruned. Pruning never lets a
//! cursor be reused: SQLite's `events.seq` is `AUTOINCREMENT`, and PostgreSQL's positions come
//! from transaction ids, which never repeat. On PostgreSQL each batch is selected with
//! `SKIP LOCKED`, so the housekeeping of several processes takes different batches.
//!
//! Kept customer media (`channels::meta::media`) older than `--retention` goes too.
//!
//! It also keeps the message templates of `meta` instances fresh: [`sync_templates`] syncs
//! every instance with a `waba_id` whose catalogue is more than an hour old (see
//! `crate::templates`). Several processes may both sync one instance; the second sync simply
//! replaces the first's result.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::{App, IDEMPOTENCY_WINDOW_MS};
use crate::clock::Millis;
use crate::store::StoreResult;

/// Events pruned per transaction.
const BATCH: u32 = 500;
/// How often to look.
const EVERY: Duration = Duration::from_secs(600);
/// How old a template catalogue may get.
const TEMPLATES_MAX_AGE: Millis = 3600 * 1000;

/// Syncs the templates of every `meta` instance with a `waba_id` whose catalogue is older
/// than an hour (or was never synced); answers how many were synced. A failure is logged and
/// left for the next round.
pub async fn sync_templates(app: &App) -> StoreResult<usize> {
    let mut synced = 0;
    for instance in app.store.list_instances().await? {
        if instance.meta.as_ref().is_none_or(|m| m.waba_id.is_none()) {
            continue;
        }
        let (_, synced_at) = app.store.list_templates(instance.id).await?;
        if synced_at.is_some_and(|at| app.now() - at < TEMPLATES_MAX_AGE) {
            continue;
        }
        match crate::channels::meta::templates::sync(app, &instance).await {
            Ok(_) => synced += 1,
            Err(error) => {
                tracing::warn!(instance_id = instance.id, error = %error, "syncing the message templates failed")
            }
        }
    }
    Ok(synced)
}

/// Prunes once, batch after batch, until nothing is left; returns how many events went.
pub async fn step(app: &App) -> StoreResult<u64> {
    let now = app.now();
    let events_before = app.config.retention.map(|keep| now - keep.as_millis() as Millis);
    let keys_before = now - IDEMPOTENCY_WINDOW_MS;
    let mut pruned = 0u64;
    loop {
        let n = app.store.prune(events_before, keys_before, BATCH).await?;
        pruned += u64::from(n);
        if n < BATCH {
            if let Some(before) = events_before {
                app.store.prune_media(before).await?;
            }
            return Ok(pruned);
        }
        // Let other writes through between batches.
        tokio::task::yield_now().await;
    }
}

/// Runs housekeeping every ten minutes until `shutdown`.
pub async fn run(app: App, shutdown: CancellationToken) {
    loop {
        match step(&app).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "pruned old events"),
            Err(error) => tracing::error!(error = %error, "housekeeping failed"),
        }
        if let Err(error) = sync_templates(&app).await {
            tracing::error!(error = %error, "the template sync round failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

//! The sandbox channel: lets anyone try botlinkd without a WhatsApp account.
//!
//! Customers are simulated through `POST /v1/sandbox/inbound` (see [`crate::api`]). Outgoing
//! messages "leave" at once (`sent`), then walk to `delivered` and `read` on their own after
//! configurable delays, or by hand through `POST /v1/sandbox/messages/{id}/status`. The
//! future statuses are stored rows (`scheduled_statuses`), not timers in memory, so a restart
//! keeps them.
//!
//! The driver ([`run`]) applies due statuses through `App::change_status`, like any other
//! status change. It sleeps until the next one is due, at most a second, and is woken early
//! only by a send that scheduled statuses (`App::sandbox_scheduled`): waking it on every event
//! cost two reads per customer message. On PostgreSQL every process runs a driver, and two
//! may pick the same due status; `apply_status` locks the message row and statuses only move
//! forward, so the second finds nothing to do and publishes nothing.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::store::{StatusOutcome, StoreResult};

/// Applies every sandbox status that is due; returns how many were applied.
pub async fn step(app: &App) -> StoreResult<usize> {
    let due = app.store.due_statuses(app.now(), 512).await?;
    let mut applied = 0;
    for s in due {
        match app
            .change_status(s.instance_id, &s.message_id, &s.customer, s.status, None)
            .await?
        {
            StatusOutcome::Applied(_) => applied += 1,
            // Overtaken (already read or failed) or gone: just forget the schedule.
            StatusOutcome::Stale(_) | StatusOutcome::NotFound => {
                app.store.drop_scheduled_status(&s.message_id, s.status).await?;
            }
        }
    }
    Ok(applied)
}

/// Runs the sandbox driver until `shutdown`.
pub async fn run(app: App, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        if let Err(error) = step(&app).await {
            tracing::error!(error = %error, "applying sandbox statuses failed");
        }
        let wait = match app.store.next_status_due().await {
            Ok(Some(at)) => Duration::from_millis((at - app.now()).clamp(1, 1000) as u64),
            _ => Duration::from_secs(1),
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            // A new send may have scheduled something sooner. (Only sends wake the driver:
            // waking on every event would cost two reads per customer message.)
            _ = app.sandbox_scheduled.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

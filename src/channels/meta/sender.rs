//! The send worker of the `meta` channel: takes queued requests (messages, read receipts)
//! in order per conversation, posts them to the Graph API with the instance's token, and
//! records what came of them:
//! - accepted: the message gets Meta's `wamid` and turns `sent` (`ack.sent`);
//! - throttled (HTTP 429, 130429, …) or a temporary failure: tried again with doubling
//!   waits (honouring `Retry-After`) until `meta_retry_for` has passed, then `failed`;
//! - refused (131047 outside the 24-hour window, invalid number, …): `failed` with Meta's
//!   code and a title that says what to do;
//! - token refused (190), or the account or number refused (see `GraphError::verdict`):
//!   `failed` with Meta's code, and the instance is flagged as needing attention.
//!
//! **Claims.** [`run`] keeps up to 32 requests under way as tasks and claims more as soon as
//! one ends, so the worker holds at most 32 rows; the rest wait as `channel_sends` rows (tests
//! drive [`step`], which claims a batch and waits for it). A claim takes due rows, only the
//! oldest row of each (instance, customer) pair, and moves their `next_at` to the end of a
//! lease (twice the 15-second Graph limit plus 5 s). The worker sleeps until the next
//! claimable row is due (`next_channel_send_due` looks at heads only, so a conversation whose
//! head is under way does not wake it), at most a second, or until `App::channel_sends`
//! wakes it. A retry or an abandonment is recorded only while the claim's lease is still the
//! row's (`next_at` equals it); an accepted send always is. On PostgreSQL every process runs a
//! worker, and `SKIP LOCKED` claims keep them off each other's rows.
//!
//! **Outcomes.** Accepted: `finish_channel_send(Accepted)` stores Meta's wamid in
//! `messages.external_id` and deletes the row in one transaction; then `App::change_status`
//! moves the message to `sent` and publishes `ack.sent` under botlinkd's id (if the process
//! dies between the two, Meta's own `sent` status moves the message later). Retry: the row's
//! `next_at` becomes now plus `meta_retry_base × 2^attempts` (at most five minutes) or Meta's
//! `Retry-After`, whichever is longer, and `attempts` goes up; if that time is past
//! `created_at + meta_retry_for`, the request fails instead. Fail: the row is deleted and the
//! message moves to `failed` with `ack_error`'s `{code, title}`. Needs attention:
//! `set_attention` records the reason on the instance, only while it still has the settings
//! the send was made with (so a token replaced meanwhile is not flagged), then the message
//! fails with Meta's code. A claimed row of an instance that has `attention` set fails with
//! code 0 and the reason without calling Meta, and one whose instance has left the `meta`
//! channel fails with code 0.
//!
//! **Pace.** Before each message (not read receipts) the worker waits for its number's next
//! slot: `--meta-max-mps` a second (80 by default, Meta's default throughput per number),
//! reserved with `Store::reserve_pace` under the key `meta:PHONE_NUMBER_ID`, so every process
//! on one PostgreSQL database shares one pace. A message Meta still throttles, the number's
//! (130429) or the pair's (131056: too many messages to one customer), is retried as below:
//! only its conversation waits, since its row stays that conversation's head while other
//! customers' rows are claimed. Both are counted in `/metrics` (`meta_sends_paced_total`,
//! `meta_sends_throttled_total{code}`).
//!
//! **Order and the retry window.** A row being retried stays at the head of its conversation,
//! so later messages to that customer are not claimed until it is finished: order per
//! conversation, at the price that one throttled message holds its conversation back for up to
//! `meta_retry_for`. That is why the window is an hour by default: Meta's throttling and
//! temporary failures are meant to pass within minutes, and after it the client gets an
//! `ack.failed` it can act on. Waits never undercut Meta's `Retry-After`.
//!
//! **At least once.** A row is deleted only after Meta's answer is recorded. If the process
//! dies after Meta took a message, or a call times out although Meta took it, the row falls
//! due again when its lease ends and the message is sent a second time. The lease outlasts a
//! Graph call twice over, so it runs out early only if the process died or the store stalled;
//! `finish_channel_send`, unlike a delivery's completion, does not check it for an accepted
//! send.

use std::time::Duration;

use futures_util::future::join_all;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::graph::{GraphError, TOKEN_INVALID, Verdict, ack_error};
use crate::app::App;
use crate::clock::Millis;
use crate::events::AckError;
use crate::messages::MessageStatus;
use crate::store::{ChannelSend, SendOutcome, StoreResult};

/// Requests under way at once.
const IN_FLIGHT: usize = 32;
/// The longest wait between two tries of one request.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Claims up to `limit` due requests.
async fn claim(app: &App, limit: usize) -> StoreResult<Vec<ChannelSend>> {
    let now = app.now();
    let lease = now + 2 * app.config.meta_request_timeout.as_millis() as Millis + 5_000;
    app.store.claim_channel_sends(now, limit as u32, lease).await
}

/// Sends every queued request that is due, waiting for all of them; returns how many were
/// handled (tests drive the worker with this).
pub async fn step(app: &App) -> StoreResult<usize> {
    let claimed = claim(app, IN_FLIGHT).await?;
    let count = claimed.len();
    for result in join_all(claimed.into_iter().map(|send| process(app.clone(), send))).await {
        result?;
    }
    Ok(count)
}

/// Runs the worker until `shutdown`: up to `IN_FLIGHT` requests at a time, a new one
/// claimed as soon as one ends, so one slow Graph call holds up nothing else. Requests under
/// way when it stops are finished first.
pub async fn run(app: App, shutdown: CancellationToken) {
    let mut under_way = JoinSet::new();
    while !shutdown.is_cancelled() {
        let room = IN_FLIGHT - under_way.len();
        let claimed = if room > 0 {
            claim(&app, room).await.unwrap_or_else(|error| {
                tracing::error!(error = %error, "claiming queued Meta requests failed");
                Vec::new()
            })
        } else {
            Vec::new()
        };
        let claimed_any = !claimed.is_empty();
        for send in claimed {
            under_way.spawn(process(app.clone(), send));
        }
        if claimed_any && under_way.len() < IN_FLIGHT {
            continue;
        }
        let wait = match app.store.next_channel_send_due().await {
            Ok(Some(at)) => Duration::from_millis((at - app.now()).clamp(10, 1000) as u64),
            _ => Duration::from_secs(1),
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = app.channel_sends.notified() => {}
            Some(done) = under_way.join_next(), if !under_way.is_empty() => report(done),
            _ = tokio::time::sleep(wait) => {}
        }
    }
    while let Some(done) = under_way.join_next().await {
        report(done);
    }
}

fn report(done: Result<StoreResult<()>, tokio::task::JoinError>) {
    match done {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::error!(error = %error, "recording a Meta send failed; it is retried when its lease ends")
        }
        Err(error) => tracing::error!(error = %error, "a Meta send task failed"),
    }
}

async fn process(app: App, send: ChannelSend) -> StoreResult<()> {
    let app = &app;
    let instance = app.store.instance_by_id(send.instance_id).await?;
    let Some((instance, meta)) = instance.and_then(|i| i.meta.clone().map(|m| (i, m))) else {
        let error = AckError {
            code: 0,
            title: "The instance is no longer on the meta channel".into(),
        };
        return fail(app, &send, error).await;
    };
    if let Some(attention) = &instance.attention {
        let reason = AckError {
            code: 0,
            title: format!("Not sent: the instance needs attention. {attention}"),
        };
        return fail(app, &send, reason).await;
    }
    if send.message_id.is_some() {
        wait_for_pace(app, &meta.phone_number_id).await;
    }
    match app
        .graph
        .post_message(&meta.phone_number_id, &meta.access_token, &send.request)
        .await
    {
        Ok(wamid) => accepted(app, &send, wamid).await,
        Err(error) => match error.verdict() {
            Verdict::Retry(retry_after) => retry(app, &send, &error, retry_after).await,
            Verdict::Fail(reason) => {
                tracing::warn!(
                    instance_id = send.instance_id,
                    code = reason.code,
                    "Meta refused a message"
                );
                fail(app, &send, reason).await
            }
            Verdict::NeedsAttention(reason) => {
                tracing::error!(
                    instance_id = send.instance_id,
                    code = reason.code,
                    "Meta refused to send for this instance; it needs an operator"
                );
                let attention = if reason.code == TOKEN_INVALID {
                    format!(
                        "Meta refused the access token (code {TOKEN_INVALID}): set a new one with \
                         `PUT /v1/instance/channel` or `botlinkd instance set-channel`. Meta said: {error}"
                    )
                } else {
                    format!(
                        "Meta refused to send for this number (code {}): {}. Fix it in Meta's WhatsApp Manager, \
                         then save the channel settings again to clear this. Meta said: {error}",
                        reason.code, reason.title
                    )
                };
                // Only for the settings the send was made with: a token replaced meanwhile is fine.
                app.store
                    .set_attention(send.instance_id, Some(attention), Some(meta.to_stored()))
                    .await?;
                fail(app, &send, reason).await
            }
        },
    }
}

/// Waits for the number's next send slot (see **Pace** above). If the store cannot reserve
/// one, waits one interval instead.
async fn wait_for_pace(app: &App, phone_number_id: &str) {
    let interval_us = 1_000_000 / i64::from(app.config.meta_max_mps.max(1));
    let now_us = app.now() * 1000;
    let key = format!("meta:{phone_number_id}");
    let wait_us = match app.store.reserve_pace(&key, interval_us, now_us).await {
        // Measured again after the reservation: a slow round trip to the store must not push
        // the send past its slot and towards the next one.
        Ok(slot) => slot - app.now() * 1000,
        Err(error) => {
            tracing::warn!(error = %error, "reserving a Meta send slot failed; waiting one interval");
            interval_us
        }
    };
    if wait_us > 0 {
        app.metrics.meta_paced();
        tokio::time::sleep(Duration::from_micros(wait_us as u64)).await;
    }
}

async fn accepted(app: &App, send: &ChannelSend, wamid: Option<String>) -> StoreResult<()> {
    app.store
        .finish_channel_send(send, SendOutcome::Accepted { external_id: wamid })
        .await?;
    if let Some(message_id) = &send.message_id {
        app.change_status(send.instance_id, message_id, &send.customer, MessageStatus::Sent, None)
            .await?;
    }
    Ok(())
}

async fn retry(app: &App, send: &ChannelSend, error: &GraphError, retry_after: Option<Duration>) -> StoreResult<()> {
    if let Some(code) = error.throttle_code() {
        app.metrics.meta_throttled(code);
    }
    let now = app.now();
    let backoff = super::backoff(app.config.meta_retry_base, send.attempts, MAX_BACKOFF);
    let wait = retry_after.map_or(backoff, |after| after.max(backoff));
    let at = now + wait.as_millis() as Millis;
    let deadline = send.created_at + app.config.meta_retry_for.as_millis() as Millis;
    if at > deadline {
        let reason = match error {
            GraphError::Api { code, message, .. } => ack_error(*code, None, Some(message)),
            GraphError::Transport(why) => AckError {
                code: 0,
                title: format!("Meta's Graph API could not be reached: {why}"),
            },
        };
        return fail(app, send, reason).await;
    }
    tracing::info!(
        instance_id = send.instance_id,
        attempt = send.attempts + 1,
        retry_in_ms = wait.as_millis() as u64,
        error = %error,
        "Meta send will be retried"
    );
    app.store.finish_channel_send(send, SendOutcome::Retry { at }).await
}

async fn fail(app: &App, send: &ChannelSend, reason: AckError) -> StoreResult<()> {
    app.store.finish_channel_send(send, SendOutcome::Abandoned).await?;
    if let Some(message_id) = &send.message_id {
        app.change_status(
            send.instance_id,
            message_id,
            &send.customer,
            MessageStatus::Failed,
            Some(reason),
        )
        .await?;
    }
    Ok(())
}

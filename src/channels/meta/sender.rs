//! The send worker of the `meta` channel: takes queued requests (messages, read receipts)
//! in order per conversation, posts them to the Graph API with the instance's token, and
//! records what came of them:
//! - accepted: the message gets Meta's `wamid` and turns `sent` (`ack.sent`);
//! - throttled (HTTP 429, 130429, …) or a temporary failure: tried again with doubling
//!   waits (honouring `Retry-After`) until `meta_retry_for` has passed, then `failed`;
//! - refused (131047 outside the 24-hour window, invalid number, …): `failed` with Meta's
//!   code and a title that says what to do;
//! - token refused (190): `failed`, and the instance is flagged as needing attention.
//!
//! A request is at least once: if the process dies after Meta took a message but before
//! that was recorded, the lease runs out and the message is sent again.

use std::time::Duration;

use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

use super::graph::{GraphError, TOKEN_INVALID, Verdict, ack_error};
use crate::app::App;
use crate::clock::Millis;
use crate::events::AckError;
use crate::messages::MessageStatus;
use crate::store::{ChannelSend, SendOutcome, StoreResult};

/// Requests claimed at once.
const BATCH: u32 = 32;
/// The longest wait between two tries of one request.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Sends every queued request that is due; returns how many were handled.
pub async fn step(app: &App) -> StoreResult<usize> {
    let now = app.now();
    let lease = now + 2 * app.config.meta_request_timeout.as_millis() as Millis + 5_000;
    let claimed = app.store.claim_channel_sends(now, BATCH, lease).await?;
    let count = claimed.len();
    for result in join_all(claimed.into_iter().map(|send| process(app, send))).await {
        result?;
    }
    Ok(count)
}

/// Runs the worker until `shutdown`.
pub async fn run(app: App, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        match step(&app).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(error) => tracing::error!(error = %error, "sending queued Meta requests failed"),
        }
        let wait = match app.store.next_channel_send_due().await {
            Ok(Some(at)) => Duration::from_millis((at - app.now()).clamp(1, 1000) as u64),
            _ => Duration::from_secs(1),
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = app.channel_sends.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn process(app: &App, send: ChannelSend) -> StoreResult<()> {
    let instance = app.store.instance_by_id(send.instance_id).await?;
    let Some((instance, meta)) = instance.and_then(|i| i.meta.clone().map(|m| (i, m))) else {
        let error = AckError {
            code: 0,
            title: "The instance is no longer on the meta channel".into(),
        };
        return fail(app, &send, error).await;
    };
    if instance.attention.is_some() {
        return fail(app, &send, ack_error(TOKEN_INVALID, None, None)).await;
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
            Verdict::TokenInvalid(reason) => {
                tracing::error!(
                    instance_id = send.instance_id,
                    "Meta refused the instance's access token; the instance needs a new one"
                );
                let attention = format!(
                    "Meta refused the access token (code {TOKEN_INVALID}): set a new one with \
                     `PUT /v1/instance/channel` or `botlinkd instance set-channel`. Meta said: {error}"
                );
                app.store.set_attention(send.instance_id, Some(attention)).await?;
                fail(app, &send, reason).await
            }
        },
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
    let now = app.now();
    let backoff = app
        .config
        .meta_retry_base
        .saturating_mul(2u32.saturating_pow(send.attempts.min(16)))
        .min(MAX_BACKOFF);
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

//! The use case behind `POST /meta/webhook`: check Meta's signature, route each change to
//! its instance by `metadata.phone_number_id`, store messages (de-duplicated by wamid) and
//! statuses (a repeated status moves nothing), and only then answer, so that Meta retries
//! anything botlinkd could not commit.
//!
//! One Meta app's webhook URL may serve several numbers: the signature is checked against
//! the app secrets of the configured instances, and changes are applied only to instances
//! of the app whose secret signed the body.
//!
//! [`accept`], step by step:
//!
//! 1. Parse the header, load the meta instances and look among their app secrets, each
//!    distinct one once, for the one whose HMAC-SHA256 of the body matches (401
//!    `invalid_signature` if none does). Nothing in the body is read before that. A signed body
//!    that cannot be read is logged and answered 200 (Meta would only resend the same bytes),
//!    and so is a `messages` change whose value cannot be read (counted `ignored`); other
//!    fields are not read at all.
//! 2. For each change of the `messages` field, take the instance whose Phone number ID is
//!    `metadata.phone_number_id` and whose app secret signed the body; a change for any other
//!    number is logged and counted `ignored`.
//! 3. Normalise each message, replace a quoted or reacted-to wamid by botlinkd's id where it
//!    names a message the business sent (`message_by_external_id`), and store it with
//!    `App::receive_from_channel`: Meta's wamid is the `message_id` (the primary key, inserted
//!    `ON CONFLICT DO NOTHING`, the event written only for a new row, so a customer's message
//!    is stored and published at most once), Meta's timestamp the message's time. A wamid
//!    already stored counts as a duplicate.
//! 4. Normalise each status and find the outgoing message by `messages.external_id`. Meta's
//!    status can overtake the recording of Meta's answer to the send, so while the instance
//!    has sends queued or under way (`channel_sends_pending`) a miss is looked up once more
//!    after 200 ms, and if it is still missing the whole webhook is answered 503
//!    `status_deferred`: Meta retries it, and what was stored is not stored twice. With nothing
//!    queued, the status is of a message sent elsewhere and is ignored. The status is applied
//!    with `App::change_status_at` at Meta's time; one that does not move forward is `Stale`,
//!    publishes nothing and counts as a duplicate.
//! 5. Answer 200 with the counts ([`IntakeReport`]) once all of that has committed.
//!
//! Each message and status is its own transaction. A storage error stops the intake and
//! answers 503 (or 500, see `api::error`); Meta retries the whole body, and the parts already
//! stored come back as duplicates.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use super::normalise;
use super::payload::{ChangeValue, Notification};
use super::signature::{HubSignature, SignatureError};
use crate::app::App;
use crate::instances::Instance;
use crate::secret::Secret;
use crate::store::{StatusOutcome, StoreError, StoreResult};

/// Why a webhook was refused.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The signature is missing, malformed or wrong.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// A status may be for a send whose wamid is not recorded yet; Meta should retry.
    #[error("a status names a message whose send is still being recorded; try again")]
    Deferred,
    /// Storage failed; Meta should retry.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a webhook brought.
#[derive(Debug, Default, serde::Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct IntakeReport {
    /// New customer messages stored.
    pub messages: usize,
    /// Status changes applied.
    pub statuses: usize,
    /// Messages and statuses already seen (Meta's retries).
    pub duplicates: usize,
    /// Entries for no configured number, of unknown messages, or unreadable.
    pub ignored: usize,
}

/// Verifies, routes and stores one webhook body.
pub async fn accept(app: &App, signature: Option<&str>, body: &[u8]) -> Result<IntakeReport, IntakeError> {
    let signature = HubSignature::parse(signature)?;
    let instances = app.store.meta_instances().await?;
    let app_secret = signing_secret(&instances, &signature, body).ok_or(SignatureError::Mismatch)?;
    let mut report = IntakeReport::default();
    // Signed by Meta but unreadable: answering anything but 200 would only make Meta send
    // the same bytes again for days. Say so in the log and take it.
    let notification: Notification = match serde_json::from_slice(body) {
        Ok(n) => n,
        Err(error) => {
            tracing::error!(error = %error, bytes = body.len(), "unreadable Meta webhook; ignored");
            report.ignored += 1;
            return Ok(report);
        }
    };
    for change in notification.entry.iter().flat_map(|e| &e.changes) {
        let value = match change.messages() {
            None => continue,
            Some(Ok(value)) => value,
            Some(Err(error)) => {
                tracing::error!(error = %error, "unreadable Meta `messages` change; ignored");
                report.ignored += 1;
                continue;
            }
        };
        let value = &value;
        let phone_number_id = value
            .metadata
            .as_ref()
            .map(|m| m.phone_number_id.as_str())
            .unwrap_or("");
        let instance = instances.iter().find(|i| {
            i.meta
                .as_ref()
                .is_some_and(|m| m.phone_number_id == phone_number_id && m.app_secret == app_secret)
        });
        let Some(instance) = instance else {
            tracing::warn!(phone_number_id, "Meta webhook for a number no instance has; ignored");
            report.ignored += value.messages.len() + value.statuses.len();
            continue;
        };
        for error in &value.errors {
            tracing::warn!(instance_id = instance.id, code = error.code, title = ?error.title, "Meta reported an error");
        }
        accept_value(app, instance, value, &mut report).await?;
    }
    Ok(report)
}

/// The app secret (of a configured instance) that signed the body.
fn signing_secret(instances: &[Instance], signature: &HubSignature, body: &[u8]) -> Option<Secret> {
    let mut tried: Vec<&Secret> = Vec::new();
    for meta in instances.iter().filter_map(|i| i.meta.as_ref()) {
        if tried.contains(&&meta.app_secret) {
            continue;
        }
        if signature.signed_by(&meta.app_secret, body) {
            return Some(meta.app_secret.clone());
        }
        tried.push(&meta.app_secret);
    }
    None
}

async fn accept_value(
    app: &App,
    instance: &Instance,
    value: &ChangeValue,
    report: &mut IntakeReport,
) -> Result<(), IntakeError> {
    let names: HashMap<&str, &str> = value
        .contacts
        .iter()
        .filter_map(|c| c.profile.as_ref().map(|p| (c.wa_id.as_str(), p.name.as_str())))
        .collect();
    for raw in &value.messages {
        let from = raw["from"].as_str().unwrap_or_default();
        let normalised = match normalise::message(raw, names.get(from).copied(), app.base_url()) {
            Ok(n) => n,
            Err(why) => {
                tracing::warn!(instance_id = instance.id, why, "unreadable Meta message; ignored");
                report.ignored += 1;
                continue;
            }
        };
        let mut message = normalised.message;
        for field in ["context", "reaction"] {
            translate_reference(app, instance.id, message.detail.get_mut(field)).await?;
        }
        let (kind, detail) = (message.kind.clone(), message.detail.clone());
        let wamid = normalised.wamid.clone();
        match app
            .receive_from_channel(instance, normalised.wamid, normalised.sent_at, message)
            .await?
        {
            Some(_) => {
                report.messages += 1;
                // The file is downloaded and kept in the background (see `media`).
                super::media::enqueue(app, instance.id, &wamid, &kind, &detail).await?;
            }
            None => report.duplicates += 1,
        }
    }
    for status in &value.statuses {
        let Some(update) = normalise::status(status) else {
            report.ignored += 1;
            continue;
        };
        let Some((message_id, customer)) = outgoing_message(app, instance.id, &update.wamid).await? else {
            tracing::debug!(
                instance_id = instance.id,
                "status of a message botlinkd did not send; ignored"
            );
            report.ignored += 1;
            continue;
        };
        let at = update.at.unwrap_or_else(|| app.now());
        match app
            .change_status_at(instance.id, &message_id, &customer, update.status, update.error, at)
            .await?
        {
            StatusOutcome::Applied(_) => report.statuses += 1,
            StatusOutcome::Stale(_) => report.duplicates += 1,
            StatusOutcome::NotFound => report.ignored += 1,
        }
    }
    Ok(())
}

/// The outgoing message Meta knows as `wamid`. A status may overtake the recording of
/// Meta's answer to the send (the webhook can be that fast): while the instance has sends
/// queued or under way, a miss is looked up once more after a moment, and if it is still
/// missing the whole webhook is deferred (Meta retries it; what it stored is not stored
/// twice). With nothing queued, the status is of a message sent elsewhere.
async fn outgoing_message(app: &App, instance_id: i64, wamid: &str) -> Result<Option<(String, String)>, IntakeError> {
    if let Some(found) = app.store.message_by_external_id(instance_id, wamid).await? {
        return Ok(Some(found));
    }
    if !app.store.channel_sends_pending(instance_id).await? {
        return Ok(None);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    match app.store.message_by_external_id(instance_id, wamid).await? {
        Some(found) => Ok(Some(found)),
        None => Err(IntakeError::Deferred),
    }
}

/// A quoted or reacted-to message is named by Meta's id; where it is one the business sent
/// through botlinkd, name it by botlinkd's id instead (the one the send API answered).
async fn translate_reference(app: &App, instance_id: i64, field: Option<&mut Value>) -> StoreResult<()> {
    let Some(id) = field.and_then(|f| f.get_mut("message_id")) else {
        return Ok(());
    };
    let Some(wamid) = id.as_str() else { return Ok(()) };
    if let Some((ours, _)) = app.store.message_by_external_id(instance_id, wamid).await? {
        *id = Value::String(ours);
    }
    Ok(())
}

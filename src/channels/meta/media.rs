//! Customers' media kept: Meta's download URL for a customer's file lives about five minutes
//! and its media id a few days, so botlinkd downloads each file when its message arrives and
//! keeps it in the database (where every process sees it). The `message` event does not wait
//! for it: `media.url` already points at botlinkd (`GET /v1/messages/{id}/media`), which
//! answers from the kept copy, and from Meta while there is none yet.
//!
//! **The queue.** Intake queues a `media_fetches` row for each new message with a media id
//! ([`enqueue`]); [`run`] looks four times a second and claims due rows (leased for ten
//! minutes; `SKIP LOCKED` on PostgreSQL), up to four at a time, and downloads them with the instance's token:
//! - the size is capped as WhatsApp caps it ([`cap`]: image 5 MB, audio and video 16 MB,
//!   document 100 MB, sticker 500 KB), by Meta's `file_size` and again while reading;
//! - the bytes are checked against the `sha256` Meta sent with the message (hex or base64);
//! - kept, the row goes; a failure (Meta unreachable, an error, a wrong checksum) is tried
//!   again after `--meta-retry-base` doubling up to an hour, at most eight times and never
//!   beyond a week; a file over the cap is not tried again.
//!
//! Kept copies are pruned by housekeeping once older than `--retention`, like events.

use std::time::Duration;

use base64::Engine;
use futures_util::future::join_all;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::clock::Millis;
use crate::store::{KeptMedia, MediaFetch, MediaFetchOutcome, StoreResult};

/// Downloads under way at once.
const IN_FLIGHT: u32 = 4;
/// How long a claimed download may take before another process may try it.
const LEASE_MS: Millis = 10 * 60 * 1000;
/// Tries before a download is given up.
const MAX_ATTEMPTS: u32 = 8;
/// After this, Meta has forgotten the media id.
const MAX_AGE_MS: Millis = 7 * 24 * 3600 * 1000;
/// The longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// WhatsApp's size cap for a media type, bytes.
pub fn cap(kind: &str) -> usize {
    const MB: usize = 1024 * 1024;
    match kind {
        "image" => 5 * MB,
        "audio" | "video" => 16 * MB,
        "document" => 100 * MB,
        "sticker" => 500 * 1024,
        _ => 16 * MB,
    }
}

/// Queues the download of a new message's media, if it has a media id.
pub async fn enqueue(
    app: &App,
    instance_id: i64,
    message_id: &str,
    kind: &str,
    detail: &Map<String, Value>,
) -> StoreResult<()> {
    let Some(media) = detail.get("media") else {
        return Ok(());
    };
    let Some(media_id) = media["id"].as_str() else {
        return Ok(());
    };
    let now = app.now();
    let fetch = MediaFetch {
        instance_id,
        message_id: message_id.to_string(),
        media_id: media_id.to_string(),
        kind: kind.to_string(),
        sha256: media["sha256"].as_str().map(str::to_string),
        attempts: 0,
        created_at: now,
    };
    app.store.enqueue_media_fetch(fetch, now).await
}

/// Downloads every due file once, waiting for all; answers how many were handled (tests
/// drive the keeper with this).
pub async fn step(app: &App) -> StoreResult<usize> {
    let now = app.now();
    let claimed = app.store.claim_media_fetches(now, IN_FLIGHT, now + LEASE_MS).await?;
    let count = claimed.len();
    for result in join_all(claimed.iter().map(|f| keep(app, f))).await {
        result?;
    }
    Ok(count)
}

/// Runs the keeper until `shutdown`, looking for due downloads four times a second.
pub async fn run(app: App, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let handled = step(&app).await.unwrap_or_else(|error| {
            tracing::error!(error = %error, "keeping customers' media failed; retried later");
            0
        });
        if handled > 0 {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

async fn keep(app: &App, fetch: &MediaFetch) -> StoreResult<()> {
    let outcome = match download(app, fetch).await {
        Ok(kept) => MediaFetchOutcome::Kept(kept),
        Err(Failure::Final(why)) => {
            tracing::warn!(instance_id = fetch.instance_id, message_id = %fetch.message_id, why, "a customer's media is not kept");
            MediaFetchOutcome::GiveUp
        }
        Err(Failure::Again(why)) => {
            let now = app.now();
            let wait = super::backoff(app.config.meta_retry_base, fetch.attempts, MAX_BACKOFF);
            let at = now + wait.as_millis() as Millis;
            if fetch.attempts + 1 >= MAX_ATTEMPTS || at - fetch.created_at > MAX_AGE_MS {
                tracing::warn!(instance_id = fetch.instance_id, message_id = %fetch.message_id, why, "a customer's media could not be kept; given up");
                MediaFetchOutcome::GiveUp
            } else {
                tracing::info!(instance_id = fetch.instance_id, message_id = %fetch.message_id, why, retry_in_ms = wait.as_millis() as u64, "keeping a customer's media failed; will retry");
                MediaFetchOutcome::Retry { at }
            }
        }
    };
    app.store.finish_media_fetch(fetch, outcome).await
}

/// Why a download did not keep the file.
enum Failure {
    /// Worth another try.
    Again(String),
    /// Not worth one.
    Final(String),
}

async fn download(app: &App, fetch: &MediaFetch) -> Result<KeptMedia, Failure> {
    let instance = app
        .store
        .instance_by_id(fetch.instance_id)
        .await
        .map_err(|e| Failure::Again(e.to_string()))?;
    let meta = instance
        .and_then(|i| i.meta)
        .ok_or_else(|| Failure::Final("the instance is no longer on the meta channel".into()))?;
    let limit = cap(&fetch.kind);
    let info = app
        .graph
        .media_info(&fetch.media_id, &meta.access_token)
        .await
        .map_err(|e| Failure::Again(e.to_string()))?;
    if info.file_size.is_some_and(|size| size as usize > limit) {
        return Err(Failure::Final(format!(
            "larger than WhatsApp's {} byte cap for {}",
            limit, fetch.kind
        )));
    }
    let mut response = app
        .graph
        .download(&info.url, &meta.access_token)
        .await
        .map_err(|e| Failure::Again(e.to_string()))?;
    let content_type = info
        .mime_type
        .clone()
        .or_else(|| {
            response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "application/octet-stream".into());
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| Failure::Again(format!("download broken off: {}", e.without_url())))?
    {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > limit {
            return Err(Failure::Final(format!(
                "larger than WhatsApp's {} byte cap for {}",
                limit, fetch.kind
            )));
        }
    }
    let digest = Sha256::digest(&bytes);
    if let Some(expected) = &fetch.sha256
        && !checksum_matches(expected, &digest)
    {
        return Err(Failure::Again("the file's SHA-256 is not the one Meta sent".into()));
    }
    Ok(KeptMedia {
        content_type,
        sha256: hex(&digest),
        bytes,
        created_at: app.now(),
    })
}

/// Whether `expected` (hex or base64, as Meta writes it) is this digest.
pub fn checksum_matches(expected: &str, digest: &[u8]) -> bool {
    let expected = expected.trim();
    expected.eq_ignore_ascii_case(&hex(digest))
        || expected == base64::engine::general_purpose::STANDARD.encode(digest)
        || expected == base64::engine::general_purpose::URL_SAFE.encode(digest)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_follow_whatsapp_and_checksums_are_hex_or_base64() {
        assert_eq!(cap("sticker"), 500 * 1024);
        assert_eq!(cap("document"), 100 * 1024 * 1024);
        let digest = Sha256::digest(b"abc");
        assert!(checksum_matches(
            "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",
            &digest
        ));
        assert!(checksum_matches(
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=",
            &digest
        ));
        assert!(!checksum_matches(
            "IqF9Gdr2dQ5cNoX7hIu0b4fp0pcbQ6zMBwCRNUfBP3c=",
            &digest
        ));
    }
}

//! The `meta` channel's HTTP surface:
//! - `GET /meta/webhook`: Meta's verification handshake (`hub.verify_token`);
//! - `POST /meta/webhook`: Meta's signed webhooks (one URL for every number of an app);
//! - `GET /v1/messages/{id}/media`: a customer's media, from botlinkd's copy or fetched from
//!   the Graph API with the instance's token, for a client holding the instance's keys;
//! - `PUT /v1/instance/channel`: switch an instance to `meta` (or back to `sandbox`); builds a
//!   `ChannelChange` and answers the new `InstanceView`.
//!
//! **One webhook URL for every number.** Meta sends the changes of all of an app's numbers to
//! the app's one callback URL, and several apps may point at one server. So the route names no
//! instance: the signature tells the app, `metadata.phone_number_id` the number. For the same
//! reason the handshake accepts the verify token of any meta instance: every one is compared,
//! each in constant time, and the challenge is echoed as `text/plain`. A wrong verify token
//! counts as a failed authentication of the client's address (403), and an address without
//! tries left gets 429 before any comparison. `POST` passes the raw body and the signature
//! header to `intake::accept` (401, 503 or 500 from its errors) and is not rate-limited by
//! address (see `api::limits`).
//!
//! **Media through a botlinkd URL.** Meta's download URLs are short-lived and need the
//! access token, so the event's `media.url` is instead a stable botlinkd URL (built on
//! `--public-url`) that takes the instance's Basic keys. It answers from botlinkd's kept copy
//! (`channels::meta::media` downloads each file when its message arrives); until that is
//! there, it reads Meta's media id from the stored message's `media.id`, asks
//! `Graph::media_info` for a download URL and streams `Graph::download`. Either way with the
//! content type, `Cache-Control: private, max-age=300` and `nosniff`.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use super::extract::{Authed, Json, Path, Query, RawBody, failed_authentication, refuse_guesses};
use super::instance::InstanceView;
use super::limits::ClientIp;
use super::schemas::ErrorBody;
use crate::app::App;
use crate::channels::meta::MetaSettings;
use crate::channels::meta::intake::{self, IntakeError, IntakeReport};
use crate::instances::{Channel, ChannelChange};
use crate::phone::PhoneNumber;

/// The routes.
pub fn router() -> Router<App> {
    Router::new()
        .route("/meta/webhook", get(verify).post(receive))
        .route("/v1/messages/{id}/media", get(media))
        .route("/v1/instance/channel", put(set_channel))
}

/// Meta's verification handshake.
#[derive(Deserialize, IntoParams)]
pub(super) struct Handshake {
    /// `subscribe`.
    #[serde(rename = "hub.mode", default)]
    mode: String,
    /// The verify token set on the instance.
    #[serde(rename = "hub.verify_token", default)]
    verify_token: String,
    /// What to echo back.
    #[serde(rename = "hub.challenge", default)]
    challenge: String,
}

#[utoipa::path(get, path = "/meta/webhook", tag = "meta", params(Handshake), security(()),
    responses((status = 200, description = "The challenge, echoed as text", body = String),
        (status = 403, description = "Wrong verify token", body = ErrorBody)))]
async fn verify(
    State(app): State<App>,
    ClientIp(ip): ClientIp,
    Query(handshake): Query<Handshake>,
) -> Result<Response, ApiError> {
    refuse_guesses(&app, ip)?;
    let forbidden = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "verification_failed",
            "hub.mode must be `subscribe` and hub.verify_token the verify token of a meta instance",
        )
    };
    if handshake.mode != "subscribe"
        || handshake.verify_token.is_empty()
        || handshake.challenge.is_empty()
        || handshake.challenge.len() > 256
    {
        return Err(forbidden());
    }
    let instances = app.store.meta_instances().await?;
    // Every instance is compared (in constant time each), so the time taken does not tell
    // which one matched.
    let matched = instances
        .iter()
        .filter_map(|i| i.meta.as_ref())
        .fold(false, |found, m| {
            m.verify_token.matches(&handshake.verify_token) | found
        });
    if !matched {
        tracing::warn!("Meta webhook verification with a wrong verify token");
        let _ = failed_authentication(&app, ip);
        return Err(forbidden());
    }
    let mut response = handshake.challenge.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}

#[utoipa::path(post, path = "/meta/webhook", tag = "meta", security(()),
    params(("X-Hub-Signature-256" = String, Header, description = "`sha256=` and the hex HMAC-SHA256 of the body, keyed with the app secret")),
    request_body(content = serde_json::Value, description = "Meta's WhatsApp Business Account webhook"),
    responses((status = 200, description = "Stored; what the webhook brought", body = IntakeReport),
        (status = 401, description = "Missing or wrong signature", body = ErrorBody),
                (status = 503, description = "Storage unavailable, or a status for a send still being recorded; Meta retries", body = ErrorBody)))]
async fn receive(State(app): State<App>, headers: HeaderMap, RawBody(body): RawBody) -> Result<Response, ApiError> {
    // Not subject to the authentication-failure limit: behind a reverse proxy Meta shares
    // its address with every other client, and one client's wrong keys must not turn Meta's
    // deliveries away. Guessing an app secret through HMAC-SHA256 is hopeless anyway.
    let signature = headers.get("x-hub-signature-256").and_then(|v| v.to_str().ok());
    match intake::accept(&app, signature, &body).await {
        Ok(report) => Ok(Json(report).into_response()),
        Err(IntakeError::Signature(error)) => {
            tracing::warn!(error = %error, "Meta webhook refused");
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                error.to_string(),
            ))
        }
        Err(IntakeError::Deferred) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "status_deferred",
            IntakeError::Deferred.to_string(),
        )),
        Err(IntakeError::Store(error)) => Err(error.into()),
    }
}

#[utoipa::path(get, path = "/v1/messages/{id}/media", tag = "messages", params(("id" = String, Path, description = "wamid.… of a customer's media message")),
    responses((status = 200, description = "The file, with its content type", content_type = "application/octet-stream"),
        (status = 404, description = "No such message, or it has no media to fetch", body = ErrorBody),
        (status = 502, description = "Meta would not give the file", body = ErrorBody),
        (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn media(State(app): State<App>, Authed(instance): Authed, Path(id): Path<String>) -> Result<Response, ApiError> {
    let message = app
        .store
        .get_message(instance.id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("message"))?;
    // botlinkd's own copy first: it outlives Meta's (see `channels::meta::media`).
    if let Some(kept) = app.store.kept_media(instance.id, &id).await? {
        return Ok(super::media::kept_response(kept));
    }
    let media_id = message
        .detail
        .get("media")
        .and_then(|m| m.get("id"))
        .and_then(|m| m.as_str())
        .filter(|_| instance.meta.is_some())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_media",
                "this message has no media held by Meta (sandbox media stays at the URL it was sent with)",
            )
        })?;
    let meta = instance.meta.as_ref().expect("checked above");
    let bad_gateway = |error: crate::channels::meta::graph::GraphError| {
        tracing::warn!(instance_id = instance.id, error = %error, "Meta media download failed");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "media_unavailable",
            format!("Meta would not give the file: {error}"),
        )
    };
    let info = app
        .graph
        .media_info(media_id, &meta.access_token)
        .await
        .map_err(bad_gateway)?;
    let download = app
        .graph
        .download(&info.url, &meta.access_token)
        .await
        .map_err(bad_gateway)?;
    let content_type = info
        .mime_type
        .or_else(|| {
            download
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "application/octet-stream".into());
    let mut response = Response::new(Body::from_stream(download.bytes_stream()));
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if let Some(size) = info.file_size {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=300"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    Ok(response)
}

/// A channel switch.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ChannelBody {
    /// `meta` or `sandbox`.
    channel: String,
    /// The business number as customers see it (kept when left out).
    #[serde(default)]
    #[schema(example = "15550123456")]
    phone_number: Option<String>,
    /// For `meta`: the Cloud API settings.
    #[serde(default)]
    meta: Option<MetaBody>,
}

/// The Cloud API settings, as Meta's app dashboard shows them.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MetaBody {
    /// WhatsApp > API Setup > Phone number ID.
    phone_number_id: String,
    /// A (system user) access token with `whatsapp_business_messaging`.
    access_token: String,
    /// App settings > Basic > App secret.
    app_secret: String,
    /// Any string you choose; type the same into the webhook's "Verify token".
    verify_token: String,
    /// WhatsApp > API Setup > WhatsApp Business Account ID: its message templates are synced
    /// and template sends checked against them.
    #[serde(default)]
    waba_id: Option<String>,
}

#[utoipa::path(put, path = "/v1/instance/channel", tag = "instance", request_body = ChannelBody,
    responses((status = 200, description = "The instance on its new channel", body = InstanceView),
        (status = 409, description = "Another instance has this Meta number", body = ErrorBody),
        (status = 422, description = "Invalid settings", body = ErrorBody),
        (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn set_channel(
    State(app): State<App>,
    Authed(instance): Authed,
    Json(body): Json<ChannelBody>,
) -> Result<Json<InstanceView>, ApiError> {
    let phone_number = match &body.phone_number {
        Some(n) => PhoneNumber::parse(n)
            .map_err(|e| ApiError::invalid("invalid_phone_number", format!("`phone_number`: {e}")))?,
        None => instance.phone_number.clone(),
    };
    let change = match (body.channel.as_str(), body.meta) {
        ("meta", Some(m)) => ChannelChange {
            channel: Channel::Meta,
            phone_number,
            meta: Some(
                MetaSettings::new(&m.phone_number_id, &m.access_token, &m.app_secret, &m.verify_token)?
                    .with_waba_id(m.waba_id.as_deref())?,
            ),
        },
        ("meta", None) => {
            return Err(ApiError::invalid(
                "missing_meta_settings",
                "the meta channel needs `meta` {phone_number_id, access_token, app_secret, verify_token}",
            ));
        }
        ("sandbox", None) => ChannelChange {
            channel: Channel::Sandbox,
            phone_number,
            meta: None,
        },
        ("sandbox", Some(_)) => {
            return Err(ApiError::invalid(
                "unexpected_meta_settings",
                "`meta` is only for the meta channel",
            ));
        }
        (other, _) => {
            return Err(ApiError::invalid(
                "unsupported_channel",
                format!("unknown channel `{other}`; use meta or sandbox"),
            ));
        }
    };
    let updated = app
        .store
        .set_channel(instance.id, change)
        .await?
        .ok_or_else(|| ApiError::not_found("instance"))?;
    tracing::info!(
        instance_id = updated.id,
        channel = updated.channel.as_str(),
        "instance channel set"
    );
    // The templates of a WhatsApp Business Account are synced now, without holding up the
    // answer; a failure is logged, and housekeeping tries again within the hour.
    if updated.meta.as_ref().is_some_and(|m| m.waba_id.is_some()) {
        let (app, instance) = (app.clone(), updated.clone());
        tokio::spawn(async move {
            if let Err(error) = crate::channels::meta::templates::sync(&app, &instance).await {
                tracing::warn!(instance_id = instance.id, error = %error, "syncing the message templates failed");
            }
        });
    }
    Ok(Json(InstanceView::of(&updated, app.base_url())))
}

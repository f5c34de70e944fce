//! Sending: `POST /v1/messages`, `GET /v1/messages/{id}`, and the compatibility
//! `POST /api/create-message` for scripts written against the App Key/Auth Key gateway API
//! (keys in the body, checked by `extract::authenticate`; the form that holds an Auth Key has
//! no `Debug`). Idempotency-Keys are described in `crate::app`.
//!
//! `ensure_can_send` refuses both sends with 409 `channel_needs_attention` while the instance
//! has `attention` set: a token Meta refused does not heal by retrying and would fail every
//! following message the same way, so the API refuses messages bound to fail instead of
//! accepting them. Only an operator clears the flag, by setting the channel again; failed
//! messages are not resent. Intake goes on, so customers' messages are not lost meanwhile.
//!
//! `ensure_window_open` refuses a free-form message (anything but a template) with 422
//! `outside_customer_service_window` when the customer has not written in the last 24 hours
//! (`messages::window`), on both channels and both routes, before anything is queued.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::error::{ApiError, too_large};
use super::extract::{Authed, Json, Path, RawBody, authenticate, charge};
use super::limits::ClientIp;
use super::schemas::{CompatError, CompatSuccess, ErrorBody};
use super::templates::check_template_send;
use crate::app::{App, IdempotencyKey, Replay, Sent};
use crate::instances::{AuthKey, Instance};
use crate::messages::window::{self, Closed};
use crate::messages::{OutboundMessage, SendRequest, StoredMessage};
use crate::store::{StoreError, rfc3339};

/// The routes.
pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/messages", post(send))
        .route("/v1/messages/{id}", get(read))
        .route("/api/create-message", post(create_message))
}

#[utoipa::path(post, path = "/v1/messages", tag = "messages", request_body = SendRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried send safe: the same key with the same body answers as the first time (24 hours)")),
    responses((status = 202, description = "Accepted; receipts follow as ack events", body = Sent),
        (status = 409, description = "Idempotency-Key reused with another body, or the instance's channel needs attention (a token Meta refused)", body = ErrorBody),
        (status = 422, description = "Invalid message, or a free-form message outside the 24-hour customer service window (`outside_customer_service_window`)", body = ErrorBody), (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn send(
    State(app): State<App>,
    Authed(instance): Authed,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let idempotency = match headers.get("idempotency-key") {
        None => None,
        Some(value) => {
            let key = value
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 255)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_idempotency_key",
                        "`Idempotency-Key` must be 1 to 255 visible ASCII characters",
                    )
                })?;
            Some(IdempotencyKey {
                key: key.to_string(),
                request_hash: hex(&Sha256::digest(&body)),
            })
        }
    };
    if let Some(key) = &idempotency
        && let Some(response) = replay(&app, instance.id, key).await?
    {
        return Ok(response);
    }
    let request: SendRequest = parse_json(&headers, &body)?;
    let template = request.template.clone();
    let message = request.validate()?;
    ensure_can_send(&instance)?;
    ensure_window_open(&app, &instance, &message).await?;
    ensure_uploaded(&app, &instance, &message).await?;
    if message.kind == "template"
        && let Some(wanted) = &template
    {
        check_template_send(&app, &instance, wanted).await?;
    }
    match app.send(&instance, message, idempotency.clone()).await {
        Ok(sent) => Ok((StatusCode::ACCEPTED, Json(sent)).into_response()),
        // Two sends with the same key raced; the other one won, so answer as it did.
        Err(StoreError::Conflict(_)) if idempotency.is_some() => {
            let key = idempotency.expect("checked above");
            replay(&app, instance.id, &key).await?.ok_or_else(|| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "idempotency_conflict",
                    "a request with this Idempotency-Key is in progress",
                )
            })
        }
        Err(error) => Err(error.into()),
    }
}

/// An instance whose channel refused its credentials cannot send until an operator acts.
fn ensure_can_send(instance: &Instance) -> Result<(), ApiError> {
    match &instance.attention {
        None => Ok(()),
        Some(reason) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "channel_needs_attention",
            format!("this instance cannot send until an operator fixes its channel: {reason}"),
        )),
    }
}

/// A message that names an upload (`media_id`) needs it to be this instance's.
async fn ensure_uploaded(app: &App, instance: &Instance, message: &OutboundMessage) -> Result<(), ApiError> {
    let Some(id) = message
        .detail
        .get("media")
        .and_then(|m| m.get("id"))
        .and_then(|id| id.as_str())
    else {
        return Ok(());
    };
    if app.store.has_media(instance.id, id).await? {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "unknown_media",
            format!("this instance has uploaded no file with media id `{id}` (POST /v1/media)"),
        ))
    }
}

/// A free-form message may only go to a customer who wrote in the last 24 hours.
async fn ensure_window_open(app: &App, instance: &Instance, message: &OutboundMessage) -> Result<(), ApiError> {
    if !window::needs_window(&message.kind) {
        return Ok(());
    }
    let last = app.store.last_inbound_at(instance.id, message.to.as_str()).await?;
    let refusal = match window::check(&message.kind, last, app.now()) {
        Ok(()) => return Ok(()),
        Err(Closed::NeverOpened) => format!(
            "{} has never written to this number: outside WhatsApp's 24-hour customer service window only a template may be sent",
            message.to.as_str()
        ),
        Err(Closed::Since(at)) => format!(
            "the 24-hour customer service window closed at {} (a day after the customer's last message): only a template may be sent until they write again",
            rfc3339(at)
        ),
    };
    Err(ApiError::invalid("outside_customer_service_window", refusal))
}

async fn replay(app: &App, instance_id: i64, key: &IdempotencyKey) -> Result<Option<Response>, ApiError> {
    match app.replay(instance_id, key).await? {
        Replay::New => Ok(None),
        Replay::Same(sent) => {
            let mut response = (StatusCode::ACCEPTED, Json(sent)).into_response();
            response
                .headers_mut()
                .insert("idempotent-replayed", header::HeaderValue::from_static("true"));
            Ok(Some(response))
        }
        Replay::Mismatch => Err(ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request body",
        )),
    }
}

/// Parses a JSON body taken as bytes (so it can also be fingerprinted).
fn parse_json<T: serde::de::DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> Result<T, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json") || ct.contains("+json"));
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::invalid("invalid_body", e.to_string())
        } else {
            ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
        }
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[utoipa::path(get, path = "/v1/messages/{id}", tag = "messages", params(("id" = String, Path, description = "wamid.…")),
    responses((status = 200, description = "The message with its current status", body = StoredMessage), (status = 404, description = "No such message", body = ErrorBody), (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn read(
    State(app): State<App>,
    Authed(instance): Authed,
    Path(id): Path<String>,
) -> Result<Json<StoredMessage>, ApiError> {
    let message = app
        .store
        .get_message(instance.id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("message"))?;
    Ok(Json(message))
}

/// The compatibility form: keys in the body (never the URL), `to`, `message`, optional
/// `file`. No `Debug`: it holds the Auth Key.
#[derive(Default, Deserialize, utoipa::ToSchema)]
pub(crate) struct CompatForm {
    #[serde(default)]
    appkey: String,
    #[serde(default)]
    authkey: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    file: Option<String>,
}

/// The send a compatibility form asks for: a text, or an image when `file` names one.
pub(crate) fn compat_send_request(form: CompatForm) -> SendRequest {
    let file = form.file.filter(|f| !f.trim().is_empty());
    SendRequest {
        to: form.to,
        kind: Some(if file.is_some() { "image" } else { "text" }.to_string()),
        body: Some(form.message),
        media_url: file,
        media_id: None,
        caption: None,
        buttons: None,
        template: None,
    }
}

fn compat_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"message_status": "Error", "error": message}))).into_response()
}

#[utoipa::path(post, path = "/api/create-message", tag = "compatibility", security(()),
    request_body(content(
        (CompatForm = "application/x-www-form-urlencoded"),
        (CompatForm = "multipart/form-data"),
        (CompatForm = "application/json"))),
    responses((status = 200, description = "Sent", body = CompatSuccess), (status = 401, description = "Invalid Auth and AppKey", body = CompatError), (status = 422, description = "Invalid message", body = CompatError)))]
async fn create_message(State(app): State<App>, ClientIp(ip): ClientIp, request: Request) -> Response {
    let form = match read_compat_form(request).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let instance = match authenticate(&app, ip, &form.appkey, &AuthKey::new(form.authkey.clone())).await {
        Ok(instance) => instance,
        Err(e) if e.status() == StatusCode::UNAUTHORIZED => {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"error": "Invalid Auth and AppKey"})),
            )
                .into_response();
        }
        Err(e) => return e.into_response(),
    };
    if let Err(error) = charge(&app, &instance) {
        return error.into_response();
    }
    let message = match compat_send_request(form).validate() {
        Ok(message) => message,
        Err(invalid) => return compat_error(StatusCode::UNPROCESSABLE_ENTITY, &invalid.message),
    };
    if let Err(error) = ensure_can_send(&instance) {
        return compat_error(error.status(), error.message());
    }
    if let Err(error) = ensure_window_open(&app, &instance, &message).await {
        return compat_error(error.status(), error.message());
    }
    let to = message.to.to_string();
    match app.send(&instance, message, None).await {
        Ok(sent) => axum::Json(json!({
            "message_status": "Success",
            "data": {
                "from": instance.phone_number.as_str(),
                "to": to,
                "status_code": 200,
                "message_id": sent.message_id,
            }
        }))
        .into_response(),
        Err(error) => {
            let error = ApiError::from(error);
            compat_error(error.status(), error.message())
        }
    }
}

async fn read_compat_form(request: Request) -> Result<CompatForm, Response> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(request, &())
            .await
            .map_err(|e| compat_error(StatusCode::BAD_REQUEST, &e.body_text()))?;
        let mut form = CompatForm::default();
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| compat_error(e.status(), &e.body_text()))?
        {
            let name = field.name().unwrap_or_default().to_string();
            let value = field
                .text()
                .await
                .map_err(|e| compat_error(e.status(), &e.body_text()))?;
            match name.as_str() {
                "appkey" => form.appkey = value,
                "authkey" => form.authkey = value,
                "to" => form.to = value,
                "message" => form.message = value,
                "file" => form.file = Some(value),
                _ => {}
            }
        }
        return Ok(form);
    }
    let body = Bytes::from_request(request, &())
        .await
        .map_err(|_| too_large().into_response())?;
    if content_type.starts_with("application/json") {
        serde_json::from_slice(&body)
            .map_err(|e| compat_error(StatusCode::BAD_REQUEST, &format!("the body is not valid JSON: {e}")))
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        serde_urlencoded::from_bytes(&body)
            .map_err(|e| compat_error(StatusCode::BAD_REQUEST, &format!("the form is malformed: {e}")))
    } else {
        Err(compat_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send a form (multipart/form-data or application/x-www-form-urlencoded) or JSON",
        ))
    }
}

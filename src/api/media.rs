//! `POST /v1/media`: the business uploads a file (multipart, field `file`) and gets a
//! `media_id` to send with instead of a public `media_url`; `GET /v1/media/{id}` answers an
//! uploaded file back (the portal shows sent pictures with it).
//!
//! The file's content type (the part's `Content-Type`) must be one WhatsApp takes
//! ([`kind_of`]), and its size within WhatsApp's cap for that kind (`channels::meta::media::cap`);
//! otherwise 415 `unsupported_media_type`, 413 `file_too_large` or 422 `empty_file`, and nothing
//! is stored. On `meta` the file goes to `POST /{phone-number-id}/media` and Meta's id is the
//! `media_id`; on the sandbox botlinkd makes the id. Either way botlinkd keeps a copy in the
//! database (the `media` table, keyed by the media id), so `GET /v1/media/{id}` works on both.
//! Uploads may be as large as WhatsApp's largest cap (100 MB, documents); the route has a body
//! limit of its own for that.

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::{Authed, Json, Path};
use super::schemas::ErrorBody;
use crate::app::App;
use crate::channels::meta::media::cap;
use crate::instances::Channel;
use crate::store::KeptMedia;

/// The body limit of an upload: the largest cap (documents), and room for the form around it.
const UPLOAD_LIMIT: usize = 100 * 1024 * 1024 + 64 * 1024;

/// The routes.
pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/media", post(upload).layer(DefaultBodyLimit::max(UPLOAD_LIMIT)))
        .route("/v1/media/{id}", get(read))
}

/// The WhatsApp media type of a content type, if WhatsApp takes it.
pub fn kind_of(content_type: &str) -> Option<&'static str> {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    Some(match essence.as_str() {
        "image/jpeg" | "image/png" => "image",
        "image/webp" => "sticker",
        "audio/aac" | "audio/amr" | "audio/mpeg" | "audio/mp4" | "audio/ogg" => "audio",
        "video/mp4" | "video/3gpp" => "video",
        "text/plain"
        | "application/pdf"
        | "application/msword"
        | "application/vnd.ms-excel"
        | "application/vnd.ms-powerpoint"
        | "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        | "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        | "application/vnd.openxmlformats-officedocument.presentationml.presentation" => "document",
        _ => return None,
    })
}

/// An uploaded file.
#[derive(Serialize, ToSchema)]
pub(super) struct Uploaded {
    /// Send it with `"media_id"`.
    media_id: String,
    /// `image`, `sticker`, `audio`, `video` or `document`.
    #[serde(rename = "type")]
    kind: &'static str,
    content_type: String,
    size: usize,
}

#[utoipa::path(post, path = "/v1/media", tag = "messages",
    request_body(content_type = "multipart/form-data", description = "One part named `file`, with its Content-Type"),
    responses((status = 201, description = "Stored; send it with `media_id`", body = Uploaded),
        (status = 400, description = "Not a well-formed multipart form", body = ErrorBody),
        (status = 413, description = "Over WhatsApp's size cap for its type", body = ErrorBody),
        (status = 415, description = "A content type WhatsApp does not take", body = ErrorBody),
        (status = 422, description = "No `file` part, or an empty one", body = ErrorBody),
        (status = 502, description = "Meta did not take the file", body = ErrorBody),
        (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn upload(
    State(app): State<App>,
    Authed(instance): Authed,
    request: Request,
) -> Result<(StatusCode, Json<Uploaded>), ApiError> {
    // Read here rather than as an extractor, so that a malformed form gets the API's JSON error.
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| ApiError::new(e.status(), "invalid_upload", e.body_text()))?;
    let mut file = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| ApiError::new(e.status(), "invalid_upload", e.body_text()))?
    {
        if field.name() == Some("file") {
            let content_type = field.content_type().unwrap_or_default().to_string();
            let bytes = field
                .bytes()
                .await
                .map_err(|e| ApiError::new(e.status(), "invalid_upload", e.body_text()))?;
            file = Some((content_type, bytes));
        }
    }
    let (content_type, bytes) = file.ok_or_else(|| {
        ApiError::invalid(
            "missing_file",
            "send the file as a multipart/form-data part named `file`",
        )
    })?;
    let kind = kind_of(&content_type).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "WhatsApp does not take `{content_type}`: images are image/jpeg or image/png, stickers image/webp, \
                 audio audio/aac, amr, mpeg, mp4 or ogg, video video/mp4 or 3gpp, documents PDF, text or Office files"
            ),
        )
    })?;
    if bytes.is_empty() {
        return Err(ApiError::invalid("empty_file", "the `file` part is empty"));
    }
    if bytes.len() > cap(kind) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "file_too_large",
            format!(
                "WhatsApp takes {kind} files of at most {} bytes; this one has {}",
                cap(kind),
                bytes.len()
            ),
        ));
    }
    let media_id = match (&instance.channel, &instance.meta) {
        (Channel::Meta, Some(meta)) => app
            .graph
            .upload_media(&meta.phone_number_id, &meta.access_token, &content_type, bytes.to_vec())
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "meta_unavailable",
                    format!("Meta did not take the file: {e}"),
                )
            })?,
        _ => crate::ids::media_id(),
    };
    let size = bytes.len();
    let kept = KeptMedia {
        content_type: content_type.clone(),
        sha256: Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect(),
        bytes: bytes.to_vec(),
        created_at: app.now(),
    };
    app.store.keep_media(instance.id, &media_id, kept).await?;
    Ok((
        StatusCode::CREATED,
        Json(Uploaded {
            media_id,
            kind,
            content_type,
            size,
        }),
    ))
}

#[utoipa::path(get, path = "/v1/media/{id}", tag = "messages", params(("id" = String, Path, description = "A media id from POST /v1/media")),
    responses((status = 200, description = "The file, with its content type", content_type = "application/octet-stream"),
        (status = 404, description = "No such upload", body = ErrorBody), (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn read(State(app): State<App>, Authed(instance): Authed, Path(id): Path<String>) -> Result<Response, ApiError> {
    let kept = app
        .store
        .kept_media(instance.id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("media"))?;
    Ok(kept_response(kept))
}

/// A file botlinkd holds, answered with its content type, a short private cache life and
/// `nosniff` (the browser must not guess another type for bytes a customer chose).
pub(super) fn kept_response(kept: KeptMedia) -> Response {
    let mut response = Response::new(Body::from(kept.bytes));
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&kept.content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=300"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    response.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_map_to_whatsapp_media_types() {
        assert_eq!(kind_of("image/PNG"), Some("image"));
        assert_eq!(kind_of("application/pdf; name=x.pdf"), Some("document"));
        assert_eq!(kind_of("image/webp"), Some("sticker"));
        assert_eq!(kind_of("text/html"), None);
        assert_eq!(kind_of(""), None);
    }
}

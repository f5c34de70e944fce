//! The one error type at the HTTP edge, with its stable body
//! `{"error": {"code": "…", "message": "…"}}`.
//!
//! Internal errors are logged with their cause chain and answered as a generic 500
//! (`internal`), so no detail of the storage (or a secret) reaches a client.
//!
//! **503 versus 500.** A storage error that retrying later may cure
//! (`StoreError::is_unavailable`: SQLite's failed group commit, stopped writer or
//! `SQLITE_FULL`; PostgreSQL's pool timeout, closed pool, an I/O error, or a database error of
//! SQLSTATE class `08`, connection exception, or `57P`, such as `57P01` on a restart or a
//! `pg_terminate_backend`) is logged and answered 503 `unavailable`. A `Conflict` is a 409.
//! Anything else, a constraint PostgreSQL enforces or a corrupt row, is a bug or a refusal and
//! answers the generic 500. A full disk harms nothing already written and clears when space is
//! made, and a lost connection is replaced by the pool, so both are "try again later", not
//! bugs. A client that retries a send after a lost connection should use an Idempotency-Key,
//! in case the lost statement was a `COMMIT` that went through. (The fault suite's
//! connections test accepts a 500 as well as a 503 for a call made while its connection is
//! cut.)
//!
//! [`ApiError::too_many`] makes a 429 with a `Retry-After` in whole seconds, rounded up. Only
//! a 401 for a request without any `Authorization` header carries `WWW-Authenticate: Basic`:
//! browsers answer that challenge with a password dialog, which would pop up over the portal
//! whenever its stored keys are wrong, so wrong keys get a plain 401.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::messages::Invalid;
use crate::store::StoreError;

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Whether a 401 carries `WWW-Authenticate: Basic` (only when no credentials came: a
    /// browser answers that header with a login dialog, which must not pop up over the
    /// portal when its stored keys are wrong).
    challenge: bool,
    /// For a 429: when to come back (`Retry-After`).
    retry_after: Option<std::time::Duration>,
}

impl ApiError {
    /// An error with a status, a code and a message for the user.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            challenge: false,
            retry_after: None,
        }
    }

    /// 429, with `Retry-After`.
    pub fn too_many(code: &'static str, message: impl Into<String>, retry_after: std::time::Duration) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, code, message)
        }
    }

    /// 401 for a request that carried no credentials at all: asks for Basic auth.
    pub fn credentials_required() -> Self {
        Self {
            challenge: true,
            ..Self::unauthorized()
        }
    }

    /// 401: missing or wrong keys.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid credentials: use HTTP Basic auth with the App Key as user and the Auth Key as password",
        )
    }

    /// 404 for a named thing.
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    /// 422 for a field that does not validate.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 400 for a malformed request.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message for the user.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// 500, after logging the cause chain.
    pub fn internal(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut chain = error.to_string();
        let mut source = error.source();
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        tracing::error!(error = %chain, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred; it has been logged",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            error if error.is_unavailable() => {
                tracing::error!(error = %error, "storage unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "storage is unavailable; try again",
                )
            }
            StoreError::Conflict(message) => Self::new(StatusCode::CONFLICT, "conflict", message),
            other => Self::internal(&other),
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        Self::invalid(invalid.code, invalid.message)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let text = rejection.body_text();
        match rejection {
            JsonRejection::JsonDataError(_) => Self::invalid("invalid_body", text),
            JsonRejection::JsonSyntaxError(_) => Self::bad_request("malformed_json", text),
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            ),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => too_large(),
            other => Self::bad_request("invalid_body", other.body_text()),
        }
    }
}

/// 413 for a body over the limit.
pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the request body is larger than this server accepts",
    )
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request("invalid_query", rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request("invalid_path", rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(wait) = self.retry_after {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        if self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"botlinkd\""),
            );
        }
        response
    }
}

//! Request extractors that answer bad input with the API's own error shape: JSON bodies,
//! query strings, path segments, and HTTP Basic authentication with the instance's keys.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::app::App;
use crate::instances::{AuthKey, AuthKeyHash, Instance};

/// A JSON body (or response) whose rejection is an [`ApiError`].
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Json(value))
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A query string whose rejection is an [`ApiError`].
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(value) = axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Query(value))
    }
}

/// Path parameters whose rejection is an [`ApiError`].
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(value) = axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(Path(value))
    }
}

/// The instance whose App Key and Auth Key came in the `Authorization: Basic` header.
pub struct Authed(pub Instance);

impl FromRequestParts<App> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        if !parts.headers.contains_key(AUTHORIZATION) {
            return Err(ApiError::credentials_required());
        }
        let (app_key, auth_key) = basic_credentials(parts).ok_or_else(ApiError::unauthorized)?;
        authenticate(app, &app_key, &AuthKey::new(auth_key)).await.map(Authed)
    }
}

fn basic_credentials(parts: &Parts) -> Option<(String, String)> {
    let header = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Checks an App Key / Auth Key pair. An unknown App Key still costs a hash comparison, so
/// the answer time does not tell whether the App Key exists.
pub async fn authenticate(app: &App, app_key: &str, auth_key: &AuthKey) -> Result<Instance, ApiError> {
    if app_key.is_empty() || app_key.len() > 256 || auth_key.expose().len() > 256 {
        return Err(ApiError::unauthorized());
    }
    match app.store.instance_by_app_key(app_key).await? {
        Some((instance, hash)) if hash.matches(auth_key) => Ok(instance),
        Some(_) => Err(ApiError::unauthorized()),
        None => {
            let _ = AuthKeyHash([0; 32]).matches(auth_key);
            Err(ApiError::unauthorized())
        }
    }
}

/// A raw body whose rejection (too large, broken off) is an [`ApiError`].
pub struct RawBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::body::Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(RawBody(bytes)),
            Err(rejection) if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(super::error::too_large())
            }
            Err(rejection) => Err(ApiError::bad_request("invalid_body", rejection.body_text())),
        }
    }
}

//! Request extractors that answer bad input with the API's own error shape: JSON bodies,
//! query strings, path segments, and HTTP Basic authentication with the instance's keys.
//!
//! [`Authed`] is the Basic check of App Key and Auth Key. No `Authorization` header at all
//! gives the one 401 that carries `WWW-Authenticate`, and is not counted as a failure. The
//! rate limits ([`crate::api::limits`]) are applied here: [`refuse_guesses`] answers 429
//! `too_many_auth_failures` for an address without failures left, before anything is looked
//! up, so no authentication failure reaches the database once an address is out of tries;
//! [`failed_authentication`] spends one of its failures and answers 401; [`authenticate`]
//! (shared with `/api/create-message`) does both around the key check; and [`charge`] spends
//! one of the instance's API calls or answers 429 `rate_limited`, for every authenticated
//! route except `POST /v1/sandbox/inbound`. `parse_basic` reads an `Authorization: Basic`
//! value.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::de::DeserializeOwned;

use std::net::IpAddr;

use super::error::ApiError;
use super::limits::client_ip;
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
        let ip = client_ip(parts);
        let Some((app_key, auth_key)) = basic_credentials(parts) else {
            refuse_guesses(app, ip)?;
            return Err(failed_authentication(app, ip));
        };
        let instance = authenticate(app, ip, &app_key, &AuthKey::new(auth_key)).await?;
        // The sandbox's simulated customers stand in for WhatsApp's traffic, not API use.
        if parts.uri.path() != "/v1/sandbox/inbound" {
            charge(app, &instance)?;
        }
        Ok(Authed(instance))
    }
}

fn basic_credentials(parts: &Parts) -> Option<(String, String)> {
    parse_basic(parts.headers.get(AUTHORIZATION)?.to_str().ok()?)
}

/// The user and password of an `Authorization: Basic …` value.
pub(crate) fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Checks an App Key / Auth Key pair from the client at `ip`. An unknown App Key still
/// costs a hash comparison, so the answer time does not tell whether the App Key exists. An
/// address with too many recent failures is answered 429 without looking.
pub async fn authenticate(
    app: &App,
    ip: Option<IpAddr>,
    app_key: &str,
    auth_key: &AuthKey,
) -> Result<Instance, ApiError> {
    refuse_guesses(app, ip)?;
    if app_key.is_empty() || app_key.len() > 256 || auth_key.expose().len() > 256 {
        return Err(failed_authentication(app, ip));
    }
    match app.store.instance_by_app_key(app_key).await? {
        Some((instance, hash)) if hash.matches(auth_key) => Ok(instance),
        Some(_) => Err(failed_authentication(app, ip)),
        None => {
            let _ = AuthKeyHash([0; 32]).matches(auth_key);
            Err(failed_authentication(app, ip))
        }
    }
}

/// 429 for an address that has failed to authenticate too often lately.
pub fn refuse_guesses(app: &App, ip: Option<IpAddr>) -> Result<(), ApiError> {
    let Some(ip) = ip else { return Ok(()) };
    app.limits.auth_failures.check(&ip).map_err(|wait| {
        ApiError::too_many(
            "too_many_auth_failures",
            "too many failed authentications from this address; wait before trying again",
            wait,
        )
    })
}

/// Counts a failed authentication against the address, and answers 401.
pub fn failed_authentication(app: &App, ip: Option<IpAddr>) -> ApiError {
    if let Some(ip) = ip {
        let _ = app.limits.auth_failures.take(&ip);
    }
    ApiError::unauthorized()
}

/// Counts an API call against the instance's rate limit.
pub fn charge(app: &App, instance: &Instance) -> Result<(), ApiError> {
    let Some(calls) = &app.limits.api_calls else {
        return Ok(());
    };
    calls.take(&instance.id).map_err(|wait| {
        ApiError::too_many(
            "rate_limited",
            format!(
                "this instance is over its API rate limit ({} calls a second); slow down",
                app.config.api_rate_limit.unwrap_or_default()
            ),
            wait,
        )
    })
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

/// Property test: `Authorization` values of any shape are read or refused, never a panic
/// (1500 cases; docs/RELIABILITY.md lists it).
#[cfg(test)]
mod hostile_input {
    use proptest::prelude::*;

    use super::parse_basic;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

        #[test]
        fn basic_credentials_of_any_shape_never_panic(s in ".{0,60}") {
            let _ = parse_basic(&s);
            let _ = parse_basic(&format!("Basic {s}"));
        }
    }
}

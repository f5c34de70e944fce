//! Looking at how things went: `GET /v1/webhooks/{id}/stats` (an endpoint's attempts in time
//! buckets, for its chart) and `GET /v1/overview` (what an instance did since a time, for the
//! portal's first tab).
//!
//! **Stats** read `attempt_stats` (see `store::attempt_stats`): for each bucket of `bucket`
//! (a whole number of minutes, `1m` to `1d`, default `1h`) from `since` (RFC 3339, default 24
//! hours ago, at most 31 days back; a time ahead of the server's clock counts as now) to now: attempts, successes, failures, p50 and p99 latency
//! (from a histogram, within about 9 %), every bucket present so a chart needs no gap logic;
//! and now: the deliveries not yet made and the latest success. At most 1,500 buckets.
//!
//! **Overview** counts the instance's events from `since` (default 24 hours ago; the portal
//! sends the browser's midnight): messages in (`message`), out (`ack.sent`), failed sends
//! (`ack.failed`), delivered and read as a share of sent (`ack.delivered`, `ack.read`; acks of
//! messages sent before `since` count too, so a share is capped at 100), webhook success from
//! `attempt_stats`, deliveries waiting and endpoints disabled now, and messages in and out per
//! hour for a sparkline. Shares are `null` when there is nothing to divide by.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::deliveries::instant;
use super::error::ApiError;
use super::extract::{Authed, Json, Path, Query};
use super::schemas::ErrorBody;
use crate::app::App;
use crate::clock::Millis;
use crate::store::attempt_stats::{self, MINUTE, StatsBucket};
use crate::store::history::HOUR;
use crate::store::rfc3339;

/// How far back either answer may look.
const MAX_LOOKBACK: Millis = 31 * 24 * HOUR;
/// The most buckets a stats answer has.
const MAX_BUCKETS: Millis = 1500;

/// The routes.
pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/webhooks/{id}/stats", get(stats))
        .route("/v1/overview", get(overview))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct StatsQuery {
    /// From this time (RFC 3339); default 24 hours ago, at most 31 days back.
    #[serde(default)]
    since: Option<String>,
    /// The bucket width: a whole number of minutes such as `5m`, `1h` or `1d` (default `1h`).
    #[serde(default)]
    bucket: Option<String>,
}

/// An endpoint's deliveries over time.
#[derive(Serialize, ToSchema)]
pub(super) struct EndpointStats {
    endpoint_id: String,
    /// Where the first bucket starts.
    since: String,
    /// Each bucket's width.
    bucket_seconds: i64,
    /// Oldest first, every bucket up to now.
    buckets: Vec<StatsBucket>,
    /// Deliveries not yet made now (pending, retrying or waiting their turn).
    waiting: i64,
    /// When the latest successful attempt ended (RFC 3339), as far as statistics go back.
    last_success_at: Option<String>,
}

/// `since` as given (a time after now, from a client whose clock runs ahead, counts as now),
/// or `default_back` before now; never more than 31 days back.
fn start(app: &App, since: Option<&str>, default_back: Millis) -> Result<(Millis, Millis), ApiError> {
    let now = app.now();
    let since = instant("since", since)?.unwrap_or(now - default_back).min(now);
    if since < now - MAX_LOOKBACK {
        return Err(ApiError::bad_request(
            "invalid_time",
            "`since` must be within the last 31 days",
        ));
    }
    Ok((since, now))
}

fn bucket_width(text: Option<&str>) -> Result<Millis, ApiError> {
    let refuse = || {
        ApiError::bad_request(
            "invalid_bucket",
            "`bucket` is a whole number of minutes from 1m to 1d, such as 5m, 1h or 1d",
        )
    };
    let width = match text {
        None => HOUR,
        Some(t) => Millis::try_from(humantime::parse_duration(t.trim()).map_err(|_| refuse())?.as_millis())
            .map_err(|_| refuse())?,
    };
    if !(MINUTE..=24 * HOUR).contains(&width) || width % MINUTE != 0 {
        return Err(refuse());
    }
    Ok(width)
}

#[utoipa::path(get, path = "/v1/webhooks/{id}/stats", tag = "webhooks", params(("id" = String, Path, description = "Endpoint id"), StatsQuery),
    responses((status = 200, description = "Attempts, outcomes and latency per time bucket; what waits now", body = EndpointStats),
        (status = 400, description = "Bad since or bucket", body = ErrorBody),
        (status = 404, description = "No such endpoint", body = ErrorBody),
        (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn stats(
    State(app): State<App>,
    Authed(instance): Authed,
    Path(id): Path<String>,
    Query(q): Query<StatsQuery>,
) -> Result<Json<EndpointStats>, ApiError> {
    let endpoint = app
        .store
        .get_endpoint(instance.id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    let (since, now) = start(&app, q.since.as_deref(), 24 * HOUR)?;
    let width = bucket_width(q.bucket.as_deref())?;
    if (now - since) / width >= MAX_BUCKETS {
        return Err(ApiError::bad_request(
            "too_many_buckets",
            format!("that range holds more than {MAX_BUCKETS} buckets: choose a wider `bucket` or a later `since`"),
        ));
    }
    let activity = app.store.endpoint_activity(&endpoint.id, since).await?;
    let buckets = attempt_stats::chart(&activity.rows, since, now, width);
    Ok(Json(EndpointStats {
        endpoint_id: endpoint.id,
        since: buckets
            .first()
            .map(|b| b.start.clone())
            .unwrap_or_else(|| rfc3339(since)),
        bucket_seconds: width / 1000,
        buckets,
        waiting: activity.waiting,
        last_success_at: activity.last_success_at.map(rfc3339),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct OverviewQuery {
    /// From this time (RFC 3339), such as the start of today; default 24 hours ago.
    #[serde(default)]
    since: Option<String>,
}

/// Messages of one hour.
#[derive(Serialize, ToSchema)]
pub(super) struct HourCount {
    /// The hour's start (RFC 3339).
    start: String,
    /// Customers' messages.
    messages_in: i64,
    /// Messages sent to customers.
    messages_out: i64,
}

/// What an instance did since a time.
#[derive(Serialize, ToSchema)]
pub(super) struct Overview {
    since: String,
    /// Customers' messages received.
    messages_in: i64,
    /// Messages sent to customers (`ack.sent`).
    messages_out: i64,
    /// Sends that failed (`ack.failed`).
    messages_failed: i64,
    /// Delivered receipts as a percentage of sent messages (capped at 100; `null`: none sent).
    delivered_percent: Option<f64>,
    /// Read receipts as a percentage of sent messages (capped at 100; `null`: none sent).
    read_percent: Option<f64>,
    /// Webhook attempts made.
    webhook_attempts: i64,
    /// Of them, the percentage that succeeded (`null`: no attempts).
    webhook_success_percent: Option<f64>,
    /// Deliveries not yet made now.
    deliveries_waiting: i64,
    /// Endpoints.
    endpoints: i64,
    /// Of them, disabled.
    endpoints_disabled: i64,
    /// Messages in and out per hour, oldest first, every hour present.
    hours: Vec<HourCount>,
}

fn percent(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| ((part as f64 * 1000.0 / whole as f64).round() / 10.0).min(100.0))
}

#[utoipa::path(get, path = "/v1/overview", tag = "instance", params(OverviewQuery),
    responses((status = 200, description = "Messages, receipts, webhook health and hourly counts since a time", body = Overview),
        (status = 400, description = "Bad since", body = ErrorBody),
        (status = 401, description = "Missing or wrong keys", body = ErrorBody)))]
async fn overview(
    State(app): State<App>,
    Authed(instance): Authed,
    Query(q): Query<OverviewQuery>,
) -> Result<Json<Overview>, ApiError> {
    let (since, now) = start(&app, q.since.as_deref(), 24 * HOUR)?;
    let counts = app.store.overview(instance.id, since, now + 1).await?;
    let first_hour = since - since.rem_euclid(HOUR);
    let mut hours: Vec<HourCount> = (0..=((now - first_hour) / HOUR))
        .map(|i| HourCount {
            start: rfc3339(first_hour + i * HOUR),
            messages_in: 0,
            messages_out: 0,
        })
        .collect();
    let (mut sums_in, mut out, mut failed, mut delivered, mut read) = (0, 0, 0, 0, 0);
    for (kind, hour, count) in &counts.events_by_hour {
        let slot = usize::try_from((hour - first_hour) / HOUR)
            .ok()
            .and_then(|i| hours.get_mut(i));
        match kind.as_str() {
            "message" => {
                sums_in += count;
                if let Some(h) = slot {
                    h.messages_in += count;
                }
            }
            "ack.sent" => {
                out += count;
                if let Some(h) = slot {
                    h.messages_out += count;
                }
            }
            "ack.failed" => failed += count,
            "ack.delivered" => delivered += count,
            "ack.read" => read += count,
            _ => {}
        }
    }
    let attempts = counts.attempt_successes + counts.attempt_failures;
    Ok(Json(Overview {
        since: rfc3339(since),
        messages_in: sums_in,
        messages_out: out,
        messages_failed: failed,
        delivered_percent: percent(delivered, out),
        read_percent: percent(read, out),
        webhook_attempts: attempts,
        webhook_success_percent: percent(counts.attempt_successes, attempts),
        deliveries_waiting: counts.waiting,
        endpoints: counts.endpoints,
        endpoints_disabled: counts.disabled_endpoints,
        hours,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_widths_are_whole_minutes_up_to_a_day() {
        assert_eq!(bucket_width(None).unwrap(), HOUR);
        assert_eq!(bucket_width(Some("5m")).unwrap(), 5 * MINUTE);
        assert_eq!(bucket_width(Some("1d")).unwrap(), 24 * HOUR);
        for bad in ["30s", "90s", "2d", "soon", "0m"] {
            assert!(bucket_width(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn shares_round_to_a_tenth_and_stop_at_100() {
        assert_eq!(percent(1, 3), Some(33.3));
        assert_eq!(percent(5, 4), Some(100.0));
        assert_eq!(percent(0, 0), None);
    }
}

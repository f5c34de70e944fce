//! The event history, endpoint statistics and overview on PostgreSQL (the rules and the
//! history's SQL are in `store::history` and `store::attempt_stats`; this module binds, maps,
//! and keeps the feed's horizon).
//!
//! An ascending page is a feed read, so it keeps the rule of `outbox::list_events`: only
//! events below the oldest running transaction are returned (waiting up to
//! `outbox::HORIZON_WAIT` for older writers), so a follower never skips an event that commits
//! late. A descending page is browsing and reads what is committed.

use std::time::{Duration, Instant};

use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgPool, Postgres, Row};

use super::append::FEED_SHIFT;
use super::outbox::{HORIZON_WAIT, event};
use crate::clock::Millis;
use crate::events::EventKind;
use crate::store::attempt_stats::{self, EndpointActivity, StatsRow};
use crate::store::history::{self, Bind, Dialect, EventQuery, HistoryEvent, HistoryOrder, Outcome, OverviewCounts};
use crate::store::{StoreError, StoreResult};

fn bind_all<'q>(mut query: Query<'q, Postgres, PgArguments>, binds: &'q [Bind]) -> Query<'q, Postgres, PgArguments> {
    for b in binds {
        query = match b {
            Bind::Int(i) => query.bind(*i),
            Bind::Text(t) => query.bind(t.as_str()),
        };
    }
    query
}

pub(super) async fn event_history(
    pool: &PgPool,
    instance_id: i64,
    query: &EventQuery,
) -> StoreResult<Vec<HistoryEvent>> {
    let follows_feed = matches!(query.order, HistoryOrder::Ascending { .. });
    let horizon = format!(", pg_snapshot_xmin(pg_current_snapshot())::TEXT::INT8 << {FEED_SHIFT} AS horizon");
    let statement = history::history_statement(
        instance_id,
        query,
        Dialect::Postgres,
        if follows_feed { &horizon } else { "" },
    );
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let rows = bind_all(sqlx::query(&statement.sql), &statement.binds)
            .fetch_all(pool)
            .await?;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            let record = event(row)?;
            if follows_feed && record.seq >= row.try_get::<i64, _>("horizon")? {
                break;
            }
            let outcome: String = row.try_get("outcome")?;
            let outcome =
                Outcome::parse(&outcome).ok_or_else(|| StoreError::Corrupt(format!("outcome `{outcome}`")))?;
            events.push(HistoryEvent { event: record, outcome });
        }
        if events.len() == rows.len() || started.elapsed() >= HORIZON_WAIT {
            return Ok(events);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

pub(super) async fn endpoint_activity(
    pool: &PgPool,
    endpoint_id: &str,
    since: Millis,
) -> StoreResult<EndpointActivity> {
    let rows = sqlx::query(
        "SELECT minute, bucket, SUM(successes)::INT8 AS successes, SUM(failures)::INT8 AS failures \
         FROM attempt_stats WHERE endpoint_id = $1 AND minute >= $2 GROUP BY minute, bucket",
    )
    .bind(endpoint_id)
    .bind(since - since.rem_euclid(attempt_stats::MINUTE))
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        Ok(StatsRow {
            minute: r.try_get("minute")?,
            bucket: r.try_get("bucket")?,
            successes: r.try_get("successes")?,
            failures: r.try_get("failures")?,
        })
    })
    .collect::<StoreResult<Vec<_>>>()?;
    let waiting = sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE endpoint_id = $1 AND state IN (0, 1)")
        .bind(endpoint_id)
        .fetch_one(pool)
        .await?;
    let last_success_at: Option<Millis> = sqlx::query_scalar(
        "SELECT MAX(last_success_at) FROM attempt_stats WHERE endpoint_id = $1 AND minute = \
           (SELECT minute FROM attempt_stats WHERE endpoint_id = $1 AND successes > 0 ORDER BY minute DESC LIMIT 1)",
    )
    .bind(endpoint_id)
    .fetch_one(pool)
    .await?;
    Ok(EndpointActivity {
        rows,
        waiting,
        last_success_at: last_success_at.filter(|at| *at > 0),
    })
}

pub(super) async fn overview(
    pool: &PgPool,
    instance_id: i64,
    since: Millis,
    until: Millis,
) -> StoreResult<OverviewCounts> {
    let (mut kinds, mut hours, mut froms, mut tos) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for kind in EventKind::SUBSCRIBABLE {
        for (hour, from, to) in history::hours(since, until) {
            kinds.push(kind.as_str());
            hours.push(hour);
            froms.push(from);
            tos.push(to);
        }
    }
    let events_by_hour = sqlx::query_as::<_, (String, i64, i64)>(
        "SELECT s.kind, s.hour, (SELECT COUNT(*) FROM events e WHERE e.instance_id = $1 AND e.kind = s.kind \
                                  AND e.created_at >= s.from_at AND e.created_at < s.to_at) AS n \
         FROM unnest($2::TEXT[], $3::INT8[], $4::INT8[], $5::INT8[]) AS s(kind, hour, from_at, to_at)",
    )
    .bind(instance_id)
    .bind(kinds)
    .bind(hours)
    .bind(froms)
    .bind(tos)
    .fetch_all(pool)
    .await?
    .into_iter()
    .filter(|(_, _, n)| *n > 0)
    .collect();
    let (attempt_successes, attempt_failures): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(s.successes), 0)::INT8, COALESCE(SUM(s.failures), 0)::INT8 FROM endpoints x \
         JOIN attempt_stats s ON s.endpoint_id = x.id WHERE x.instance_id = $1 AND s.minute >= $2",
    )
    .bind(instance_id)
    .bind(since - since.rem_euclid(attempt_stats::MINUTE))
    .fetch_one(pool)
    .await?;
    let waiting: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM deliveries d WHERE d.state IN (0, 1) \
         AND d.endpoint_id = ANY(ARRAY(SELECT x.id FROM endpoints x WHERE x.instance_id = $1))",
    )
    .bind(instance_id)
    .fetch_one(pool)
    .await?;
    let (endpoints, disabled_endpoints): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(*) FILTER (WHERE NOT enabled) FROM endpoints WHERE instance_id = $1")
            .bind(instance_id)
            .fetch_one(pool)
            .await?;
    Ok(OverviewCounts {
        events_by_hour,
        attempt_successes,
        attempt_failures,
        waiting,
        endpoints,
        disabled_endpoints,
    })
}

/// Forgets statistics of minutes before `before`.
pub(super) async fn prune_stats(pool: &PgPool, before: Millis) -> StoreResult<()> {
    sqlx::query("DELETE FROM attempt_stats WHERE minute < $1")
        .bind(before)
        .execute(pool)
        .await?;
    Ok(())
}

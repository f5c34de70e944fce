//! The event history, endpoint statistics and overview on SQLite (the rules and the history's
//! SQL are in `store::history` and `store::attempt_stats`; this module binds and maps).

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::corrupt;
use crate::clock::Millis;
use crate::events::EventKind;
use crate::store::attempt_stats::{self, EndpointActivity, StatsRow};
use crate::store::history::{self, Bind, Dialect, EventQuery, HistoryEvent, Outcome, OverviewCounts};
use crate::store::{AttemptResult, StoreResult};

/// The statistics writer of the one SQLite process.
const WRITER: i64 = 0;

pub(super) fn event_history(conn: &Connection, instance_id: i64, query: &EventQuery) -> StoreResult<Vec<HistoryEvent>> {
    let statement = history::history_statement(instance_id, query, Dialect::Sqlite, "");
    let values = statement.binds.into_iter().map(|b| match b {
        Bind::Int(i) => Value::Integer(i),
        Bind::Text(t) => Value::Text(t),
    });
    let mut stmt = conn.prepare_cached(&statement.sql)?;
    let rows = stmt.query_map(params_from_iter(values), |row| {
        let outcome: String = row.get(7)?;
        Ok(HistoryEvent {
            event: super::outbox::event(row)?,
            outcome: Outcome::parse(&outcome).ok_or_else(|| corrupt(7, format!("outcome `{outcome}`")))?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Adds a batch of outcomes to the statistics (in the batch's transaction).
pub(super) fn record_stats(conn: &Connection, results: &[AttemptResult]) -> StoreResult<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO attempt_stats (endpoint_id, minute, writer, bucket, successes, failures, last_success_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT (endpoint_id, minute, writer, bucket) DO UPDATE SET \
           successes = successes + excluded.successes, failures = failures + excluded.failures, \
           last_success_at = max(last_success_at, excluded.last_success_at)",
    )?;
    for d in attempt_stats::deltas(results) {
        stmt.execute(params![
            d.endpoint_id,
            d.minute,
            WRITER,
            d.bucket,
            d.successes,
            d.failures,
            d.last_success_at
        ])?;
    }
    Ok(())
}

pub(super) fn endpoint_activity(conn: &Connection, endpoint_id: &str, since: Millis) -> StoreResult<EndpointActivity> {
    let rows = conn
        .prepare_cached(
            "SELECT minute, bucket, SUM(successes), SUM(failures) FROM attempt_stats \
             WHERE endpoint_id = ?1 AND minute >= ?2 GROUP BY minute, bucket",
        )?
        .query_map(
            params![endpoint_id, since - since.rem_euclid(attempt_stats::MINUTE)],
            |r| {
                Ok(StatsRow {
                    minute: r.get(0)?,
                    bucket: r.get(1)?,
                    successes: r.get(2)?,
                    failures: r.get(3)?,
                })
            },
        )?
        .collect::<Result<_, _>>()?;
    let waiting = conn
        .prepare_cached("SELECT COUNT(*) FROM deliveries WHERE endpoint_id = ?1 AND state IN (0, 1)")?
        .query_row([endpoint_id], |r| r.get(0))?;
    let last_success_at = conn
        .prepare_cached(
            "SELECT MAX(last_success_at) FROM attempt_stats WHERE endpoint_id = ?1 AND minute = \
               (SELECT minute FROM attempt_stats WHERE endpoint_id = ?1 AND successes > 0 ORDER BY minute DESC LIMIT 1)",
        )?
        .query_row([endpoint_id], |r| r.get::<_, Option<Millis>>(0))
        .optional()?
        .flatten()
        .filter(|at| *at > 0);
    Ok(EndpointActivity {
        rows,
        waiting,
        last_success_at,
    })
}

pub(super) fn overview(
    conn: &Connection,
    instance_id: i64,
    since: Millis,
    until: Millis,
) -> StoreResult<OverviewCounts> {
    let mut count = conn.prepare_cached(
        "SELECT COUNT(*) FROM events WHERE instance_id = ?1 AND kind = ?2 AND created_at >= ?3 AND created_at < ?4",
    )?;
    let mut events_by_hour = Vec::new();
    for kind in EventKind::SUBSCRIBABLE {
        for (hour, from, to) in history::hours(since, until) {
            let n: i64 = count.query_row(params![instance_id, kind.as_str(), from, to], |r| r.get(0))?;
            if n > 0 {
                events_by_hour.push((kind.as_str().to_string(), hour, n));
            }
        }
    }
    let (attempt_successes, attempt_failures) = conn
        .prepare_cached(
            "SELECT COALESCE(SUM(s.successes), 0), COALESCE(SUM(s.failures), 0) FROM endpoints x \
             JOIN attempt_stats s ON s.endpoint_id = x.id WHERE x.instance_id = ?1 AND s.minute >= ?2",
        )?
        .query_row(
            params![instance_id, since - since.rem_euclid(attempt_stats::MINUTE)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
    let waiting = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM deliveries d WHERE d.state IN (0, 1) \
             AND d.endpoint_id IN (SELECT x.id FROM endpoints x WHERE x.instance_id = ?1)",
        )?
        .query_row([instance_id], |r| r.get(0))?;
    let (endpoints, disabled_endpoints) = conn
        .prepare_cached("SELECT COUNT(*), COALESCE(SUM(enabled = 0), 0) FROM endpoints WHERE instance_id = ?1")?
        .query_row([instance_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
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
pub(super) fn prune_stats(conn: &Connection, before: Millis) -> StoreResult<()> {
    conn.prepare_cached("DELETE FROM attempt_stats WHERE minute < ?1")?
        .execute([before])?;
    Ok(())
}

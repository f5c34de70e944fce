//! Delivery statistics per endpoint, kept as they happen so that a chart of a day reads a few
//! hundred rows instead of every attempt.
//!
//! Each batch of outcomes the store records also adds to `attempt_stats`, one row per
//! (endpoint, minute, writer, latency bucket) with its successes and failures and the latest
//! success's end. `writer` is 0 on SQLite and a random number per process on PostgreSQL, so
//! processes never wait on each other's rows. Latency buckets grow by a factor of 2^(1/4)
//! (about 19 %): bucket 0 is under 1 ms, bucket b ≥ 1 holds [2^((b-1)/4), 2^(b/4)) ms, and the
//! last one everything from about 70 s. A percentile is read as the geometric middle of its
//! bucket, within about 9 % of the true value, which is plenty for a chart. Rows are pruned
//! with the events (retention).

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use super::{AttemptResult, rfc3339};
use crate::clock::Millis;

/// The last latency bucket (about 78 s and above).
pub const LAST_BUCKET: i16 = 66;

/// A minute, in milliseconds.
pub const MINUTE: Millis = 60_000;

/// The latency bucket of an attempt that took `ms` milliseconds.
pub fn latency_bucket(ms: i64) -> i16 {
    if ms < 1 {
        return 0;
    }
    let quarter_octaves = ((ms as f64).log2() * 4.0).floor() as i64;
    (1 + quarter_octaves).clamp(1, i64::from(LAST_BUCKET)) as i16
}

/// The latency a bucket stands for: the geometric middle of its bounds.
pub fn bucket_latency_ms(bucket: i16) -> f64 {
    if bucket <= 0 {
        return 0.5;
    }
    2f64.powf((f64::from(bucket) - 1.0) / 4.0 + 0.125)
}

/// What one batch adds to one row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsDelta {
    /// The endpoint.
    pub endpoint_id: String,
    /// The minute the attempts started in (ms since the epoch, a multiple of [`MINUTE`]).
    pub minute: Millis,
    /// Their latency bucket.
    pub bucket: i16,
    /// How many succeeded.
    pub successes: i64,
    /// How many failed.
    pub failures: i64,
    /// When the latest success ended (0: none).
    pub last_success_at: Millis,
}

/// Sums a batch of outcomes into one delta per row, in key order.
pub fn deltas(results: &[AttemptResult]) -> Vec<StatsDelta> {
    let mut rows: BTreeMap<(&str, Millis, i16), StatsDelta> = BTreeMap::new();
    for r in results {
        let minute = r.started_at - r.started_at.rem_euclid(MINUTE);
        let bucket = latency_bucket(r.duration_ms);
        let row = rows
            .entry((&r.endpoint_id, minute, bucket))
            .or_insert_with(|| StatsDelta {
                endpoint_id: r.endpoint_id.clone(),
                minute,
                bucket,
                ..StatsDelta::default()
            });
        if r.success {
            row.successes += 1;
            row.last_success_at = row.last_success_at.max(r.started_at + r.duration_ms);
        } else {
            row.failures += 1;
        }
    }
    rows.into_values().collect()
}

/// A stored row, summed over writers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsRow {
    /// The minute.
    pub minute: Millis,
    /// The latency bucket.
    pub bucket: i16,
    /// Successes.
    pub successes: i64,
    /// Failures.
    pub failures: i64,
}

/// What the store knows of an endpoint's deliveries since some time.
#[derive(Clone, Debug, Default)]
pub struct EndpointActivity {
    /// The rows since then, any order.
    pub rows: Vec<StatsRow>,
    /// Deliveries not yet made (pending or waiting) now.
    pub waiting: i64,
    /// When the latest success ended, as far as the statistics go back.
    pub last_success_at: Option<Millis>,
}

/// One time bucket of an endpoint's chart.
#[derive(Clone, Debug, Serialize, ToSchema, PartialEq)]
pub struct StatsBucket {
    /// Where the bucket starts (RFC 3339).
    pub start: String,
    /// Attempts started in it.
    pub attempts: i64,
    /// Of which succeeded.
    pub successes: i64,
    /// Of which failed.
    pub failures: i64,
    /// Median attempt latency in milliseconds (`null` without attempts).
    pub p50_ms: Option<f64>,
    /// 99th percentile attempt latency in milliseconds (`null` without attempts).
    pub p99_ms: Option<f64>,
}

/// Sums rows into buckets of `width` from `since` up to `now`, every bucket present (empty
/// ones with zeros), oldest first. Bucket starts are multiples of `width` since the epoch.
pub fn chart(rows: &[StatsRow], since: Millis, now: Millis, width: Millis) -> Vec<StatsBucket> {
    let first = since - since.rem_euclid(width);
    let count = ((now - first) / width + 1).max(0) as usize;
    let mut histograms = vec![BTreeMap::<i16, i64>::new(); count];
    let mut sums = vec![(0i64, 0i64); count];
    for row in rows {
        let Ok(index) = usize::try_from((row.minute - first).div_euclid(width)) else {
            continue;
        };
        if index >= count {
            continue;
        }
        sums[index].0 += row.successes;
        sums[index].1 += row.failures;
        *histograms[index].entry(row.bucket).or_default() += row.successes + row.failures;
    }
    (0..count)
        .map(|i| {
            let (successes, failures) = sums[i];
            StatsBucket {
                start: rfc3339(first + i as Millis * width),
                attempts: successes + failures,
                successes,
                failures,
                p50_ms: percentile(&histograms[i], 0.50),
                p99_ms: percentile(&histograms[i], 0.99),
            }
        })
        .collect()
}

/// The latency below which a fraction `q` of the attempts fall, from a bucket histogram.
fn percentile(histogram: &BTreeMap<i16, i64>, q: f64) -> Option<f64> {
    let total: i64 = histogram.values().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as i64;
    let mut seen = 0;
    for (bucket, count) in histogram {
        seen += count;
        if seen >= rank {
            return Some((bucket_latency_ms(*bucket) * 10.0).round() / 10.0);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_grow_by_a_quarter_octave_and_stand_for_their_middle() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(1), 1);
        assert_eq!(latency_bucket(2), 5);
        assert_eq!(latency_bucket(1024), 41);
        assert_eq!(latency_bucket(i64::MAX), LAST_BUCKET);
        for ms in [1, 3, 17, 250, 4_000, 30_000] {
            let shown = bucket_latency_ms(latency_bucket(ms));
            assert!(
                (shown - ms as f64).abs() / (ms as f64) < 0.1,
                "{ms} ms shown as {shown}"
            );
        }
    }

    fn row(minute: Millis, bucket: i16, successes: i64, failures: i64) -> StatsRow {
        StatsRow {
            minute,
            bucket,
            successes,
            failures,
        }
    }

    #[test]
    fn a_chart_sums_rows_into_every_bucket_with_percentiles() {
        let hour = 60 * MINUTE;
        let rows = [
            row(0, latency_bucket(10), 98, 0),
            row(MINUTE, latency_bucket(500), 1, 1),
            row(2 * hour + 5 * MINUTE, latency_bucket(3), 0, 4),
        ];
        let chart = chart(&rows, 0, 2 * hour + 30 * MINUTE, hour);
        assert_eq!(chart.len(), 3);
        assert_eq!((chart[0].attempts, chart[0].successes, chart[0].failures), (100, 99, 1));
        assert!((chart[0].p50_ms.unwrap() - 10.0).abs() < 1.0);
        assert!((chart[0].p99_ms.unwrap() - 500.0).abs() < 50.0);
        assert_eq!((chart[1].attempts, chart[1].p50_ms), (0, None));
        assert_eq!(chart[2].failures, 4);
        assert_eq!(chart[2].start, "1970-01-01T02:00:00.000Z");
    }
}

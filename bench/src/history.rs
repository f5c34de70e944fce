//! W6, looking back: a million stored events (scale 1), then the history's queries as the
//! portal and API clients make them, each timed over repeated runs through the public API.
//!
//! The events are customers' messages from 1,000 conversations, delivered to one endpoint;
//! then the receiver refuses for a moment while 10 more customers write 100 messages each, so
//! the store also holds a few `failing` heads with `pending` events behind them, as it does
//! while a receiver has trouble. Each query runs 10 times; the median and the slowest are
//! printed, in milliseconds of wall time for the whole HTTP request.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Bench, Message, conversations};

/// How often each query runs.
const RUNS: usize = 10;

impl Bench {
    pub(super) async fn w6(&self) -> anyhow::Result<()> {
        let n = self.count(1_000_000);
        let server = self.server().await?;
        let endpoint = self.webhook(&server, true).await?;
        let started = Instant::now();
        let (sent, _) = self.drive(&server, conversations(n, 1000), 64, None).await?;
        self.receiver.wait_for(n, Duration::from_secs(3600)).await?;
        println!(
            "{:<44} {:>12.0} s to store and deliver {n} events",
            format!("W6 history ({n} events stored)"),
            started.elapsed().as_secs_f64()
        );
        // A receiver in trouble: ten customers' messages fail and queue behind their heads.
        self.receiver.seen.refuse.store(true, Ordering::SeqCst);
        let troubled: Vec<Message> = (0..1000)
            .map(|i| (format!("44771{:07}", i % 10), format!("while refused {i}")))
            .collect();
        self.drive(&server, troubled, 64, None).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;

        let middle = &sent[sent.len() / 2].0;
        let page = self
            .get(&server, &format!("/v1/events?order=desc&limit=50&message_id={middle}"))
            .await?;
        let middle_at = page["events"][0]["created_at"].as_str().unwrap_or_default().to_string();
        let window_end = self
            .get(&server, &format!("/v1/events?order=desc&limit=1&until={middle_at}"))
            .await?;
        let deep = self
            .get(&server, &format!("/v1/events?order=desc&limit=50&until={middle_at}"))
            .await?;
        let deep_cursor = deep["next"].as_str().unwrap_or_default().to_string();
        let minute_before = window_end["events"][0]["created_at"].as_str().unwrap_or_default();
        let since = minute_before.get(..17).map(|m| format!("{m}00Z")).unwrap_or_default();
        let queries = [
            ("newest 50".to_string(), "/v1/events?order=desc&limit=50".to_string()),
            (
                "50 from the middle (before cursor)".into(),
                format!("/v1/events?order=desc&limit=50&before={deep_cursor}"),
            ),
            (
                "type=message".into(),
                "/v1/events?order=desc&limit=50&type=message".into(),
            ),
            (
                "type=ack.failed (no match)".into(),
                "/v1/events?order=desc&limit=50&type=ack.failed".into(),
            ),
            (
                "number (1,000 of its events)".into(),
                "/v1/events?order=desc&limit=50&number=447700000042".into(),
            ),
            (
                "outcome=failing".into(),
                "/v1/events?order=desc&limit=50&outcome=failing".into(),
            ),
            (
                "outcome=pending".into(),
                "/v1/events?order=desc&limit=50&outcome=pending".into(),
            ),
            (
                "outcome=dead (none)".into(),
                "/v1/events?order=desc&limit=50&outcome=dead".into(),
            ),
            (
                "outcome=delivered".into(),
                "/v1/events?order=desc&limit=50&outcome=delivered".into(),
            ),
            (
                "since/until: one minute mid-way".into(),
                format!("/v1/events?order=desc&limit=50&since={since}&until={middle_at}"),
            ),
            (
                "message_id (search)".into(),
                format!("/v1/events?order=desc&limit=50&message_id={middle}"),
            ),
            ("feed page (asc, after 0)".into(), "/v1/events?limit=100".into()),
            (
                "endpoint stats, 24 h in hours".into(),
                format!("/v1/webhooks/{endpoint}/stats?bucket=1h"),
            ),
            ("overview, 24 h".into(), "/v1/overview".into()),
        ];
        for (name, path) in queries {
            let mut times = Vec::with_capacity(RUNS);
            let mut found = String::new();
            for _ in 0..RUNS {
                let at = Instant::now();
                let answer = self.get(&server, &path).await?;
                times.push(at.elapsed().as_secs_f64() * 1000.0);
                found = answer["events"]
                    .as_array()
                    .map_or_else(String::new, |events| format!(" ({} found)", events.len()));
            }
            times.sort_by(f64::total_cmp);
            println!(
                "{:<44} {:>12} median {:.1} ms, slowest {:.1} ms{found}",
                format!("  {name}"),
                "",
                times[RUNS / 2],
                times[RUNS - 1]
            );
        }
        self.receiver.seen.refuse.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// A GET with the instance's keys; the JSON answer, or an error for a non-2xx status.
    async fn get(&self, server: &super::server::Server, path: &str) -> anyhow::Result<serde_json::Value> {
        Ok(self
            .http
            .get(format!("{}{path}", server.base))
            .basic_auth(&server.app_key, Some(&server.auth_key))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }
}

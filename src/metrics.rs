//! Prometheus metrics, served at `GET /metrics` in the text exposition format.
//!
//! A `prometheus-client` registry (prefix `botlinkd`): the `events_ingested` and
//! `delivery_attempts` counter families (attempts by outcome, status class and destination
//! kind: webhook, nats, rabbitmq, redis), the `delivery_paced` counter (attempts that waited
//! for their endpoint's rate limit), `meta_sends_paced` and `meta_sends_throttled` (by Meta's
//! code), the `delivery_attempt_seconds` histogram (1 ms to
//! 3 s), and gauges (`deliveries_queued`, `delivery_oldest_age_seconds`, `endpoints_disabled`,
//! `stream_watchers`), and the `leases_taken_over` counter family (work of a serving process
//! that was gone, made due again by this one: see `store::postgres::liveness`). Labels are event kinds, outcomes, status classes and delivery states,
//! never ids, numbers, URLs or keys: metrics carry no secrets and no customer data.
//!
//! Counters and the latency histogram are updated as things happen: `App` counts each event
//! it publishes after its commit, by kind (events announced by other processes are not counted
//! again), `Engine::attempt` each attempt by outcome and status class, with its duration. The queue
//! gauges are set by [`Metrics::render`] from a `QueueStats` the store reads when the endpoint
//! is scraped (two queries: the unfinished deliveries, `state IN (0, 1)`, by state with their
//! oldest event's time, and a count of disabled endpoints; paused deliveries are `pending`
//! rows and count as such). Counting in memory would drift from the database across restarts
//! and, on PostgreSQL, across processes; reading it makes every process report the same,
//! whole-database figures, at the cost of a scan of the backlog per scrape. Each server has its
//! own registry (no process-global state), so several servers can run in one test process.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::store::{AttemptResult, QueueStats};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    outcome: String,
    status_class: String,
    destination: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkLabel {
    work: &'static str,
}

/// The metrics of one server. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    events: Family<KindLabel, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    latency: Histogram,
    paced: Counter,
    meta_paced: Counter,
    meta_throttled: Family<CodeLabel, Counter>,
    queued: Family<StateLabel, Gauge>,
    oldest: Family<StateLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    disabled: Gauge,
    watchers: Gauge,
    taken_over: Family<WorkLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("botlinkd");
        let events = Family::<KindLabel, Counter>::default();
        registry.register("events_ingested", "Events stored, by kind", events.clone());
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "delivery_attempts",
            "Delivery attempts, by outcome and the receiver's status class",
            attempts.clone(),
        );
        let paced = Counter::default();
        registry.register(
            "delivery_paced",
            "Delivery attempts that waited for their endpoint's rate limit",
            paced.clone(),
        );
        let meta_paced = Counter::default();
        registry.register(
            "meta_sends_paced",
            "Meta sends that waited for their number's pace (--meta-max-mps)",
            meta_paced.clone(),
        );
        let meta_throttled = Family::<CodeLabel, Counter>::default();
        registry.register(
            "meta_sends_throttled",
            "Meta sends Meta throttled and botlinkd will retry, by Meta's error code",
            meta_throttled.clone(),
        );
        let latency = Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 3.0]);
        registry.register(
            "delivery_attempt_seconds",
            "How long delivery attempts took",
            latency.clone(),
        );
        let queued = Family::<StateLabel, Gauge>::default();
        registry.register(
            "deliveries_queued",
            "Deliveries not yet finished, by state (waiting, pending)",
            queued.clone(),
        );
        let oldest = Family::<StateLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "delivery_oldest_age_seconds",
            "Age of the oldest unfinished delivery's event, by state",
            oldest.clone(),
        );
        let disabled = Gauge::default();
        registry.register(
            "endpoints_disabled",
            "Webhook endpoints that are disabled (paused)",
            disabled.clone(),
        );
        let watchers = Gauge::default();
        registry.register(
            "stream_watchers",
            "Live stream and portal connections to this process",
            watchers.clone(),
        );
        let taken_over = Family::<WorkLabel, Counter>::default();
        registry.register(
            "leases_taken_over",
            "Leased work of serving processes that were gone, made due again by this process \
             (PostgreSQL), by kind: deliveries, sends (Meta), downloads (media)",
            taken_over.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                events,
                attempts,
                latency,
                paced,
                meta_paced,
                meta_throttled,
                queued,
                oldest,
                disabled,
                watchers,
                taken_over,
            }),
        }
    }
}

impl Metrics {
    /// Counts a stored event.
    pub fn event(&self, kind: &str) {
        self.inner
            .events
            .get_or_create(&KindLabel { kind: kind.to_string() })
            .inc();
    }

    /// Counts an attempt and records its latency.
    pub fn attempt(&self, result: &AttemptResult, destination: &'static str) {
        let status_class = match result.status_code {
            Some(code) => format!("{}xx", code / 100),
            None => "none".to_string(),
        };
        let outcome = if result.success { "success" } else { "failure" }.to_string();
        self.inner
            .attempts
            .get_or_create(&AttemptLabels {
                outcome,
                status_class,
                destination,
            })
            .inc();
        self.inner.latency.observe(result.duration_ms as f64 / 1000.0);
    }

    /// Counts an attempt that waited for its endpoint's rate limit.
    pub fn paced(&self) {
        self.inner.paced.inc();
    }

    /// Counts a Meta send that waited for its number's pace.
    pub fn meta_paced(&self) {
        self.inner.meta_paced.inc();
    }

    /// Counts a Meta send that Meta throttled (`code` is Meta's, e.g. 130429 or 131056).
    pub fn meta_throttled(&self, code: i64) {
        self.inner
            .meta_throttled
            .get_or_create(&CodeLabel { code: code.to_string() })
            .inc();
    }

    /// Renders every metric, with the queue figures given.
    pub fn render(&self, queue: &QueueStats, watchers: usize, now_ms: i64) -> String {
        let inner = &self.inner;
        for (state, count, oldest) in [
            ("waiting", queue.waiting, queue.oldest_waiting),
            ("pending", queue.pending, queue.oldest_pending),
        ] {
            let label = StateLabel {
                state: state.to_string(),
            };
            inner.queued.get_or_create(&label).set(count);
            let age = oldest.map(|at| (now_ms - at).max(0) as f64 / 1000.0).unwrap_or(0.0);
            inner.oldest.get_or_create(&label).set(age);
        }
        inner.disabled.set(queue.disabled_endpoints);
        inner.watchers.set(watchers as i64);
        let taken = queue.taken_over;
        for (work, count) in [
            ("deliveries", taken.deliveries),
            ("sends", taken.sends),
            ("downloads", taken.downloads),
        ] {
            // The store's counts only grow; the counter catches up with them.
            let counter = inner.taken_over.get_or_create(&WorkLabel { work });
            counter.inc_by(count.saturating_sub(counter.get()));
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &inner.registry);
        text
    }
}

//! The engine loop: claim due deliveries, attempt them concurrently, record the outcomes.
//!
//! The backlog lives in the database, not in memory: the engine holds only the deliveries it
//! has claimed (at most `max_in_flight`, 1024 by default), so a receiver that is down for days
//! costs rows on disk, not RAM. Attempts run as tasks; their results flow through a channel to
//! one completer that records them in batches (one group commit for many attempts). Endpoints
//! that already have `max_in_flight_per_endpoint` attempts running are skipped when
//! claiming, so one slow receiver cannot take every slot, and a semaphore per endpoint keeps
//! the engine from opening more connections than that to one receiver even when one claim
//! batch holds more of its deliveries. [`Engine::run`] runs on a runtime of its own (see
//! `crate::server`), and every attempt task is spawned there, wherever its delivery was
//! claimed.
//!
//! **Leases.** A claimed row gets `lease_until`, and `next_at` moved to the lease's end, so it
//! is due again only if nobody reports back. The lease is `--delivery-lease` (30 s by default)
//! but at least four times the attempt timeout, so it outlasts any attempt.
//!
//! **Where claims come from.** Four places, all under the same lease rules:
//! the claim loop (`claim_due`, up to 256 of the oldest due heads at a time, within the free
//! slots); the write that stores a customer's message (`record_inbound` with the
//! [`HandOver`] of [`Engine::hand_over`]: up to 4 of the new event's deliveries, heads inserted
//! already leased and started by [`Engine::start`] as soon as the write commits); a completion
//! while the engine has free slots (the next head of each conversation it finished, up to the
//! free slots, started by the completer); and a follower (see [`super::followers`]): when an
//! attempt succeeds, its task takes the delivery waiting behind it, gives it a lease, sends it
//! at once in the same slot, and names it in its outcome (`AttemptResult::follower`), so that
//! the completion that promotes it leases it instead of making it due. The hand-overs only save
//! a claim round trip. They are used only while the engine runs (`hand_over` is `None` in tests
//! that step it, while stopping, and without a free slot), and a handed-over delivery whose
//! engine stops returns to the queue when its lease ends, like any other claim.
//!
//! **When the claim loop wakes.** Only when it may have work: a write without a hand-over or
//! whose hand-over filled up, a failed outcome (a retry to schedule), a completion that may
//! have made more heads due than it handed over, a change through the API, another process's
//! event notice not marked `handed`, or any completion while the last claim left due
//! deliveries behind (no free slot, an endpoint at its cap, a full batch: `more_due`).
//! Otherwise it sleeps until the next due time, at most 500 ms.
//!
//! **Attempts.** `attempt` makes one attempt, counts it (by outcome and status class, with its
//! duration), gives its result the `endpoint_disable_after` setting, which the store applies
//! when it records it, and sets the retry time: the schedule's delay for that attempt, or,
//! when the receiver answered 429 or 503 with `Retry-After: SECONDS`, the longer of the two
//! (the receiver's wish capped at an hour). A failed attempt is something an operator acts on,
//! so it is logged at `info` with what is needed to find it again (`event_id`, `delivery_id`,
//! `endpoint_id`, attempt number, status, error, `retry` or `dead`); successes are the bulk and
//! are logged at `debug`. Neither logs the URL, which may carry a token. An outcome is never
//! dropped: should the store fail, the completer tries again until it answers.
//!
//! **Rate limits.** Attempts of an endpoint with a `rate_limit` wait for their turn, and the
//! claims of such an endpoint are capped; see [`super::pacing`].
//!
//! [`Engine::step`] is the same work done once and awaited, for tests that move a manual
//! clock and check the schedule without sleeping: it claims everything due, attempts it,
//! records it and returns a [`StepOutcome`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::followers::Followers;
use super::pacing::Pacing;
use super::{Attempter, RetrySchedule};
use crate::clock::{Clock, Millis};
use crate::config::Config;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::store::{AttemptResult, DueDelivery, HandOver, Store, StoreError, StoreResult};
use crate::webhooks::{AddressPolicy, DestinationKind};

/// The most deliveries claimed in one go.
const CLAIM_BATCH: usize = 256;
/// The most deliveries of one new event its write claims for the engine.
const INGEST_HAND_OVER: usize = 4;
/// The most outcomes recorded in one go.
const COMPLETE_BATCH: usize = 512;
/// The longest `Retry-After` a receiver can ask for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// How often the engine looks for due work when nothing wakes it.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// What one [`Engine::step`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepOutcome {
    /// Attempts made.
    pub attempted: usize,
    /// Deliveries now delivered.
    pub delivered: usize,
    /// Deliveries scheduled for another attempt.
    pub retrying: usize,
    /// Deliveries now dead.
    pub dead: usize,
}

/// The delivery engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    live: Live,
    metrics: Metrics,
    attempter: Attempter,
    clock: Clock,
    schedule: RetrySchedule,
    disable_after: Option<Millis>,
    lease: Duration,
    max_in_flight: usize,
    per_endpoint: usize,
    wake: Notify,
    in_flight: AtomicUsize,
    per_endpoint_in_flight: Mutex<HashMap<String, usize>>,
    endpoint_gates: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// While `run` runs: where attempt tasks report, so deliveries claimed elsewhere (at
    /// ingest) can be started at once.
    launcher: Mutex<Option<mpsc::WeakSender<AttemptResult>>>,
    /// Set when `run` is stopping: nothing more is handed over.
    stopping: std::sync::atomic::AtomicBool,
    /// Set when the last claim may have left due deliveries behind (no free slot, an
    /// endpoint at its cap, or a full batch): then every finished attempt wakes the claim
    /// loop. Otherwise only what may have made deliveries due without handing them over does.
    more_due: std::sync::atomic::AtomicBool,
    /// Deliveries waiting behind one this engine may be attempting.
    followers: Followers,
    /// While `run` runs: the runtime it runs on, where every attempt task is started.
    runtime: Mutex<Option<tokio::runtime::Handle>>,
    /// The endpoints' rate limits.
    pacing: Pacing,
}

impl Engine {
    /// An engine over `store` with the delivery settings of `config`.
    pub fn new(store: Arc<dyn Store>, live: Live, metrics: Metrics, config: &Config) -> Self {
        let attempter = Attempter::new(
            AddressPolicy::new(config.webhook_allow_cidrs.clone()),
            config.attempt_timeout,
            config.clock.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                pacing: Pacing::new(store.clone(), config.clock.clone()),
                store,
                live,
                metrics,
                attempter,
                clock: config.clock.clone(),
                schedule: config.retry_schedule.clone(),
                disable_after: config.endpoint_disable_after.map(|d| d.as_millis() as Millis),
                // The lease must outlast any attempt, or a slow attempt's delivery could be claimed twice.
                lease: config.delivery_lease.max(config.attempt_timeout * 4),
                max_in_flight: config.max_in_flight.max(1),
                per_endpoint: config.max_in_flight_per_endpoint.max(1),
                wake: Notify::new(),
                in_flight: AtomicUsize::new(0),
                per_endpoint_in_flight: Mutex::new(HashMap::new()),
                endpoint_gates: Mutex::new(HashMap::new()),
                launcher: Mutex::new(None),
                stopping: std::sync::atomic::AtomicBool::new(false),
                more_due: std::sync::atomic::AtomicBool::new(false),
                followers: Followers::default(),
                runtime: Mutex::new(None),
            }),
        }
    }

    /// Tells the engine that new deliveries may be due.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// How many deliveries a new event's write may claim for the engine to start at once:
    /// a few (an event fanned out to many endpoints leaves the rest to the batched claim,
    /// which reads them more cheaply); `None` when the engine is not running (tests that
    /// step it, or shutting down) or has no free slot.
    pub fn hand_over(&self) -> Option<HandOver> {
        self.hand_over_up_to(INGEST_HAND_OVER)
    }

    fn hand_over_up_to(&self, most: usize) -> Option<HandOver> {
        let inner = &self.inner;
        if inner.stopping.load(Ordering::Acquire) || inner.launcher.lock().expect("launcher lock").is_none() {
            return None;
        }
        let free = inner
            .max_in_flight
            .saturating_sub(inner.in_flight.load(Ordering::Acquire));
        (free > 0).then(|| HandOver {
            now: inner.clock.now_ms(),
            lease_until: self.lease_until(),
            limit: free.min(most),
        })
    }

    /// Starts deliveries a write claimed for the engine (see [`Engine::hand_over`]), and
    /// keeps those that wait behind another (`after`) until that one succeeds. Should the
    /// engine have stopped meanwhile, their leases hand them back to the queue.
    pub fn start(&self, mut due: Vec<DueDelivery>) {
        if due.iter().any(|d| d.after.is_some()) {
            let running = self.inner.launcher.lock().expect("launcher lock").is_some();
            for follower in due.extract_if(.., |d| d.after.is_some()) {
                if running {
                    self.inner.followers.add(follower);
                }
            }
        }
        if due.is_empty() {
            return;
        }
        let done = self
            .inner
            .launcher
            .lock()
            .expect("launcher lock")
            .as_ref()
            .and_then(|w| w.upgrade());
        if let Some(done) = done {
            self.launch(due, &done);
        }
    }

    /// Forgets the followers of an endpoint whose URL, secret or state changed: they carry
    /// what it was when they were stored, and go the database's way instead.
    pub fn forget_endpoint(&self, endpoint_id: &str) {
        self.inner.followers.forget_endpoint(endpoint_id);
        self.inner.attempter.forget_endpoint(endpoint_id);
    }

    /// The lease end for a delivery claimed now.
    pub fn lease_until(&self) -> Millis {
        self.inner.clock.now_ms() + self.inner.lease.as_millis() as Millis
    }

    /// Claims every due delivery, attempts them all, and records the outcomes.
    pub async fn step(&self) -> StoreResult<StepOutcome> {
        let inner = &self.inner;
        let now = inner.clock.now_ms();
        let due = inner
            .store
            .claim_due(now, inner.max_in_flight as u32, Vec::new(), self.lease_until())
            .await?;
        let mut attempts = JoinSet::new();
        for d in due {
            let engine = self.clone();
            attempts.spawn(async move { engine.attempt(&d).await });
        }
        let mut results = Vec::new();
        while let Some(result) = attempts.join_next().await {
            results.push(result.expect("attempt tasks do not panic"));
        }
        let outcome = tally(&results);
        let results: Arc<[AttemptResult]> = results.into();
        inner.store.complete(results.clone(), None).await?;
        inner.live.attempts(&results);
        Ok(outcome)
    }

    /// Attempts a delivery the caller has claimed already, records the outcome and returns it.
    pub async fn deliver_now(&self, due: DueDelivery) -> StoreResult<AttemptResult> {
        let result = self.attempt(&due).await;
        let results: Arc<[AttemptResult]> = Arc::new([result.clone()]);
        self.inner.store.complete(results.clone(), None).await?;
        self.inner.live.attempts(&results);
        self.wake();
        Ok(result)
    }

    async fn attempt(&self, due: &DueDelivery) -> AttemptResult {
        if self.inner.pacing.wait_turn(due).await {
            self.inner.metrics.paced();
        }
        let mut result = self.inner.attempter.attempt(due).await;
        result.disable_after = self.inner.disable_after;
        self.inner
            .metrics
            .attempt(&result, DestinationKind::of(&due.url).label());
        if !result.success {
            result.retry_at = self
                .inner
                .schedule
                .delay_after(due.failures + 1)
                // A receiver's Retry-After is honoured, up to an hour; never sooner than the schedule.
                .map(|delay| delay.max(result.retry_after.unwrap_or_default().min(MAX_RETRY_AFTER)))
                .map(|delay| self.inner.clock.now_ms() + delay.as_millis() as Millis);
        }
        if result.success {
            tracing::debug!(
                event_id = %due.event_id,
                delivery_id = due.delivery_id,
                endpoint_id = %due.endpoint_id,
                attempt = result.attempt,
                status = result.status_code.unwrap_or(0),
                duration_ms = result.duration_ms,
                "delivered"
            );
        } else {
            tracing::info!(
                event_id = %due.event_id,
                delivery_id = due.delivery_id,
                endpoint_id = %due.endpoint_id,
                attempt = result.attempt,
                status = result.status_code.unwrap_or(0),
                error = result.error.as_deref().unwrap_or_default(),
                next = if result.retry_at.is_some() { "retry" } else { "dead" },
                "delivery attempt failed"
            );
        }
        result
    }

    /// Runs the engine until `shutdown` is cancelled, then lets in-flight attempts finish
    /// (they are bounded by the attempt timeout) and records their outcomes.
    pub async fn run(self, shutdown: CancellationToken) {
        let (done, outcomes) = mpsc::channel::<AttemptResult>(COMPLETE_BATCH * 4);
        *self.inner.runtime.lock().expect("runtime lock") = Some(tokio::runtime::Handle::current());
        *self.inner.launcher.lock().expect("launcher lock") = Some(done.downgrade());
        self.inner.stopping.store(false, Ordering::Release);
        let completer = tokio::spawn(
            self.clone()
                .record_outcomes(outcomes, done.downgrade(), shutdown.clone()),
        );
        while !shutdown.is_cancelled() {
            let claimed = self.claim_and_launch(&done).await;
            if claimed == CLAIM_BATCH {
                continue;
            }
            let wait = self.idle_wait(claimed).await;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        self.inner.stopping.store(true, Ordering::Release);
        *self.inner.launcher.lock().expect("launcher lock") = None;
        *self.inner.runtime.lock().expect("runtime lock") = None;
        self.inner.followers.clear();
        drop(done);
        if completer.await.is_err() {
            tracing::error!("the delivery completer stopped unexpectedly");
        }
    }

    /// Claims what is due within the free slots and starts an attempt task for each.
    async fn claim_and_launch(&self, done: &mpsc::Sender<AttemptResult>) -> usize {
        let inner = &self.inner;
        let free = inner
            .max_in_flight
            .saturating_sub(inner.in_flight.load(Ordering::Acquire));
        if free == 0 {
            inner.more_due.store(true, Ordering::Release);
            return 0;
        }
        let skip: Vec<String> = {
            let counts = inner.per_endpoint_in_flight.lock().expect("in-flight lock");
            counts
                .iter()
                .filter(|(id, n)| **n >= self.cap_of(id))
                .map(|(id, _)| id.clone())
                .collect()
        };
        let limit = free.min(CLAIM_BATCH);
        let capped = !skip.is_empty();
        let now = inner.clock.now_ms();
        let due = match inner.store.claim_due(now, limit as u32, skip, self.lease_until()).await {
            Ok(due) => due,
            Err(error) => {
                tracing::error!(error = %error, source = ?std::error::Error::source(&error), "claiming deliveries failed");
                return 0;
            }
        };
        let claimed = due.len();
        inner.more_due.store(claimed == limit || capped, Ordering::Release);
        self.launch(due, done);
        claimed
    }

    /// How many attempts of an endpoint may be in flight here.
    fn cap_of(&self, endpoint_id: &str) -> usize {
        match self.inner.pacing.limit(endpoint_id) {
            Some(rate) => Pacing::in_flight_cap(rate, self.inner.per_endpoint),
            None => self.inner.per_endpoint,
        }
    }

    /// Starts an attempt task for each claimed delivery, and hands back to the queue those
    /// of a rate-limited endpoint beyond its cap (see [`super::pacing`]).
    fn launch(&self, mut due: Vec<DueDelivery>, done: &mpsc::Sender<AttemptResult>) {
        let inner = &self.inner;
        let over_cap = self.beyond_caps(&mut due);
        if let Some((claims, next_at)) = over_cap {
            let store = inner.store.clone();
            tokio::spawn(async move {
                // Should this fail, the leases hand the deliveries back when they end.
                if let Err(error) = store.release_claims(claims, next_at).await {
                    tracing::warn!(error = %error, "handing rate-limited deliveries back failed");
                }
            });
        }
        let runtime = inner
            .runtime
            .lock()
            .expect("runtime lock")
            .clone()
            .unwrap_or_else(tokio::runtime::Handle::current);
        for d in due {
            inner.in_flight.fetch_add(1, Ordering::AcqRel);
            *inner
                .per_endpoint_in_flight
                .lock()
                .expect("in-flight lock")
                .entry(d.endpoint_id.clone())
                .or_default() += 1;
            let engine = self.clone();
            let done = done.clone();
            let gate = self.endpoint_gate(&d.endpoint_id);
            runtime.spawn(async move {
                let mut d = d;
                loop {
                    // At most `max_in_flight_per_endpoint` connections to one receiver at
                    // once: a claim batch can hold more of its deliveries than that, and
                    // opening them all together would swamp the receiver's accept queue.
                    let permit = gate.clone().acquire_owned().await;
                    let mut result = engine.attempt(&d).await;
                    drop(permit);
                    // The conversation's next delivery, if it is waiting here, goes in the
                    // same slot.
                    let next = engine.follower_of(&d, &mut result);
                    if next.is_none() {
                        engine.release_slot(&d.endpoint_id);
                    }
                    // The completer outlives every sender, so this only fails at process
                    // exit, where the lease returns the delivery to the queue.
                    let _ = done.send(result).await;
                    match next {
                        Some(next) => d = next,
                        None => break,
                    }
                }
            });
        }
    }

    /// Takes out of `due` the deliveries of rate-limited endpoints beyond their caps, as
    /// claims to hand back and when they are due again.
    fn beyond_caps(&self, due: &mut Vec<DueDelivery>) -> Option<(Vec<(i64, Millis)>, Millis)> {
        let inner = &self.inner;
        for d in due.iter() {
            inner.pacing.note(d);
        }
        if due.iter().all(|d| d.rate_limit.is_none()) {
            return None;
        }
        let mut counts: HashMap<String, usize> = inner.per_endpoint_in_flight.lock().expect("in-flight lock").clone();
        let mut delay = Duration::ZERO;
        let beyond: Vec<DueDelivery> = due
            .extract_if(.., |d| {
                let Some(rate) = d.rate_limit else {
                    return false;
                };
                let n = counts.entry(d.endpoint_id.clone()).or_default();
                *n += 1;
                delay = delay.max(Pacing::release_delay(rate, inner.per_endpoint));
                *n > Pacing::in_flight_cap(rate, inner.per_endpoint)
            })
            .collect();
        (!beyond.is_empty()).then(|| {
            inner.more_due.store(true, Ordering::Release);
            let next_at = inner.clock.now_ms() + delay.as_millis() as Millis;
            (beyond.iter().map(|d| (d.delivery_id, d.lease_until)).collect(), next_at)
        })
    }

    /// After an attempt: the delivery that follows it in its conversation, leased and noted
    /// in `result` (see [`AttemptResult::follower`]), if it succeeded and one is waiting. A
    /// failure leaves the conversation to wait, so what was queued behind it is forgotten.
    fn follower_of(&self, d: &DueDelivery, result: &mut AttemptResult) -> Option<DueDelivery> {
        let followers = &self.inner.followers;
        if !result.success {
            followers.drop_chain(d.delivery_id);
            return None;
        }
        if self.inner.stopping.load(Ordering::Acquire) {
            return None;
        }
        let mut next = followers.take(d.delivery_id)?;
        next.lease_until = self.lease_until();
        result.follower = Some((next.delivery_id, next.lease_until));
        Some(next)
    }

    fn endpoint_gate(&self, endpoint_id: &str) -> Arc<Semaphore> {
        self.inner
            .endpoint_gates
            .lock()
            .expect("gates lock")
            .entry(endpoint_id.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.inner.per_endpoint)))
            .clone()
    }

    fn release_slot(&self, endpoint_id: &str) {
        let inner = &self.inner;
        inner.in_flight.fetch_sub(1, Ordering::AcqRel);
        let mut counts = inner.per_endpoint_in_flight.lock().expect("in-flight lock");
        if let Some(n) = counts.get_mut(endpoint_id) {
            *n -= 1;
            if *n == 0 {
                counts.remove(endpoint_id);
            }
        }
    }

    /// How long to sleep when the last claim found less than a full batch.
    async fn idle_wait(&self, claimed: usize) -> Duration {
        let now = self.inner.clock.now_ms();
        match self.inner.store.next_due_at().await {
            // Due work that was not claimed belongs to busy or disabled endpoints: a finished
            // attempt or a change wakes the loop; poll now and then in any case.
            Ok(Some(at)) if at <= now => {
                if claimed > 0 {
                    Duration::ZERO
                } else {
                    Duration::from_millis(250)
                }
            }
            Ok(Some(at)) => Duration::from_millis((at - now) as u64).min(IDLE_POLL),
            Ok(None) => IDLE_POLL,
            Err(error) => {
                tracing::error!(error = %error, "reading the next due delivery failed");
                IDLE_POLL
            }
        }
    }

    /// Records attempt outcomes in batches until every sender is gone. A completion also
    /// claims the next delivery of every conversation it finished (while the engine runs and
    /// has free slots), and this starts those at once: one conversation's events follow each
    /// other without waiting for the claim loop. The claim loop is woken only when it may
    /// have work: an outcome failed (a retry to schedule), the completion may have made more
    /// deliveries due than it handed over, or the last claim left due deliveries behind.
    async fn record_outcomes(
        self,
        mut outcomes: mpsc::Receiver<AttemptResult>,
        done: mpsc::WeakSender<AttemptResult>,
        shutdown: CancellationToken,
    ) {
        let mut batch = Vec::with_capacity(COMPLETE_BATCH);
        while outcomes.recv_many(&mut batch, COMPLETE_BATCH).await > 0 {
            let results: Arc<[AttemptResult]> = std::mem::take(&mut batch).into();
            let mut backoff = Duration::from_millis(50);
            // An outcome is never dropped: if the store fails, try again until it answers.
            // (Should the process die meanwhile, the lease hands the delivery back.)
            let (handed, hand_over) = loop {
                let free = self
                    .inner
                    .max_in_flight
                    .saturating_sub(self.inner.in_flight.load(Ordering::Acquire));
                let hand_over = (!shutdown.is_cancelled() && free > 0).then(|| HandOver {
                    now: self.inner.clock.now_ms(),
                    lease_until: self.lease_until(),
                    limit: free,
                });
                match self.inner.store.complete(results.clone(), hand_over).await {
                    Ok(handed) => break (handed, hand_over),
                    Err(StoreError::Closed) => return,
                    Err(error) => {
                        tracing::error!(error = %error, "recording delivery outcomes failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            };
            self.inner.live.attempts(&results);
            let all_handed = hand_over.is_some_and(|h| handed.len() < h.limit);
            match done.upgrade() {
                Some(done) => self.launch(handed, &done),
                // Stopping: what was handed over returns to the queue when its lease ends.
                None => drop(handed),
            }
            if !all_handed || results.iter().any(|r| !r.success) || self.inner.more_due.load(Ordering::Acquire) {
                self.wake();
            }
        }
    }
}

fn tally(results: &[AttemptResult]) -> StepOutcome {
    let mut outcome = StepOutcome {
        attempted: results.len(),
        ..StepOutcome::default()
    };
    for r in results {
        match (r.success, r.retry_at) {
            (true, _) => outcome.delivered += 1,
            (false, Some(_)) => outcome.retrying += 1,
            (false, None) => outcome.dead += 1,
        }
    }
    outcome
}

//! The delivery engine: takes due deliveries from the store, posts them to their endpoints,
//! and records each attempt's outcome on the retry schedule.
//!
//! - [`schedule`]: when a failed delivery is tried again.
//! - [`attempt`]: one signed attempt with the 3-second limit and the SSRF guard: an HTTP
//!   exchange, or a publish through [`brokers`] (NATS JetStream, RabbitMQ, Redis streams).
//! - [`pacing`]: endpoints' rate limits.
//! - [`engine`]: the claim → attempt → complete loop, and its single deterministic step.
//! - [`followers`]: deliveries waiting behind another of their conversation, started the
//!   moment the one ahead succeeds.
//!
//! The engine never sees HTTP request types of the API: its input is
//! [`crate::store::DueDelivery`], its output [`crate::store::AttemptResult`], and it imports
//! only `clock`, `config`, `live`, `metrics`, `store` and `webhooks`.

pub mod attempt;
pub mod brokers;
pub mod engine;
pub mod followers;
pub mod pacing;
pub mod schedule;

pub use attempt::Attempter;
pub use engine::{Engine, StepOutcome};
pub use schedule::RetrySchedule;

//! botlinkd — a self-hostable WhatsApp business-messaging gateway whose heart is reliable,
//! signed, real-time webhook delivery.
//!
//! # Layout
//!
//! - [`config`]: every setting of a running server, with its defaults.
//! - [`config_file`]: the optional TOML configuration file and the commented defaults.
//! - [`clock`]: the one source of "now", so delivery timing can be driven by tests.
//! - [`housekeeping`]: pruning of old events and expired Idempotency-Keys.
//! - [`ids`]: generation of the public identifiers (`evt_…`, `ep_…`, `wamid.…`, keys, secrets).
//! - [`metrics`]: the Prometheus metrics behind `/metrics`.
//! - [`phone`]: the `PhoneNumber` newtype, parsed at the boundary.
//! - [`instances`]: business numbers and their App Key / Auth Key credentials.
//! - [`messages`]: inbound and outbound WhatsApp messages and their statuses.
//! - [`events`]: the immutable `message` / `ack` events and their exact JSON payloads.
//! - [`webhooks`]: endpoints, event filters, URL checks (SSRF guard) and Standard Webhooks signing.
//! - [`delivery`]: the engine that claims due deliveries, makes the HTTP attempts and records
//!   their outcome on the retry schedule.
//! - [`listen`]: the stream client behind `botlinkd listen` and `botlinkd events tail`.
//! - [`live`]: in-process notifications of new events and attempts, for live watchers.
//! - [`watching`]: which instances this process has live watchers of, told to the store.
//! - [`sandbox`]: the built-in channel that walks outgoing messages through sent → delivered → read.
//! - [`channels`]: the `meta` channel (WhatsApp Business Cloud API): webhook intake,
//!   normalisation, the Graph API client and the send worker.
//! - [`secret`]: the `Secret` newtype that never prints.
//! - [`store`]: the storage trait and its SQLite and PostgreSQL backends; the only module that speaks SQL.
//! - [`templates`]: message templates, the sandbox's built-in ones, and the check of a template send.
//! - [`portal`]: the Cloud Chat Portal's static files, compiled into the binary.
//! - [`api`]: the HTTP surface (axum); the only module that knows HTTP request types.
//! - [`app`]: the shared state that ties the pieces together for the API.
//! - [`cli`]: the `botlinkd` command line.
//!
//! [`run`] is the whole server: tests bind port 0 and pass their own shutdown token.

pub mod api;
pub mod app;
pub mod channels;
pub mod cli;
pub mod clock;
pub mod config;
pub mod config_file;
pub mod delivery;
pub mod events;
pub mod housekeeping;
pub mod ids;
pub mod instances;
pub mod listen;
pub mod live;
pub mod messages;
pub mod metrics;
pub mod phone;
pub mod portal;
pub mod sandbox;
pub mod secret;
pub mod store;
pub mod templates;
pub mod watching;
pub mod webhooks;

mod server;

pub use server::{Server, run};

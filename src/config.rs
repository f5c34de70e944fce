//! Every setting of a running server, with the defaults that make `botlinkd serve` work
//! with no configuration at all.
//!
//! The command line (flags and `BOTLINKD_…` environment variables, see [`crate::cli`]) fills
//! a [`Config`]; tests build one with [`Config::for_tests`] and change what they need. Some
//! settings are not flags and exist for tests: `sqlite_max_pages` (a cap on the SQLite file,
//! so that the fault tests can fill "the disk"), `meta_request_timeout` (15 s) and
//! `meta_retry_base` (2 s; the `meta` tests shorten it), besides the clock and
//! `background_workers`.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;

use crate::clock::Clock;
use crate::delivery::RetrySchedule;

pub use crate::store::SqliteSync;

/// Everything a server needs to run. Its `Debug` hides the database password.
#[derive(Clone)]
pub struct Config {
    /// Where the storage lives: `sqlite://PATH` or a plain file path.
    pub database_url: String,
    /// SQLite's durability setting.
    pub sqlite_sync: SqliteSync,
    /// A cap on the SQLite file, in 4 KiB pages (`None`: the disk is the limit). Fault tests
    /// use it to fill "the disk" on demand.
    pub sqlite_max_pages: Option<u64>,
    /// The address users reach this server at, used in printed links (portal URL).
    pub public_url: Option<String>,
    /// Networks that webhook URLs may point into although they are private or loopback.
    pub webhook_allow_cidrs: Vec<IpNet>,
    /// When failed deliveries are tried again, and how much the delays are jittered.
    pub retry_schedule: RetrySchedule,
    /// The limit on one whole webhook exchange (connect, send, answer).
    pub attempt_timeout: Duration,
    /// How long a claimed delivery stays reserved for the process that claimed it.
    pub delivery_lease: Duration,
    /// Attempts in flight at once, over all endpoints.
    pub max_in_flight: usize,
    /// Attempts in flight at once towards one endpoint.
    pub max_in_flight_per_endpoint: usize,
    /// Sandbox: how long after sending an outgoing message turns `delivered` (`None`: by hand).
    pub sandbox_delivered_after: Option<Duration>,
    /// Sandbox: how long after sending an outgoing message turns `read` (`None`: by hand).
    pub sandbox_read_after: Option<Duration>,
    /// The largest request body the API accepts.
    pub max_body_bytes: usize,
    /// API calls a second per instance, with a burst of twice that (`None`: unlimited).
    pub api_rate_limit: Option<u32>,
    /// How long an endpoint may fail every attempt before it is disabled (`None`: never).
    /// A receiver that answers 410 Gone is disabled at once regardless.
    pub endpoint_disable_after: Option<Duration>,
    /// How long events and their attempts are kept once delivered or dead (`None`: forever).
    pub retention: Option<Duration>,
    /// Create a sandbox demo instance when the database has no instance yet.
    pub create_demo_instance: bool,
    /// Where "now" comes from.
    pub clock: Clock,
    /// Run the delivery engine and the sandbox driver in the background (tests of timing
    /// switch this off and drive them step by step).
    pub background_workers: bool,
    /// The Graph API's base URL (tests point it at a local stand-in).
    pub meta_graph_url: String,
    /// The Graph API version sends and media downloads use.
    pub meta_graph_version: String,
    /// The limit on one Graph API call.
    pub meta_request_timeout: Duration,
    /// The first wait before a send Meta throttled or could not take is tried again; each
    /// further wait doubles, up to five minutes.
    pub meta_retry_base: Duration,
    /// How long a send keeps being retried before its message is failed.
    pub meta_retry_for: Duration,
    /// Messages a second per business number (the pace of the send worker).
    pub meta_max_mps: u32,
}

impl Config {
    /// Opens the store this configuration names (applying its migrations).
    pub async fn open_store(&self) -> crate::store::StoreResult<std::sync::Arc<dyn crate::store::Store>> {
        crate::store::open(&self.database_url, self.sqlite_sync, self.sqlite_max_pages).await
    }

    /// The defaults of `botlinkd serve` with an explicit database.
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            sqlite_sync: SqliteSync::Full,
            sqlite_max_pages: None,
            public_url: None,
            webhook_allow_cidrs: Vec::new(),
            retry_schedule: RetrySchedule::default(),
            attempt_timeout: Duration::from_secs(3),
            delivery_lease: Duration::from_secs(30),
            max_in_flight: 1024,
            max_in_flight_per_endpoint: 64,
            sandbox_delivered_after: Some(Duration::from_secs(1)),
            sandbox_read_after: Some(Duration::from_secs(3)),
            max_body_bytes: 256 * 1024,
            api_rate_limit: Some(200),
            retention: Some(Duration::from_secs(30 * 24 * 3600)),
            endpoint_disable_after: Some(Duration::from_secs(5 * 24 * 3600)),
            create_demo_instance: true,
            clock: Clock::system(),
            background_workers: true,
            meta_graph_url: "https://graph.facebook.com".to_string(),
            meta_graph_version: "v24.0".to_string(),
            meta_request_timeout: Duration::from_secs(15),
            meta_retry_base: Duration::from_secs(2),
            meta_retry_for: Duration::from_secs(3600),
            meta_max_mps: 80,
        }
    }

    /// Defaults for tests: loopback receivers allowed, fast sandbox receipts, no demo instance.
    pub fn for_tests(database_url: impl Into<String>) -> Self {
        Self {
            sqlite_sync: SqliteSync::Normal,
            webhook_allow_cidrs: vec!["127.0.0.0/8".parse().expect("valid CIDR")],
            sandbox_delivered_after: Some(Duration::from_millis(50)),
            sandbox_read_after: Some(Duration::from_millis(100)),
            create_demo_instance: false,
            ..Self::new(database_url)
        }
    }

    /// The base URL printed in links, from `public_url` or the bound address.
    pub fn base_url(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{bound}"),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &crate::store::redact_url(&self.database_url))
            .field("sqlite_sync", &self.sqlite_sync)
            .field("public_url", &self.public_url)
            .field("webhook_allow_cidrs", &self.webhook_allow_cidrs)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("delivery_lease", &self.delivery_lease)
            .field("api_rate_limit", &self.api_rate_limit)
            .field("endpoint_disable_after", &self.endpoint_disable_after)
            .field("meta_graph_url", &self.meta_graph_url)
            .field("meta_graph_version", &self.meta_graph_version)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::Config;

    #[test]
    fn debug_output_hides_the_database_password() {
        let shown = format!("{:?}", Config::new("postgres://bot:s3cret@db:5432/botlinkd"));
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("postgres://***@db:5432/botlinkd"), "{shown}");
    }
}

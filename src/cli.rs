//! The `botlinkd` command line (clap): `serve`, `instance create|set-channel|list|rotate-keys`,
//! `migrate`, `listen`, `events tail`, `config default` and `healthcheck`.
//!
//! Every flag can also be set through a `BOTLINKD_…` environment variable (shown in
//! `--help`, which never shows the values of the secrets' variables) or in the configuration
//! file (see `with_config_file` below). `MetaArgs` are the `--channel` and `--meta-…` settings
//! that `instance create` and `instance set-channel` share. Keys are printed only to stdout,
//! for the operator who asked for them; logs go to stderr and never contain them. `serve`
//! prints the portal's link and the database URL redacted (`migrate` the redacted URL), and
//! cancels its shutdown token on Ctrl-C or `SIGTERM`. Logging goes through
//! `tracing-subscriber`, filtered by `BOTLINKD_LOG`, as text or as flattened JSON lines
//! (`--log-format`).
//!
//! `with_config_file` runs before clap parses anything: it finds `--config` /
//! `BOTLINKD_CONFIG`, asks `settable_flags` for the long names clap knows (the global ones and
//! `serve`'s, minus `config`, `help` and `version`), and splices the file's settings into the
//! arguments as flags (see [`crate::config_file`]): global ones after the program name,
//! `serve` ones after the subcommand when that is `serve` (dropped for other commands),
//! skipping any whose flag was given or whose `BOTLINKD_…` variable is set. Two unit tests
//! keep `default-config.toml` naming exactly the settable flags and parsing as the defaults,
//! so a new `serve` flag fails the tests until the default file documents it.
//!
//! `healthcheck` is in the binary because minimal container images have no `curl`: a `GET` of
//! `--url` with a 3 s limit, exit 0 on a 2xx. It takes the URL rather than reading `listen`
//! from the configuration, so it checks what the probe names.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::channels::meta::MetaSettings;
use crate::clock::Clock;
use crate::config::{Config, SqliteSync};
use crate::delivery::RetrySchedule;
use crate::instances::{Channel, ChannelChange, Credentials, Instance, NewInstance, sandbox_number};
use crate::listen::{Forwarder, StreamClient};
use crate::phone::PhoneNumber;
use crate::server::Server;
use crate::store;
use crate::webhooks::{EventFilter, SigningSecret};

#[derive(Parser)]
#[command(
    name = "botlinkd",
    version,
    about = "Self-hostable WhatsApp business-messaging gateway with reliable, signed webhooks"
)]
struct Cli {
    /// Where the data lives: sqlite://PATH (or a plain file path), or
    /// postgres://USER:PASSWORD@HOST/DB to run any number of processes on one database.
    #[arg(
        long,
        global = true,
        env = "BOTLINKD_DATABASE_URL",
        default_value = "sqlite://botlinkd.db"
    )]
    database_url: String,

    /// SQLite durability: `full` survives power loss, `normal` survives a killed process.
    #[arg(
        long,
        global = true,
        env = "BOTLINKD_SQLITE_SYNCHRONOUS",
        value_enum,
        default_value = "full"
    )]
    sqlite_synchronous: SqliteSync,

    /// How log lines are written: `text` or `json`.
    #[arg(long, global = true, env = "BOTLINKD_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,

    /// A TOML configuration file (`botlinkd config default` prints a commented one).
    #[arg(long, global = true, env = "BOTLINKD_CONFIG")]
    config: Option<std::path::PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (HTTP API, webhook delivery, sandbox).
    Serve(ServeArgs),
    /// Manage instances (business numbers) and their keys.
    #[command(subcommand)]
    Instance(InstanceCommand),
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Forward an instance's live events to a local URL as signed webhooks.
    Listen(ListenArgs),
    /// Print configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Check that a running server is healthy (for container probes): exit 0 if it is.
    Healthcheck {
        /// The server's health URL.
        #[arg(
            long,
            env = "BOTLINKD_HEALTHCHECK_URL",
            default_value = "http://127.0.0.1:8080/healthz"
        )]
        url: String,
    },
    /// Read an instance's events.
    #[command(subcommand)]
    Events(EventsCommand),
}

#[derive(Args)]
struct StreamArgs {
    /// The botlinkd server to follow.
    #[arg(long, env = "BOTLINKD_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// The instance's App Key.
    #[arg(long, env = "BOTLINKD_APP_KEY")]
    app_key: String,
    /// The instance's Auth Key (prefer the environment variable: flags show in `ps`).
    #[arg(long, env = "BOTLINKD_AUTH_KEY", hide_env_values = true)]
    auth_key: String,
    /// Start after this cursor instead of now (replays what came since).
    #[arg(long)]
    after: Option<String>,
}

#[derive(Args)]
struct ListenArgs {
    #[command(flatten)]
    stream: StreamArgs,
    /// Where to post each event, e.g. http://localhost:3000/webhook.
    #[arg(long)]
    forward_to: String,
    /// Only these events (message, ack.sent, ack.delivered, ack.read, ack.failed).
    #[arg(long, value_delimiter = ',')]
    events: Vec<String>,
    /// The `whsec_…` secret to sign forwarded events with (a new one is made and printed if
    /// left out).
    #[arg(long, env = "BOTLINKD_LISTEN_SECRET", hide_env_values = true)]
    secret: Option<String>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the commented default configuration file.
    Default,
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Print the instance's live events as JSON lines.
    Tail(StreamArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// The address to listen on.
    #[arg(long, env = "BOTLINKD_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The URL users reach this server at (for printed links), if not the listen address.
    #[arg(long, env = "BOTLINKD_PUBLIC_URL")]
    public_url: Option<String>,
    /// Networks webhooks may target although they are internal, e.g. 127.0.0.0/8 for local development.
    #[arg(long, env = "BOTLINKD_WEBHOOK_ALLOW_CIDRS", value_delimiter = ',')]
    webhook_allow_cidrs: Vec<IpNet>,
    /// Delays between delivery attempts; after the last the delivery is dead.
    #[arg(
        long,
        env = "BOTLINKD_RETRY_SCHEDULE",
        default_value = "5s,30s,2m,10m,30m,1h,2h,4h,8h,16h,24h"
    )]
    retry_schedule: String,
    /// How long a claimed delivery stays reserved for the process that claimed it; after a
    /// crash, another process takes it over after this long (at least 4× the attempt timeout).
    #[arg(long, env = "BOTLINKD_DELIVERY_LEASE", default_value = "30s", value_parser = humantime::parse_duration)]
    delivery_lease: Duration,
    /// The limit on one whole webhook exchange.
    #[arg(long, env = "BOTLINKD_ATTEMPT_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    attempt_timeout: Duration,
    /// Sandbox: delay before an outgoing message turns `delivered` (`off`: by hand only).
    #[arg(long, env = "BOTLINKD_SANDBOX_DELIVERED_AFTER", default_value = "1s", value_parser = optional_duration)]
    sandbox_delivered_after: OptionalDuration,
    /// Sandbox: delay before an outgoing message turns `read` (`off`: by hand only).
    #[arg(long, env = "BOTLINKD_SANDBOX_READ_AFTER", default_value = "3s", value_parser = optional_duration)]
    sandbox_read_after: OptionalDuration,
    /// The largest request body the API accepts, in bytes.
    #[arg(long, env = "BOTLINKD_MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    max_body_bytes: usize,
    /// How long events and their delivery attempts are kept once finished (`off`: forever).
    /// Conversation history is kept regardless.
    #[arg(long, env = "BOTLINKD_RETENTION", default_value = "30d", value_parser = optional_duration)]
    retention: OptionalDuration,
    /// Disable an endpoint that has failed every attempt for this long (`off`: never); a
    /// receiver answering 410 Gone is disabled at once.
    #[arg(long, env = "BOTLINKD_DISABLE_ENDPOINT_AFTER", default_value = "5d", value_parser = optional_duration)]
    disable_endpoint_after: OptionalDuration,
    /// API calls a second per instance, with a burst of twice that (`off`: unlimited); the
    /// sandbox's simulated customers do not count.
    #[arg(long, env = "BOTLINKD_API_RATE_LIMIT", default_value = "200", value_parser = optional_count)]
    api_rate_limit: OptionalCount,
    /// meta channel: the Graph API's base URL.
    #[arg(long, env = "BOTLINKD_META_GRAPH_URL", default_value = "https://graph.facebook.com")]
    meta_graph_url: String,
    /// meta channel: the Graph API version.
    #[arg(long, env = "BOTLINKD_META_GRAPH_VERSION", default_value = "v24.0")]
    meta_graph_version: String,
    /// meta channel: how long a throttled send keeps being retried before it fails.
    #[arg(long, env = "BOTLINKD_META_RETRY_FOR", default_value = "1h", value_parser = humantime::parse_duration)]
    meta_retry_for: Duration,
    /// meta channel: messages a second per business number (Meta's default throughput is 80),
    /// shared by every process on PostgreSQL.
    #[arg(long, env = "BOTLINKD_META_MAX_MPS", default_value = "80", value_parser = clap::value_parser!(u32).range(1..=10000))]
    meta_max_mps: u32,
}

#[derive(Clone, Copy)]
struct OptionalDuration(Option<Duration>);

#[derive(Clone, Copy)]
struct OptionalCount(Option<u32>);

fn optional_count(s: &str) -> Result<OptionalCount, String> {
    match s.trim() {
        "off" | "none" | "unlimited" => Ok(OptionalCount(None)),
        other => match other.parse::<u32>() {
            Ok(n) if n > 0 => Ok(OptionalCount(Some(n))),
            _ => Err("a whole number above 0, or `off`".into()),
        },
    }
}

fn optional_duration(s: &str) -> Result<OptionalDuration, String> {
    match s.trim() {
        "off" | "manual" | "never" => Ok(OptionalDuration(None)),
        other => humantime::parse_duration(other)
            .map(|d| OptionalDuration(Some(d)))
            .map_err(|e| format!("{e} (or `off`)")),
    }
}

/// The settings of the `meta` channel. The three secrets are best given through the
/// environment, so that they stay out of shell history and process lists.
#[derive(clap::Args, Debug)]
struct MetaArgs {
    /// The channel: `sandbox` (simulated customers) or `meta` (the WhatsApp Business Cloud API).
    #[arg(long, default_value = "sandbox", value_parser = ["sandbox", "meta"])]
    channel: String,
    /// meta: the Phone number ID (Meta app > WhatsApp > API Setup).
    #[arg(long, env = "BOTLINKD_META_PHONE_NUMBER_ID")]
    meta_phone_number_id: Option<String>,
    /// meta: a system-user access token with whatsapp_business_messaging.
    #[arg(long, env = "BOTLINKD_META_ACCESS_TOKEN", hide_env_values = true)]
    meta_access_token: Option<String>,
    /// meta: the app secret (App settings > Basic), which signs Meta's webhooks.
    #[arg(long, env = "BOTLINKD_META_APP_SECRET", hide_env_values = true)]
    meta_app_secret: Option<String>,
    /// meta: a verify token of your choosing, typed again into Meta's webhook settings.
    #[arg(long, env = "BOTLINKD_META_VERIFY_TOKEN", hide_env_values = true)]
    meta_verify_token: Option<String>,
    /// meta: the WhatsApp Business Account id, whose message templates are synced (optional).
    #[arg(long, env = "BOTLINKD_META_WABA_ID")]
    meta_waba_id: Option<String>,
}

impl MetaArgs {
    /// The channel and its settings.
    fn settings(&self) -> anyhow::Result<(Channel, Option<MetaSettings>)> {
        if self.channel == "sandbox" {
            return Ok((Channel::Sandbox, None));
        }
        let missing = |flag: &str| anyhow::anyhow!("the meta channel needs --{flag} (or its BOTLINKD_ variable)");
        let settings = MetaSettings::new(
            self.meta_phone_number_id
                .as_deref()
                .ok_or_else(|| missing("meta-phone-number-id"))?,
            self.meta_access_token
                .as_deref()
                .ok_or_else(|| missing("meta-access-token"))?,
            self.meta_app_secret
                .as_deref()
                .ok_or_else(|| missing("meta-app-secret"))?,
            self.meta_verify_token
                .as_deref()
                .ok_or_else(|| missing("meta-verify-token"))?,
        )
        .and_then(|s| s.with_waba_id(self.meta_waba_id.as_deref()))
        .map_err(|e| anyhow::anyhow!(e.message))?;
        Ok((Channel::Meta, Some(settings)))
    }
}

#[derive(Subcommand)]
enum InstanceCommand {
    /// Create an instance and print its keys (the Auth Key is shown only now).
    Create {
        /// A name for people.
        #[arg(long)]
        name: String,
        /// The business number (a sandbox number is made up if left out; required for meta).
        #[arg(long)]
        number: Option<String>,
        /// The channel and, for meta, its settings.
        #[command(flatten)]
        channel: MetaArgs,
        /// Print JSON: {"instance_id","app_key","auth_key"}.
        #[arg(long)]
        json: bool,
    },
    /// Switch an instance to another channel, or give it new Meta settings (for example a
    /// new access token); clears a "needs attention" flag.
    SetChannel {
        /// The instance id.
        instance_id: i64,
        /// The business number (kept when left out).
        #[arg(long)]
        number: Option<String>,
        /// The channel and, for meta, its settings.
        #[command(flatten)]
        channel: MetaArgs,
    },
    /// List instances.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace an instance's App Key and Auth Key; the old ones stop working at once.
    RotateKeys {
        /// The instance id.
        instance_id: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command line.
pub fn main() -> ExitCode {
    let args = match with_config_file(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse_from(args);
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logs go to stderr, filtered by `BOTLINKD_LOG` (default `info`, e.g. `botlinkd=debug`).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BOTLINKD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::new(cli.database_url);
    config.sqlite_sync = cli.sqlite_synchronous;
    match cli.command {
        Command::Serve(args) => serve(config, args).await,
        Command::Instance(command) => instance(config, command).await,
        Command::Listen(args) => listen(args).await,
        Command::Healthcheck { url } => healthcheck(&url).await,
        Command::Config(ConfigCommand::Default) => {
            print!("{}", crate::config_file::DEFAULT);
            Ok(())
        }
        Command::Events(EventsCommand::Tail(args)) => tail(args).await,
        Command::Migrate => {
            config.open_store().await?;
            println!("database is up to date: {}", store::redact_url(&config.database_url));
            Ok(())
        }
    }
}

async fn serve(mut config: Config, args: ServeArgs) -> anyhow::Result<()> {
    config.public_url = args.public_url;
    config.webhook_allow_cidrs = args.webhook_allow_cidrs;
    config.retry_schedule = RetrySchedule::parse(&args.retry_schedule)?;
    config.attempt_timeout = args.attempt_timeout;
    config.delivery_lease = args.delivery_lease;
    config.sandbox_delivered_after = args.sandbox_delivered_after.0;
    config.sandbox_read_after = args.sandbox_read_after.0;
    config.max_body_bytes = args.max_body_bytes;
    config.retention = args.retention.0;
    config.endpoint_disable_after = args.disable_endpoint_after.0;
    config.api_rate_limit = args.api_rate_limit.0;
    config.meta_graph_url = args.meta_graph_url;
    config.meta_graph_version = args.meta_graph_version;
    config.meta_retry_for = args.meta_retry_for;
    config.meta_max_mps = args.meta_max_mps;
    config.clock = Clock::system();

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let database = store::redact_url(&config.database_url);
    let server = Server::start(config.clone(), listener).await?;
    let base = config.base_url(server.local_addr()?);
    println!(
        "botlinkd {} listening on {base} (database: {database})",
        env!("CARGO_PKG_VERSION")
    );
    match &server.demo {
        Some(demo) => {
            println!();
            println!("A sandbox demo instance was created. Keep these keys: the Auth Key is shown only this once.");
            println!("  Instance ID: {}", demo.instance.id);
            println!("  App Key:     {}", demo.credentials.app_key);
            println!("  Auth Key:    {}", demo.credentials.auth_key.expose());
            println!("  Portal:      {base}/portal");
            println!();
        }
        None => {
            for instance in server.app().store.list_instances().await? {
                println!(
                    "  instance {} ({}, {}) App Key {}",
                    instance.id,
                    instance.name,
                    instance.channel.as_str(),
                    instance.app_key
                );
            }
            println!("  Portal: {base}/portal  (lost an Auth Key? botlinkd instance rotate-keys ID)");
        }
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    server.serve(shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = interrupt.await;
                shutdown.cancel();
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down: finishing requests and in-flight deliveries");
    shutdown.cancel();
}

async fn instance(config: Config, command: InstanceCommand) -> anyhow::Result<()> {
    let store = config.open_store().await?;
    let now = Clock::system().now_ms();
    match command {
        InstanceCommand::Create {
            name,
            number,
            channel,
            json,
        } => {
            let (channel, meta) = channel.settings()?;
            let phone_number = match number {
                Some(n) => PhoneNumber::parse(&n)?,
                None if channel == Channel::Meta => {
                    anyhow::bail!("a meta instance needs --number, its WhatsApp number")
                }
                None => sandbox_number(),
            };
            let credentials = Credentials::generate();
            let instance = store
                .create_instance(
                    NewInstance {
                        name,
                        channel,
                        phone_number,
                        credentials: credentials.clone(),
                        meta,
                    },
                    now,
                )
                .await?;
            print_keys(&instance, &credentials, json);
            if instance.meta.is_some() && !json {
                print_meta_callback(&config);
            }
        }
        InstanceCommand::List { json } => {
            let instances = store.list_instances().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&instances)?);
            } else {
                println!("{:<10} {:<10} {:<16} {:<20} APP KEY", "ID", "CHANNEL", "NUMBER", "NAME");
                for i in instances {
                    println!(
                        "{:<10} {:<10} {:<16} {:<20} {}",
                        i.id,
                        i.channel.as_str(),
                        i.phone_number,
                        i.name,
                        i.app_key
                    );
                }
            }
        }
        InstanceCommand::SetChannel {
            instance_id,
            number,
            channel,
        } => {
            let (channel, meta) = channel.settings()?;
            let current = store
                .instance_by_id(instance_id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no instance {instance_id}"))?;
            let phone_number = match number {
                Some(n) => PhoneNumber::parse(&n)?,
                None => current.phone_number,
            };
            let change = ChannelChange {
                channel,
                phone_number,
                meta,
            };
            let instance = store
                .set_channel(instance_id, change)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no instance {instance_id}"))?;
            println!(
                "Instance {} is on the {} channel (number {}).",
                instance.id,
                instance.channel.as_str(),
                instance.phone_number
            );
            if instance.meta.is_some() {
                print_meta_callback(&config);
            }
        }
        InstanceCommand::RotateKeys { instance_id, json } => {
            let credentials = Credentials::generate();
            let instance = store
                .rotate_keys(instance_id, &credentials)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no instance {instance_id}"))?;
            print_keys(&instance, &credentials, json);
        }
    }
    Ok(())
}

fn print_meta_callback(config: &Config) {
    let base = config
        .public_url
        .clone()
        .or_else(|| std::env::var("BOTLINKD_PUBLIC_URL").ok())
        .unwrap_or_else(|| "https://<this server's public address>".into());
    println!(
        "Meta webhook: callback URL {}/meta/webhook, verify token as given; subscribe to the `messages` field.",
        base.trim_end_matches('/')
    );
}

fn print_keys(instance: &Instance, credentials: &Credentials, json: bool) {
    if json {
        println!(
            "{}",
            json!({
                "instance_id": instance.id.to_string(),
                "app_key": credentials.app_key,
                "auth_key": credentials.auth_key.expose(),
                "phone_number": instance.phone_number.as_str(),
            })
        );
    } else {
        println!("Instance ID: {}", instance.id);
        println!("Number:      {}", instance.phone_number);
        println!("App Key:     {}", credentials.app_key);
        println!(
            "Auth Key:    {}  (shown only now; stored hashed)",
            credentials.auth_key.expose()
        );
    }
}

fn stop_token() -> CancellationToken {
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        token.cancel();
    });
    shutdown
}

async fn listen(args: ListenArgs) -> anyhow::Result<()> {
    let target = reqwest::Url::parse(&args.forward_to).map_err(|e| anyhow::anyhow!("--forward-to: {e}"))?;
    let filter = if args.events.is_empty() {
        EventFilter::all()
    } else {
        EventFilter::parse(&args.events)?
    };
    let secret = match &args.secret {
        Some(text) => SigningSecret::parse(text)?,
        None => {
            let secret = SigningSecret::generate();
            println!(
                "Forwarded events are signed with {} (pass --secret to keep one).",
                secret.expose()
            );
            secret
        }
    };
    let forwarder = Forwarder::new(target.clone(), secret, filter);
    let client = StreamClient::new(&args.stream.server, args.stream.app_key, args.stream.auth_key)?;
    println!("Forwarding {:?} to {target}", filter);
    client
        .follow(args.stream.after, stop_token(), |event| {
            let forwarder = &forwarder;
            async move {
                if !forwarder.wants(&event) {
                    return;
                }
                let forwarded = forwarder.forward(&event).await;
                let outcome = match forwarded.outcome {
                    Ok(status) => format!("HTTP {status}"),
                    Err(error) => format!("failed: {error}"),
                };
                println!(
                    "{}  {:<13}  {}  -> {}  {} ms",
                    event.created_at,
                    event.kind,
                    event.id,
                    outcome,
                    forwarded.latency.as_millis()
                );
            }
        })
        .await?;
    Ok(())
}

async fn tail(args: StreamArgs) -> anyhow::Result<()> {
    let client = StreamClient::new(&args.server, args.app_key, args.auth_key)?;
    client
        .follow(args.after, stop_token(), |event| async move {
            let line = json!({
                "id": event.id,
                "cursor": event.cursor,
                "type": event.kind,
                "created_at": event.created_at,
                "payload": event.payload,
            });
            println!("{line}");
        })
        .await?;
    Ok(())
}

async fn healthcheck(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .no_proxy()
        .build()?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("unhealthy: {}", e.without_url()))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("unhealthy: HTTP {status} {body}");
    }
    println!("healthy: {body}");
    Ok(())
}

/// The long names of the flags a configuration file may set, for all commands and for `serve`.
fn settable_flags() -> (Vec<String>, Vec<String>) {
    use clap::CommandFactory;
    let command = Cli::command();
    let names = |cmd: &clap::Command| -> Vec<String> {
        cmd.get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|l| !matches!(*l, "config" | "help" | "version"))
            .map(str::to_string)
            .collect()
    };
    let global = names(&command);
    let serve = command.find_subcommand("serve").map(names).unwrap_or_default();
    (global, serve)
}

/// Where the subcommand is: the first argument that is neither a global flag nor its value.
fn subcommand_position(args: &[std::ffi::OsString]) -> Option<usize> {
    const TAKES_VALUE: [&str; 4] = ["--config", "--database-url", "--sqlite-synchronous", "--log-format"];
    let mut i = 1;
    while i < args.len() {
        let arg = args[i].to_string_lossy();
        if !arg.starts_with('-') {
            return Some(i);
        }
        i += if TAKES_VALUE.contains(&arg.as_ref()) { 2 } else { 1 };
    }
    None
}

/// Inserts the settings of the configuration file (if one is named) as flags, where neither
/// a flag nor a `BOTLINKD_…` variable sets them already.
fn with_config_file(mut args: Vec<std::ffi::OsString>) -> anyhow::Result<Vec<std::ffi::OsString>> {
    let Some(path) = crate::config_file::requested(&args, std::env::var_os("BOTLINKD_CONFIG")) else {
        return Ok(args);
    };
    let (global, serve) = settable_flags();
    let known: Vec<String> = global.iter().chain(serve.iter()).cloned().collect();
    let settings = crate::config_file::flags_from_file(std::path::Path::new(&path), &known)?;
    let serving_at = subcommand_position(&args).filter(|at| args[*at] == "serve");
    let given = |flag: &str| {
        args.iter().any(|a| {
            let a = a.to_string_lossy();
            a == format!("--{flag}") || a.starts_with(&format!("--{flag}="))
        })
    };
    let mut global_flags = Vec::new();
    let mut serve_flags = Vec::new();
    for (key, flag_args) in settings {
        let flag = key.replace('_', "-");
        if given(&flag) || std::env::var_os(format!("BOTLINKD_{}", key.to_uppercase())).is_some() {
            continue;
        }
        if global.contains(&flag) {
            global_flags.extend(flag_args);
        } else if serving_at.is_some() {
            serve_flags.extend(flag_args);
        }
    }
    if let Some(at) = serving_at {
        args.splice(at + 1..at + 1, serve_flags);
    }
    args.splice(1..1, global_flags);
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_names_every_setting_and_only_those() {
        let (global, serve) = settable_flags();
        let mut known: Vec<String> = global.into_iter().chain(serve).collect();
        known.sort();
        let table: toml::Table = toml::from_str(crate::config_file::DEFAULT).unwrap();
        let mut in_file: Vec<String> = table.keys().map(|k| k.replace('_', "-")).collect();
        // `public_url` is shown commented out (it has no default).
        in_file.push("public-url".into());
        in_file.sort();
        assert_eq!(in_file, known);
    }

    #[test]
    fn the_subcommand_is_found_past_global_flags_and_not_in_values() {
        let args = |list: &[&str]| list.iter().map(Into::into).collect::<Vec<std::ffi::OsString>>();
        assert_eq!(
            subcommand_position(&args(&["botlinkd", "--config", "serve", "instance"])),
            Some(3)
        );
        assert_eq!(
            subcommand_position(&args(&["botlinkd", "instance", "create", "--name", "serve"])),
            Some(1)
        );
        assert_eq!(
            subcommand_position(&args(&["botlinkd", "--log-format=json", "serve"])),
            Some(2)
        );
    }

    #[test]
    fn the_default_file_parses_as_the_defaults() {
        let path = std::env::temp_dir().join(format!("botlinkd-default-{}.toml", std::process::id()));
        std::fs::write(&path, crate::config_file::DEFAULT).unwrap();
        let args = with_config_file(
            ["botlinkd", "--config", path.to_str().unwrap(), "serve"]
                .iter()
                .map(Into::into)
                .collect(),
        )
        .unwrap();
        std::fs::remove_file(&path).unwrap();
        let cli = Cli::try_parse_from(args).expect("the default file is a valid configuration");
        assert!(matches!(cli.command, Command::Serve(_)));
    }
}

//! `botlinkd-bench`: starts a real `botlinkd serve` (release build), a real HTTP receiver and
//! a load generator on loopback, drives customer messages through the public API, and prints
//! what it measured. Every figure is also shown as a ratio to the *null pipeline* — the same
//! generator posting the same payloads straight to the same receiver — measured in the same
//! run, because these machines are shared and noisy and only ratios compare across runs.
//!
//! ```sh
//! cargo build --release && cargo run --release -p botlinkd-bench -- --workloads w1,w2,w3,w4,w5
//! ```

mod history;
mod receiver;
mod server;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use tokio::sync::Semaphore;

use receiver::Receiver;
use server::{Server, ServerOptions};

#[derive(Parser)]
#[command(about = "Throughput, latency and backlog figures for botlinkd")]
struct Args {
    /// Which workloads to run: w1 (throughput), w2 (latency), w3 (fan-out), w4 (backlog), w5
    /// (ordering cost), w6 (history queries over a million stored events; not in the default).
    #[arg(long, value_delimiter = ',', default_value = "w1,w2,w3,w4,w5")]
    workloads: Vec<String>,
    /// Multiplies every message count (0.1 for a quick look).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// The botlinkd binary to run.
    #[arg(long, default_value = "target/release/botlinkd")]
    binary: PathBuf,
    /// Run on PostgreSQL instead of SQLite: a database URL whose database is dropped and
    /// recreated for each workload (e.g. postgres://postgres@127.0.0.1:5432/botlinkd_bench).
    #[arg(long)]
    postgres: Option<String>,
    /// SQLite durability: full or normal.
    #[arg(long, default_value = "full")]
    sqlite_synchronous: String,
    /// With --postgres: how many `serve` processes share the database; the generator spreads
    /// its requests over them in turn.
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// With --processes above 1: SIGKILL one process once a third of W1's messages are in, and
    /// check that every message still arrives (duplicates keep their webhook-id).
    #[arg(long)]
    kill_one: bool,
    /// W1's requests in flight at once, over all processes (the target figures are for 64;
    /// other values show how batch size moves throughput and CPU per event).
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
}

struct Bench {
    args: Args,
    http: reqwest::Client,
    receiver: Receiver,
}

/// One message to send: (customer, text).
type Message = (String, String);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    anyhow::ensure!(
        args.binary.exists(),
        "{} is missing: run `cargo build --release` first",
        args.binary.display()
    );
    // The server runs in a folder of its own, so the path must not be relative.
    args.binary = args.binary.canonicalize()?;
    anyhow::ensure!(
        args.processes == 1 || args.postgres.is_some(),
        "--processes needs --postgres: SQLite is served by one process"
    );
    anyhow::ensure!(
        !args.kill_one || args.processes > 1,
        "--kill-one needs --processes 2 or more"
    );
    anyhow::ensure!(args.in_flight > 0, "--in-flight must be at least 1");
    let bench = Bench {
        http: reqwest::Client::builder().pool_max_idle_per_host(256).build()?,
        receiver: Receiver::start()?,
        args,
    };
    let storage = match &bench.args.postgres {
        Some(_) => format!("PostgreSQL, {} process(es)", bench.args.processes),
        None => format!("SQLite synchronous={}", bench.args.sqlite_synchronous.to_uppercase()),
    };
    println!("botlinkd-bench: storage {storage}, scale {}", bench.args.scale);
    for workload in bench.args.workloads.clone() {
        // The machine's limit is measured again just before each workload: on a shared
        // machine it drifts within minutes, and a ratio is only fair against its neighbour.
        let null_rps = bench.null_pipeline(bench.count(20_000)).await?;
        println!(
            "{:<44} {:>12.0} requests/s (1.00)",
            "null pipeline: generator -> receiver", null_rps
        );
        match workload.as_str() {
            "w1" => bench.w1(null_rps).await?,
            "w2" => bench.w2().await?,
            "w3" => bench.w3(null_rps).await?,
            "w4" => bench.w4(null_rps).await?,
            "w5" => bench.w5().await?,
            "w6" => bench.w6().await?,
            other => anyhow::bail!("unknown workload {other}"),
        }
    }
    Ok(())
}

impl Bench {
    fn count(&self, n: usize) -> usize {
        ((n as f64) * self.args.scale).max(1.0) as usize
    }

    async fn server(&self) -> anyhow::Result<Server> {
        if let Some(url) = &self.args.postgres {
            recreate_database(url).await?;
        }
        self.receiver.reset();
        let options = ServerOptions {
            binary: self.args.binary.clone(),
            database_url: self.args.postgres.clone(),
            sqlite_synchronous: self.args.sqlite_synchronous.clone(),
            join: false,
        };
        let mut server = Server::start(&options).await?;
        server.add_processes(&options, self.args.processes).await?;
        Ok(server)
    }

    /// CPU seconds used so far by botlinkd, and by PostgreSQL when the bench runs on it.
    fn cpu_seconds(&self, server: &Server) -> (f64, f64) {
        let database = if self.args.postgres.is_some() {
            server::postgres_cpu_seconds()
        } else {
            0.0
        };
        (server.cpu_seconds(), database)
    }

    async fn webhook(&self, server: &Server, enabled: bool) -> anyhow::Result<String> {
        let created: serde_json::Value = self
            .http
            .post(format!("{}/v1/webhooks", server.base))
            .basic_auth(&server.app_key, Some(&server.auth_key))
            .json(&json!({"url": self.receiver.url, "events": ["message"], "enabled": enabled}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(created["id"].as_str().unwrap_or_default().to_string())
    }

    /// Posts every message through the API with at most `in_flight` at once (or paced one
    /// every `pace`); returns (message id, when its request started) and the wall time.
    async fn drive(
        &self,
        server: &Server,
        messages: Vec<Message>,
        in_flight: usize,
        pace: Option<Duration>,
    ) -> anyhow::Result<(Vec<(String, Instant)>, Duration)> {
        let permits = Arc::new(Semaphore::new(in_flight));
        let bases = server.bases();
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(messages.len());
        for (i, (from, body)) in messages.into_iter().enumerate() {
            if let Some(pace) = pace {
                tokio::time::sleep_until((started + pace * i as u32).into()).await;
            }
            let permit = permits.clone().acquire_owned().await?;
            // A process that does not answer (killed) is skipped: the client tries the next.
            let (http, bases, keys) = (
                self.http.clone(),
                bases.clone(),
                (server.app_key.clone(), server.auth_key.clone()),
            );
            let body = json!({"from": from, "body": body});
            tasks.push(tokio::spawn(async move {
                let sent = Instant::now();
                let mut tries = 0;
                let answer: serde_json::Value = loop {
                    let base = &bases[(i + tries) % bases.len()];
                    let request = http
                        .post(format!("{base}/v1/sandbox/inbound"))
                        .basic_auth(&keys.0, Some(&keys.1))
                        .json(&body);
                    match request.send().await.and_then(|r| r.error_for_status()) {
                        Ok(response) => break response.json().await?,
                        Err(error) if tries + 1 >= bases.len() => return Err(error.into()),
                        Err(_) => tries += 1,
                    }
                };
                drop(permit);
                anyhow::Ok((answer["message_id"].as_str().unwrap_or_default().to_string(), sent))
            }));
        }
        let mut sent = Vec::with_capacity(tasks.len());
        for task in tasks {
            sent.push(task.await??);
        }
        Ok((sent, started.elapsed()))
    }

    /// The same generator posting a typical webhook body straight to the receiver.
    async fn null_pipeline(&self, n: usize) -> anyhow::Result<f64> {
        let permits = Arc::new(Semaphore::new(64));
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let permit = permits.clone().acquire_owned().await?;
            let body = json!({"event": "message", "instance_id": "10001", "data": {"from": "447000000001",
                "to": "15550100001", "type": "text", "body": "Hello, where is my order?",
                "message_id": format!("wamid.null{i}"), "timestamp": 1_700_000_000}});
            let request = self.http.post(&self.receiver.url).json(&body);
            tasks.push(tokio::spawn(async move {
                let result = request.send().await;
                drop(permit);
                result.map(|_| ())
            }));
        }
        for task in tasks {
            task.await??;
        }
        let rps = n as f64 / started.elapsed().as_secs_f64();
        self.receiver.reset();
        Ok(rps)
    }

    async fn w1(&self, null_rps: f64) -> anyhow::Result<()> {
        let n = self.count(20_000);
        let server = self.server().await?;
        self.webhook(&server, true).await?;
        let several = self.args.processes > 1;
        self.receiver
            .seen
            .check_webhook_ids
            .store(several, std::sync::atomic::Ordering::SeqCst);
        let victim = if self.args.kill_one {
            Some(self.kill_later(&server, n / 3)?)
        } else {
            None
        };
        let (cpu, database_cpu) = self.cpu_seconds(&server);
        let in_flight = self.args.in_flight;
        let (sent, took) = self.drive(&server, conversations(n, 1000), in_flight, None).await?;
        let last = self.receiver.wait_for(n, Duration::from_secs(600)).await?;
        let first = sent.iter().map(|(_, at)| *at).min().unwrap_or_else(Instant::now);
        let delivered_rps = n as f64 / (last - first).as_secs_f64();
        let (p50, p99, _) = self.latencies(&sent);
        let (cpu_after, database_cpu_after) = self.cpu_seconds(&server);
        let cpu_ms = (cpu_after - cpu) * 1000.0 / n as f64;
        let database_cpu_ms = (database_cpu_after - database_cpu) * 1000.0 / n as f64;
        if let Some(victim) = victim {
            victim.await??;
        }
        if several {
            self.check_delivery(&server, &sent).await?;
        }
        println!(
            "{:<44} {:>12.0} accepted/s",
            format!("W1 throughput ({n} messages, {in_flight} in flight)"),
            n as f64 / took.as_secs_f64()
        );
        println!(
            "{:<44} {:>12.0} delivered/s ({:.2} of null)",
            "",
            delivered_rps,
            delivered_rps / null_rps
        );
        println!("{:<44} {:>12} p50 {:.1} ms, p99 {:.1} ms end to end", "", "", p50, p99);
        println!(
            "{:<44} {:>12.3} CPU-ms per event, peak RSS {:.0} MB",
            "",
            cpu_ms,
            server.peak_rss_mb()
        );
        if self.args.postgres.is_some() {
            println!(
                "{:<44} {:>12.3} CPU-ms per event in PostgreSQL; {:.3} in all",
                "",
                database_cpu_ms,
                cpu_ms + database_cpu_ms
            );
        }
        Ok(())
    }

    /// SIGKILLs the last process once `after` messages have arrived at the receiver.
    fn kill_later(&self, server: &Server, after: usize) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
        let pid = server
            .others
            .last()
            .and_then(|o| o.child.id())
            .ok_or_else(|| anyhow::anyhow!("no process to kill"))?;
        let seen = self.receiver.seen.clone();
        Ok(tokio::spawn(async move {
            while seen.arrivals.lock().expect("lock").len() < after {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let status = tokio::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .await?;
            anyhow::ensure!(status.success(), "kill -9 {pid} failed");
            println!(
                "{:<44} {:>12} killed process {pid} (SIGKILL) after {after} deliveries",
                "", ""
            );
            Ok(())
        }))
    }

    /// With several processes: every accepted message arrives, each conversation's messages
    /// first arrive in the feed's order, and a repeated delivery keeps its webhook-id.
    async fn check_delivery(&self, server: &Server, sent: &[(String, Instant)]) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        let lost = loop {
            let lost = {
                let arrivals = self.receiver.seen.arrivals.lock().expect("lock");
                sent.iter().filter(|(id, _)| !arrivals.contains_key(id)).count()
            };
            if lost == 0 || Instant::now() > deadline {
                break lost;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut feed: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
        let mut after = "0".to_string();
        loop {
            let page: serde_json::Value = self
                .http
                .get(format!("{}/v1/events?after={after}&limit=1000", server.base))
                .basic_auth(&server.app_key, Some(&server.auth_key))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let events = page["events"].as_array().cloned().unwrap_or_default();
            if events.is_empty() {
                break;
            }
            for event in &events {
                let data = &event["payload"]["data"];
                let (from, id) = (data["from"].as_str(), data["message_id"].as_str());
                if let (Some(from), Some(id)) = (from, id) {
                    feed.entry(from.to_string()).or_default().push(id.to_string());
                }
            }
            after = page["next"].as_str().unwrap_or_default().to_string();
        }
        let arrivals = self.receiver.seen.arrivals.lock().expect("lock");
        let out_of_order = feed
            .values()
            .filter(|ids| {
                let times: Vec<Option<&Instant>> = ids.iter().map(|id| arrivals.get(id)).collect();
                times.windows(2).any(|pair| pair[0] > pair[1])
            })
            .count();
        let seen = &self.receiver.seen;
        let duplicates = seen.duplicates.load(std::sync::atomic::Ordering::SeqCst);
        let changed = seen.changed_webhook_ids.load(std::sync::atomic::Ordering::SeqCst);
        println!(
            "{:<44} {:>12} {lost} accepted messages lost, {out_of_order} of {} conversations out of order, \
             {duplicates} duplicates, {changed} with another webhook-id",
            "",
            "",
            feed.len()
        );
        anyhow::ensure!(
            lost == 0 && out_of_order == 0 && changed == 0,
            "messages lost, out of order, or repeated with another webhook-id"
        );
        Ok(())
    }

    async fn w2(&self) -> anyhow::Result<()> {
        let n = self.count(1_000);
        let server = self.server().await?;
        self.webhook(&server, true).await?;
        let (sent, _) = self
            .drive(&server, conversations(n, 100), 64, Some(Duration::from_millis(5)))
            .await?;
        self.receiver.wait_for(n, Duration::from_secs(120)).await?;
        let (p50, p99, max) = self.latencies(&sent);
        println!(
            "{:<44} {:>12} p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms; peak RSS {:.0} MB",
            format!("W2 latency ({n} messages at 200/s)"),
            "",
            p50,
            p99,
            max,
            server.peak_rss_mb()
        );
        Ok(())
    }

    async fn w3(&self, null_rps: f64) -> anyhow::Result<()> {
        let n = self.count(1_000);
        let server = self.server().await?;
        for _ in 0..50 {
            self.webhook(&server, true).await?;
        }
        let cpu = server.cpu_seconds();
        let started = Instant::now();
        self.drive(&server, conversations(n, 100), 64, None).await?;
        // Each message reaches the receiver 50 times (once per endpoint).
        let deadline = Instant::now() + Duration::from_secs(600);
        while self.receiver.seen.requests.load(std::sync::atomic::Ordering::SeqCst) < n * 50 {
            anyhow::ensure!(Instant::now() < deadline, "W3 did not finish");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rate = (n * 50) as f64 / started.elapsed().as_secs_f64();
        let cpu_ms = (server.cpu_seconds() - cpu) * 1000.0 / (n * 50) as f64;
        println!(
            "{:<44} {:>12.0} delivered/s ({:.2} of null), {:.3} CPU-ms per delivery, peak RSS {:.0} MB",
            format!("W3 fan-out (50 endpoints, {n} messages)"),
            rate,
            rate / null_rps,
            cpu_ms,
            server.peak_rss_mb()
        );
        Ok(())
    }

    async fn w4(&self, null_rps: f64) -> anyhow::Result<()> {
        let n = self.count(200_000);
        let server = self.server().await?;
        // The receiver is "down": the endpoint is paused, so every delivery waits in the store.
        let endpoint = self.webhook(&server, false).await?;
        self.drive(&server, conversations(n, 10_000), 64, None).await?;
        let rss_backlog = server.peak_rss_mb();
        let bytes_per_event = server.disk_bytes() as f64 / n as f64;
        let started = Instant::now();
        self.http
            .patch(format!("{}/v1/webhooks/{endpoint}", server.base))
            .basic_auth(&server.app_key, Some(&server.auth_key))
            .json(&json!({"enabled": true}))
            .send()
            .await?
            .error_for_status()?;
        self.receiver.wait_for(n, Duration::from_secs(1800)).await?;
        let drain = n as f64 / started.elapsed().as_secs_f64();
        println!(
            "{:<44} {:>12.0} drained/s ({:.2} of null), peak RSS {:.0} MB with the backlog, {:.0} bytes on disk per event{}",
            format!("W4 backlog ({n} messages queued, then up)"),
            drain,
            drain / null_rps,
            rss_backlog,
            bytes_per_event,
            if self.args.postgres.is_some() {
                " (n/a: PostgreSQL)"
            } else {
                ""
            }
        );
        Ok(())
    }

    /// Runs 10,000 conversations and one conversation in turn, twice (ABAB), so that a slow
    /// spell of the machine falls on both sides; the cost is taken from the two sums.
    async fn w5(&self) -> anyhow::Result<()> {
        let n = self.count(10_000);
        let (mut many, mut one) = (Vec::new(), Vec::new());
        for _round in 0..2 {
            for spread in [10_000, 1] {
                let server = self.server().await?;
                self.webhook(&server, true).await?;
                let started = Instant::now();
                self.drive(&server, conversations(n, spread), 64, None).await?;
                self.receiver.wait_for(n, Duration::from_secs(1800)).await?;
                let rate = n as f64 / started.elapsed().as_secs_f64();
                if spread == 1 { one.push(rate) } else { many.push(rate) }
            }
        }
        let mean = |rates: &[f64]| rates.iter().sum::<f64>() / rates.len() as f64;
        let shown = |rates: &[f64]| {
            rates
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(" and ")
        };
        println!(
            "{:<44} {:>12.0} delivered/s over 10,000 conversations ({}), {:.0} over 1 ({}): {:.0} % cost of ordering",
            format!("W5 ordering ({n} messages, twice each)"),
            mean(&many),
            shown(&many),
            mean(&one),
            shown(&one),
            (1.0 - mean(&one) / mean(&many)) * 100.0
        );
        Ok(())
    }

    /// End-to-end latencies in ms: (p50, p99, max).
    fn latencies(&self, sent: &[(String, Instant)]) -> (f64, f64, f64) {
        let arrivals = self.receiver.seen.arrivals.lock().expect("lock");
        let mut ms: Vec<f64> = sent
            .iter()
            .filter_map(|(id, at)| arrivals.get(id).map(|arrived| (*arrived - *at).as_secs_f64() * 1000.0))
            .collect();
        ms.sort_by(|a, b| a.total_cmp(b));
        let pick = |q: f64| {
            ms.get(((ms.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(0.0)
        };
        (pick(0.5), pick(0.99), ms.last().copied().unwrap_or(0.0))
    }
}

/// `n` messages spread round-robin over `spread` customers.
fn conversations(n: usize, spread: usize) -> Vec<Message> {
    (0..n)
        .map(|i| (format!("44770{:07}", i % spread), format!("message {i}")))
        .collect()
}

/// Drops and recreates the PostgreSQL database a URL names, through the `postgres` database.
async fn recreate_database(url: &str) -> anyhow::Result<()> {
    let (url, options) = url.split_once('?').unwrap_or((url, ""));
    let (base, name) = url
        .rsplit_once('/')
        .ok_or_else(|| anyhow::anyhow!("a database URL with a name"))?;
    let admin = match options {
        "" => format!("{base}/postgres"),
        options => format!("{base}/postgres?{options}"),
    };
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        let status = tokio::process::Command::new("psql")
            .args([&admin, "-qc", &sql])
            .status()
            .await?;
        anyhow::ensure!(status.success(), "psql failed: {sql}");
    }
    Ok(())
}

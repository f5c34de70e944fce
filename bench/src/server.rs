//! Starts a real `botlinkd serve` (the release binary) on a fresh database and reads its
//! banner; reads its CPU time and peak memory from /proc.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running server.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub app_key: String,
    pub auth_key: String,
    pub dir: PathBuf,
    /// More processes on the same database (PostgreSQL), sharing the load.
    pub others: Vec<Server>,
}

/// How to start one.
#[derive(Clone)]
pub struct ServerOptions {
    pub binary: PathBuf,
    pub database_url: Option<String>,
    pub sqlite_synchronous: String,
    /// Joins a database another process set up (no demo instance, no keys in the banner).
    pub join: bool,
}

impl Server {
    /// Starts a server in a new temporary folder.
    pub async fn start(options: &ServerOptions) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("botlinkd-bench-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&dir)?;
        let mut command = Command::new(&options.binary);
        command
            .current_dir(&dir)
            .kill_on_drop(true)
            .env("BOTLINKD_LOG", "warn")
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--webhook-allow-cidrs",
                "127.0.0.0/8",
            ])
            .args(["--sandbox-delivered-after", "off", "--sandbox-read-after", "off"])
            .args(["--sqlite-synchronous", &options.sqlite_synchronous])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(url) = &options.database_url {
            command.args(["--database-url", url]);
        }
        let mut child = command.spawn()?;
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut banner = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                let done = line.contains("Portal");
                banner.push(line);
                if done {
                    break;
                }
            }
            anyhow::Ok(())
        })
        .await??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let value = |label: &str| {
            banner
                .iter()
                .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_string()))
                .ok_or_else(|| anyhow::anyhow!("no `{label}` in the banner (use a fresh database): {banner:?}"))
        };
        let base = banner[0]
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_default()
            .to_string();
        // A process joining a database that has its instance already prints no keys.
        let (app_key, auth_key) = if options.join {
            (String::new(), String::new())
        } else {
            (value("App Key:")?, value("Auth Key:")?)
        };
        Ok(Self {
            app_key,
            auth_key,
            base,
            child,
            dir,
            others: Vec::new(),
        })
    }

    /// Starts `n - 1` more processes on the same (PostgreSQL) database beside this one.
    pub async fn add_processes(&mut self, options: &ServerOptions, n: usize) -> anyhow::Result<()> {
        let joining = ServerOptions {
            join: true,
            ..options.clone()
        };
        for _ in 1..n {
            self.others.push(Server::start(&joining).await?);
        }
        Ok(())
    }

    /// The base URL of every process, this one first.
    pub fn bases(&self) -> Vec<String> {
        std::iter::once(self.base.clone())
            .chain(self.others.iter().map(|o| o.base.clone()))
            .collect()
    }

    /// CPU seconds used so far (user + system), by every process.
    pub fn cpu_seconds(&self) -> f64 {
        self.child.id().map_or(0.0, cpu_seconds_of) + self.others.iter().map(Server::cpu_seconds).sum::<f64>()
    }

    /// Peak resident memory so far, in MB (of the largest process).
    pub fn peak_rss_mb(&self) -> f64 {
        let Some(pid) = self.child.id() else { return 0.0 };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let own = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0);
        self.others.iter().map(Server::peak_rss_mb).fold(own, f64::max)
    }

    /// Bytes the SQLite files take on disk.
    pub fn disk_bytes(&self) -> u64 {
        ["botlinkd.db", "botlinkd.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(self.dir.join(f)).ok())
            .map(|m| m.len())
            .sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// CPU seconds (user + system) a process has used, from /proc.
pub fn cpu_seconds_of(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// CPU seconds used so far by every PostgreSQL server process on this machine (its backends,
/// WAL writer, checkpointer, …): with `--postgres`, the database's share of the work.
pub fn postgres_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "postgres"))
        .map(cpu_seconds_of)
        .sum()
}

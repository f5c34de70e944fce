//! The real binary as a user runs it: `botlinkd serve` with no configuration, the instance
//! commands, and `kill -9` in the middle of a stream of messages.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::harness::{PATIENCE, Receiver, expect_every_message_in_order};

const BINARY: &str = env!("CARGO_BIN_EXE_botlinkd");

pub(crate) fn botlinkd(dir: &Path) -> Command {
    let mut command = Command::new(BINARY);
    command.current_dir(dir).kill_on_drop(true).env("BOTLINKD_LOG", "warn");
    for (key, _) in std::env::vars() {
        if key.starts_with("BOTLINKD_") {
            command.env_remove(key);
        }
    }
    command
}

/// A served process and what it printed before it was ready.
pub(crate) struct Served {
    pub child: Child,
    pub base: String,
    pub banner: Vec<String>,
}

pub(crate) async fn serve(dir: &Path, extra: &[&str]) -> Served {
    let mut command = botlinkd(dir);
    command.stderr(Stdio::inherit());
    serve_command(command, extra).await
}

/// Runs `serve` from a prepared command (its own environment, its own stderr).
pub(crate) async fn serve_command(mut command: Command, extra: &[&str]) -> Served {
    let mut child = command
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("botlinkd starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let done = line.contains("Portal");
            banner.push(line);
            if done {
                break;
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the server printed its banner");
    let base = banner[0]
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("listening URL")
        .to_string();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Served { child, base, banner }
}

fn banner_value(banner: &[String], label: &str) -> String {
    banner
        .iter()
        .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("`{label}` in {banner:?}"))
}

#[tokio::test]
async fn serve_needs_no_configuration_and_a_restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = serve(dir.path(), &[]).await;
    assert!(
        dir.path().join("botlinkd.db").exists(),
        "the SQLite file is created in the working directory"
    );
    let instance_id = banner_value(&first.banner, "Instance ID:");
    let app_key = banner_value(&first.banner, "App Key:");
    let auth_key = banner_value(&first.banner, "Auth Key:");
    assert!(banner_value(&first.banner, "Portal:").ends_with("/portal"));
    assert!(instance_id.parse::<u64>().is_ok());

    let client = reqwest::Client::new();
    let created = client
        .post(format!("{}/v1/webhooks", first.base))
        .basic_auth(&app_key, Some(&auth_key))
        .json(&json!({"url": "https://93.184.215.14/hook"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let wrote = client
        .post(format!("{}/v1/sandbox/inbound", first.base))
        .basic_auth(&app_key, Some(&auth_key))
        .json(&json!({"from": "447123456789", "body": "a question"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrote.status(), 201);
    let sent = client
        .post(format!("{}/v1/messages", first.base))
        .basic_auth(&app_key, Some(&auth_key))
        .json(&json!({"to": "447123456789", "body": "kept across restarts"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    first.child.kill().await.unwrap();

    let second = serve(dir.path(), &[]).await;
    assert!(
        !second.banner.iter().any(|l| l.contains("Auth Key:")),
        "no second demo instance: {:?}",
        second.banner
    );
    assert!(
        second
            .banner
            .iter()
            .any(|l| l.contains(&format!("instance {instance_id}"))),
        "{:?}",
        second.banner
    );
    let hooks: Value = client
        .get(format!("{}/v1/webhooks", second.base))
        .basic_auth(&app_key, Some(&auth_key))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(hooks["webhooks"][0]["url"], "https://93.184.215.14/hook");
    let history: Value = client
        .get(format!("{}/v1/conversations/447123456789/messages", second.base))
        .basic_auth(&app_key, Some(&auth_key))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(history["messages"][0]["body"], "kept across restarts");

    // A stream opened without a cursor starts from now, not from the first event ever.
    let mut stream = client
        .get(format!("{}/v1/stream", second.base))
        .basic_auth(&app_key, Some(&auth_key))
        .send()
        .await
        .unwrap();
    let first_item = String::from_utf8(stream.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    assert!(first_item.starts_with("event: ready"), "{first_item}");
    assert!(!first_item.contains("\"cursor\":\"0\""), "{first_item}");

    // The container probe.
    let healthy = cli(
        dir.path(),
        &["healthcheck", "--url", &format!("{}/healthz", second.base)],
    )
    .await;
    assert!(healthy.starts_with("healthy"), "{healthy}");
    let down = botlinkd(dir.path())
        .args(["healthcheck", "--url", "http://127.0.0.1:9/healthz"])
        .output()
        .await
        .unwrap();
    assert!(!down.status.success());

    // SQLite is served by one process at a time.
    let refused = botlinkd(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("already using"),
        "{refused:?}"
    );
}

pub(crate) async fn cli(dir: &Path, args: &[&str]) -> String {
    let output = botlinkd(dir).args(args).output().await.unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn instances_are_created_listed_and_rotated_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let created: Value =
        serde_json::from_str(&cli(dir.path(), &["instance", "create", "--name", "shop", "--json"]).await).unwrap();
    let id = created["instance_id"].as_str().unwrap().to_string();
    let app_key = created["app_key"].as_str().unwrap().to_string();
    let auth_key = created["auth_key"].as_str().unwrap().to_string();
    assert!(app_key.len() >= 32 && auth_key.len() >= 32);

    let listed: Value = serde_json::from_str(&cli(dir.path(), &["instance", "list", "--json"]).await).unwrap();
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["name"], "shop");
    assert_eq!(listed[0]["channel"], "sandbox");
    assert!(listed[0].get("auth_key").is_none());
    assert!(cli(dir.path(), &["instance", "list"]).await.contains("shop"));

    // The database and its write-ahead log hold every byte that was written.
    let mut database = std::fs::read(dir.path().join("botlinkd.db")).unwrap();
    database.extend(std::fs::read(dir.path().join("botlinkd.db-wal")).unwrap_or_default());
    let contains = |needle: &str| database.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(contains(&app_key), "the App Key is stored as is");
    assert!(!contains(&auth_key), "the Auth Key is stored only hashed");

    let served = serve(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    let status_with = |app: String, auth: String| {
        let request = client
            .get(format!("{}/v1/webhooks", served.base))
            .basic_auth(app, Some(auth));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status_with(app_key.clone(), auth_key.clone()).await, 200);
    let rotated: Value =
        serde_json::from_str(&cli(dir.path(), &["instance", "rotate-keys", &id, "--json"]).await).unwrap();
    assert_eq!(rotated["instance_id"], id.as_str());
    assert_eq!(
        status_with(app_key, auth_key).await,
        401,
        "old keys stop working at once"
    );
    assert_eq!(
        status_with(
            rotated["app_key"].as_str().unwrap().into(),
            rotated["auth_key"].as_str().unwrap().into()
        )
        .await,
        200
    );
}

/// Posts customer messages until told to stop; returns the ids the server accepted, per
/// customer, in the order it accepted them.
async fn stream_messages(
    base: String,
    app_key: String,
    auth_key: String,
    from: usize,
    count: usize,
) -> Vec<(String, String)> {
    let client = reqwest::Client::new();
    let mut accepted = Vec::new();
    for i in from..from + count {
        let customer = format!("4477000000{:02}", i % 5);
        let response = client
            .post(format!("{base}/v1/sandbox/inbound"))
            .basic_auth(&app_key, Some(&auth_key))
            .json(&json!({"from": customer, "body": format!("message {i}")}))
            .send()
            .await;
        match response {
            Ok(r) if r.status() == 201 => {
                let body: Value = r.json().await.unwrap();
                accepted.push((customer, body["message_id"].as_str().unwrap().to_string()));
            }
            // The server was killed under us: whatever was not answered may or may not be
            // stored (at least once allows either); stop streaming to this process.
            _ => break,
        }
    }
    accepted
}

#[tokio::test]
async fn kill_9_mid_stream_loses_nothing_and_keeps_order() {
    let dir = tempfile::tempdir().unwrap();
    let created: Value =
        serde_json::from_str(&cli(dir.path(), &["instance", "create", "--name", "crash", "--json"]).await).unwrap();
    let app_key = created["app_key"].as_str().unwrap().to_string();
    let auth_key = created["auth_key"].as_str().unwrap().to_string();
    // The receiver is slow enough that a backlog builds up while the stream runs.
    let receiver = Receiver::start_with(std::sync::Arc::new(|_, _| {
        (axum::http::StatusCode::OK, Duration::from_millis(2))
    }))
    .await;
    let args = [
        "--webhook-allow-cidrs",
        "127.0.0.0/8",
        "--retry-schedule",
        "100ms,100ms,100ms,100ms,100ms",
    ];

    let mut accepted: Vec<(String, String)> = Vec::new();
    let mut created_hook = false;
    for round in 0..3 {
        let mut served = serve(dir.path(), &args).await;
        let client = reqwest::Client::new();
        if !created_hook {
            let hook = client
                .post(format!("{}/v1/webhooks", served.base))
                .basic_auth(&app_key, Some(&auth_key))
                .json(&json!({"url": receiver.url, "events": ["message"]}))
                .send()
                .await
                .unwrap();
            assert_eq!(hook.status(), 201);
            created_hook = true;
        }
        let stream = tokio::spawn(stream_messages(
            served.base.clone(),
            app_key.clone(),
            auth_key.clone(),
            round * 1000,
            1000,
        ));
        if round < 2 {
            // Kill it once a good part of the stream is in, with deliveries still running.
            while receiver.count() < (round + 1) * 60 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            served.child.start_kill().unwrap();
            served.child.wait().await.unwrap();
        }
        accepted.extend(stream.await.unwrap());
        if round == 2 {
            // Let the last process deliver everything, then check.
            let (delivered, duplicates) = expect_every_message_in_order(&receiver, &accepted).await;
            assert!(
                accepted.len() > 1000,
                "the stream ran across the kills ({} accepted)",
                accepted.len()
            );
            eprintln!(
                "fault report | kill -9 twice during a stream, restarted each time | sent {} | delivered {} | dead 0 \
                 | duplicates {duplicates} | attempts {}",
                accepted.len(),
                delivered,
                receiver.count()
            );
        }
    }
}

#[tokio::test]
async fn a_config_file_sets_what_flags_would_and_config_default_prints_one() {
    let dir = tempfile::tempdir().unwrap();
    let default = cli(dir.path(), &["config", "default"]).await;
    assert!(default.contains("retry_schedule = \"5s,30s,2m,10m,30m,1h,2h,4h,8h,16h,24h\""));
    std::fs::write(
        dir.path().join("botlinkd.toml"),
        "database_url = \"sqlite://from-config.db\"\nwebhook_allow_cidrs = [\"127.0.0.0/8\"]\n",
    )
    .unwrap();
    let served = serve(dir.path(), &["--config", "botlinkd.toml"]).await;
    assert!(
        dir.path().join("from-config.db").exists(),
        "database_url came from the file"
    );
    let app_key = banner_value(&served.banner, "App Key:");
    let auth_key = banner_value(&served.banner, "Auth Key:");
    let created = reqwest::Client::new()
        .post(format!("{}/v1/webhooks", served.base))
        .basic_auth(&app_key, Some(&auth_key))
        .json(&json!({"url": "http://127.0.0.1:9/hook"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "the file allowed loopback webhooks");

    std::fs::write(dir.path().join("bad.toml"), "lisen = \"x\"\n").unwrap();
    let refused = botlinkd(dir.path())
        .args(["--config", "bad.toml", "serve"])
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown setting `lisen`"));
}

#[tokio::test]
async fn sigterm_stops_the_server_gracefully_with_a_stream_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = serve(dir.path(), &[]).await;
    let app_key = banner_value(&served.banner, "App Key:");
    let auth_key = banner_value(&served.banner, "Auth Key:");
    // A watcher that would hold a careless shutdown open for ever.
    let mut stream = reqwest::Client::new()
        .get(format!("{}/v1/stream", served.base))
        .basic_auth(&app_key, Some(&auth_key))
        .send()
        .await
        .unwrap();
    stream.chunk().await.unwrap();
    let pid = served.child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(PATIENCE, served.child.wait())
        .await
        .expect("it stopped in time")
        .unwrap();
    assert!(status.success(), "a clean exit: {status:?}");
}

//! `botlinkd listen` forwards live events to a local URL as signed webhooks, and
//! `botlinkd events tail` prints them.

use std::process::Stdio;

use botlinkd::webhooks::SigningSecret;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::harness::{PATIENCE, Receiver, TestApp, verify_signature};

fn botlinkd(app: &TestApp) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_botlinkd"));
    command
        .kill_on_drop(true)
        .env("BOTLINKD_SERVER", &app.base)
        .env("BOTLINKD_APP_KEY", &app.keys.app_key)
        .env("BOTLINKD_AUTH_KEY", &app.keys.auth_key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Waits until the child prints a line containing `needle` on stdout; returns it.
async fn line_with(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>, needle: &str) -> String {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let line = lines.next_line().await.unwrap().expect("the command keeps running");
            if line.contains(needle) {
                return line;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no line with {needle:?}"))
}

/// Waits until the child reports on stderr that it is connected.
async fn connected(child: &mut tokio::process::Child) {
    let mut errors = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::time::timeout(PATIENCE, async {
        while let Some(line) = errors.next_line().await.unwrap() {
            if line.starts_with("connected to") {
                return;
            }
        }
    })
    .await
    .expect("the command connected");
    tokio::spawn(async move { while let Ok(Some(_)) = errors.next_line().await {} });
}

#[tokio::test]
async fn listen_forwards_signed_events_with_a_filter() {
    let app = TestApp::spawn_with(|c| {
        c.sandbox_delivered_after = None;
        c.sandbox_read_after = None;
    })
    .await;
    let local = Receiver::start().await;
    let secret = SigningSecret::generate();
    let mut child = botlinkd(&app)
        .args(["listen", "--forward-to", &local.url, "--events", "message,ack.read"])
        .env("BOTLINKD_LISTEN_SECRET", secret.expose())
        .spawn()
        .unwrap();
    connected(&mut child).await;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let id = app.inbound_text("447123456789", "via listen").await;
    let got = local.next().await;
    assert_eq!(got.json["event"], "message");
    assert_eq!(got.json["data"]["message_id"], id.as_str());
    verify_signature(secret.expose(), &got);
    let printed = line_with(&mut lines, got.header("webhook-id")).await;
    assert!(printed.contains("message") && printed.contains("HTTP 200"), "{printed}");

    // ack.sent is filtered out; ack.read goes through.
    let reply = app.send_text("447123456789", "hi").await;
    let (status, _) = app
        .post(
            &format!("/v1/sandbox/messages/{reply}/status"),
            serde_json::json!({"status": "read"}),
        )
        .await;
    assert_eq!(status, 200);
    let read = local.next().await;
    assert_eq!(read.json["data"]["status"], "read");
    assert_eq!(local.count(), 2, "ack.sent was not forwarded");
}

#[tokio::test]
async fn events_tail_prints_json_lines_from_a_cursor() {
    let app = TestApp::spawn().await;
    let first = app.inbound_text("447000000001", "one").await;
    let mut child = botlinkd(&app).args(["events", "tail", "--after", "0"]).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = line_with(&mut lines, &first).await;
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["type"], "message");
    assert_eq!(event["payload"]["data"]["body"], "one");
    let second = app.inbound_text("447000000001", "two").await;
    line_with(&mut lines, &second).await;
}

#[tokio::test]
async fn wrong_keys_stop_listen_with_an_error() {
    let app = TestApp::spawn().await;
    let output = botlinkd(&app)
        .env("BOTLINKD_AUTH_KEY", "wrong")
        .args(["listen", "--forward-to", "http://127.0.0.1:9/hook"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("401"));
}

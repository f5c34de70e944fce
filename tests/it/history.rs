//! History: conversations and their messages, newest first, paged.

use serde_json::json;

use crate::harness::TestApp;

#[tokio::test]
async fn conversations_and_messages_page_newest_first() {
    let app = TestApp::spawn_with(|c| {
        c.sandbox_delivered_after = None;
        c.sandbox_read_after = None;
    })
    .await;
    let ann = "447000000001";
    let bob = "447000000002";
    app.inbound_text(ann, "hi, it's Ann").await;
    app.inbound_text(bob, "hi, it's Bob").await;
    let reply = app.send_text(ann, "hello Ann").await;
    for i in 0..5 {
        app.inbound_text(ann, &format!("more {i}")).await;
    }

    let list = app.get_json("/v1/conversations").await;
    let conversations = list["conversations"].as_array().unwrap();
    assert_eq!(conversations.len(), 2);
    assert_eq!(conversations[0]["number"], ann);
    assert_eq!(conversations[0]["last_message"]["body"], "more 4");
    assert_eq!(conversations[0]["message_count"], 7);
    assert_eq!(conversations[1]["number"], bob);

    let page = app.get_json(&format!("/v1/conversations/{ann}/messages?limit=3")).await;
    let bodies: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["more 4", "more 3", "more 2"]);
    let next = page["next"].as_str().unwrap();
    let page = app
        .get_json(&format!("/v1/conversations/{ann}/messages?limit=3&before={next}"))
        .await;
    let messages = page["messages"].as_array().unwrap();
    assert_eq!(messages[0]["body"], "more 1");
    assert_eq!(messages[2]["body"], "hello Ann");
    assert_eq!(messages[2]["direction"], "outbound");
    assert_eq!(messages[2]["status"], "sent");
    assert_eq!(messages[2]["message_id"], reply.as_str());
    let last = app
        .get_json(&format!(
            "/v1/conversations/{ann}/messages?limit=3&before={}",
            page["next"].as_str().unwrap()
        ))
        .await;
    assert_eq!(last["messages"].as_array().unwrap().len(), 1);
    assert_eq!(last["next"], serde_json::Value::Null);

    // The status shown is the current one.
    let (status, _) = app
        .post(
            &format!("/v1/sandbox/messages/{reply}/status"),
            json!({"status": "delivered"}),
        )
        .await;
    assert_eq!(status, 200);
    let page = app
        .get_json(&format!("/v1/conversations/{ann}/messages?limit=10"))
        .await;
    let outgoing = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["message_id"] == reply.as_str())
        .unwrap();
    assert_eq!(outgoing["status"], "delivered");

    // Unread counts: inbound messages since the last reply or read mark.
    let list = app.get_json("/v1/conversations").await;
    assert_eq!(list["conversations"][0]["unread"], 5, "five came in after the reply");
    assert_eq!(list["conversations"][1]["unread"], 1);
    let (status, _) = app.post(&format!("/v1/conversations/{ann}/read"), json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(app.get_json("/v1/conversations").await["conversations"][0]["unread"], 0);
    let (status, _) = app.post("/v1/conversations/447999999999/read", json!({})).await;
    assert_eq!(status, 404);
    app.send_text(bob, "answered").await;
    assert_eq!(app.get_json("/v1/conversations").await["conversations"][0]["unread"], 0);

    let conversations = app.get_json("/v1/conversations?limit=1").await;
    assert_eq!(conversations["conversations"].as_array().unwrap().len(), 1);
    assert_eq!(
        conversations["conversations"][0]["number"], bob,
        "Bob was answered last"
    );
    let next = conversations["next"].as_str().unwrap();
    let rest = app.get_json(&format!("/v1/conversations?limit=1&before={next}")).await;
    assert_eq!(rest["conversations"][0]["number"], ann);

    let me = app.get_json("/v1/instance").await;
    assert_eq!(me["instance_id"], app.keys.instance_id.as_str());
    assert_eq!(me["channel"], "sandbox");
    assert_eq!(me["phone_number"], app.keys.number.as_str());
}

#[tokio::test]
async fn conversations_are_found_by_part_of_the_number_or_the_name() {
    let app = TestApp::spawn().await;
    for (from, name) in [
        ("447700900111", "Zoë Quinn"),
        ("447700900222", "Ada 100% Lovelace"),
        ("15550100333", ""),
    ] {
        let (status, answer) = app
            .post(
                "/v1/sandbox/inbound",
                json!({"from": from, "body": "hello", "name": name}),
            )
            .await;
        assert_eq!(status, 201, "{answer}");
    }
    let found = |q: &str| {
        let q = q.to_string();
        let app = &app;
        async move {
            let path = format!("/v1/conversations?q={}", url_escape(&q));
            let list = app.get_json(&path).await;
            let mut numbers: Vec<String> = list["conversations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["number"].as_str().unwrap().to_string())
                .collect();
            numbers.sort();
            numbers
        }
    };
    // Case is ignored for A to Z (SQLite's LIKE; PostgreSQL ignores it for every letter).
    assert_eq!(found("zoë").await, ["447700900111"]);
    assert_eq!(found("QUINN").await, ["447700900111"]);
    assert_eq!(found("7009002").await, ["447700900222"]);
    assert_eq!(found("4477").await, ["447700900111", "447700900222"]);
    // Wildcards are taken literally.
    assert_eq!(found("100%").await, ["447700900222"]);
    assert!(found("%").await.len() == 1);
    assert!(found("_").await.is_empty());
    assert_eq!(found("").await.len(), 3);
    let (status, answer) = app.post("/v1/conversations?q=x", json!({})).await;
    assert_eq!(status, 405, "{answer}");
    let long = "9".repeat(101);
    let response = app
        .request(reqwest::Method::GET, &format!("/v1/conversations?q={long}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

fn url_escape(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

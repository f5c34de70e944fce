//! The `meta` channel end to end: Meta's signed webhooks in, botlinkd's signed webhooks out,
//! replies through a local stand-in for the Graph API, its statuses back as acks, Meta's
//! errors, media downloads, and the verification handshake.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::graph_stub::{GraphStub, Scripted, TOKEN, media_bytes};
use crate::harness::{Keys, PATIENCE, Receiver, TestApp, verify_signature};
use crate::process::{botlinkd, cli, serve_command};
use botlinkd::channels::meta::signature::sign;

const APP_SECRET: &str = "meta-app-secret-for-tests-0001";
const VERIFY_TOKEN: &str = "verify-token-chosen-by-the-operator";
const PHONE_NUMBER_ID: &str = "106540352242922";
const CUSTOMER: &str = "447123456789";

/// A server whose Graph API is the stand-in, with its first instance switched to meta.
async fn meta_app(graph: &GraphStub) -> TestApp {
    let url = graph.url.clone();
    let test = TestApp::spawn_with(move |c| {
        c.meta_graph_url = url;
        c.meta_retry_base = Duration::from_millis(20);
    })
    .await;
    let view = switch_to_meta(&test, &test.keys, PHONE_NUMBER_ID, TOKEN).await;
    assert_eq!(view["channel"], "meta");
    test
}

async fn switch_to_meta(test: &TestApp, keys: &Keys, phone_number_id: &str, token: &str) -> Value {
    let response = test
        .request_as(keys, Method::PUT, "/v1/instance/channel")
        .json(&json!({"channel": "meta", "meta": {
            "phone_number_id": phone_number_id, "access_token": token,
            "app_secret": APP_SECRET, "verify_token": VERIFY_TOKEN}}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "switch to meta: {text}");
    assert!(
        !text.contains(token) && !text.contains(APP_SECRET) && !text.contains(VERIFY_TOKEN),
        "secrets must never be answered back: {text}"
    );
    serde_json::from_str(&text).unwrap()
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/meta/{name}.json", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A fixture whose messages were written a minute ago, not in 2023: inside the 24-hour
/// customer-service window.
fn written_now(name: &str) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60;
    String::from_utf8(fixture(name))
        .unwrap()
        .replace("\"1678900000\"", &format!("\"{now}\""))
        .into_bytes()
}

/// The customer writes (now), so that free-form replies may go to them.
async fn customer_writes(test: &TestApp) {
    let answer = deliver(test, &written_now("message_text")).await;
    assert_eq!(answer["messages"], 1, "{answer}");
}

/// A status webhook for the message Meta knows as `wamid`.
fn status_webhook(wamid: &str, status: &str, errors: Option<Value>) -> Vec<u8> {
    let mut entry = json!({"id": wamid, "status": status, "timestamp": "1678900055", "recipient_id": CUSTOMER});
    if let Some(errors) = errors {
        entry["errors"] = errors;
    }
    serde_json::to_vec(
        &json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398",
        "changes": [{"field": "messages", "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550123456", "phone_number_id": PHONE_NUMBER_ID},
            "statuses": [entry]}}]}]}),
    )
    .unwrap()
}

/// POSTs a body to Meta's webhook URL, signed with `signature` (`None`: no header).
async fn post_webhook(test: &TestApp, body: &[u8], signature: Option<String>) -> (u16, Value) {
    let mut request = test
        .client
        .post(format!("{}/meta/webhook", test.base))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("x-hub-signature-256", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// POSTs a body signed with the app secret, expecting 200; returns Meta's answer.
async fn deliver(test: &TestApp, body: &[u8]) -> Value {
    let (status, answer) = post_webhook(test, body, Some(sign(APP_SECRET, body))).await;
    assert_eq!(status, 200, "webhook: {answer}");
    answer
}

async fn events(test: &TestApp) -> Vec<Value> {
    test.get_json("/v1/events?limit=500").await["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["payload"].clone())
        .collect()
}

#[tokio::test]
async fn a_signed_meta_message_goes_out_as_a_signed_webhook_and_a_reply_comes_back_as_acks() {
    let graph = GraphStub::start().await;
    let test = meta_app(&graph).await;
    let receiver = Receiver::start().await;
    let endpoint = test.create_webhook(&receiver.url, None).await;
    let secret = endpoint["secret"].as_str().unwrap();

    // A customer writes on WhatsApp; Meta posts the signed webhook.
    let answer = deliver(&test, &fixture("message_text")).await;
    assert_eq!(answer["messages"], 1);
    let received = receiver.next_event("message").await;
    verify_signature(secret, &received);
    let data = &received.json["data"];
    assert_eq!(received.json["instance_id"], test.keys.instance_id.as_str());
    assert_eq!(data["from"], CUSTOMER);
    assert_eq!(data["to"], "15550123456");
    assert_eq!(data["type"], "text");
    assert_eq!(data["body"], "Hello, where is my order?");
    assert_eq!(data["message_id"], "wamid.HBgMNDQ3MTIzNDU2Nzg5FQIAEhggTEXT0001");
    assert_eq!(data["timestamp"], 1_678_900_000);
    assert_eq!(data["name"], "Ana Souza");

    // That message was written in 2023: the customer-service window closed long ago, so a
    // free-form reply is refused before anything is queued, and no Graph call is made.
    let (status, refused) = test
        .post("/v1/messages", json!({"to": CUSTOMER, "body": "Sorry for the wait"}))
        .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "outside_customer_service_window");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2023-03-16T17:06:40.000Z"),
        "{refused}"
    );

    // The customer writes again (a retry of the same wamid is a duplicate, so a new one).
    let again = String::from_utf8(written_now("message_text"))
        .unwrap()
        .replace("TEXT0001", "TEXT0002");
    assert_eq!(deliver(&test, again.as_bytes()).await["messages"], 1);
    receiver.next_event("message").await;

    // The business replies through the API; the stand-in records the Graph call.
    let (status, sent) = test
        .post("/v1/messages", json!({"to": CUSTOMER, "body": "It ships today"}))
        .await;
    assert_eq!(status, 202, "{sent}");
    assert_eq!(sent["status"], "accepted");
    let ours = sent["message_id"].as_str().unwrap().to_string();
    let call = graph.sends(1).await.remove(0);
    assert_eq!(call.path, format!("/v24.0/{PHONE_NUMBER_ID}/messages"));
    assert_eq!(call.authorization, format!("Bearer {TOKEN}"));
    assert_eq!(call.body["to"], CUSTOMER);
    assert_eq!(call.body["text"]["body"], "It ships today");
    let ack = receiver.next_event("ack").await;
    assert_eq!(ack.json["data"]["status"], "sent");
    assert_eq!(ack.json["data"]["message_id"], ours.as_str());

    // Meta reports the statuses of its wamid; they come out as acks of botlinkd's id.
    let wamid = "wamid.STANDIN0001";
    for status in ["delivered", "read"] {
        let answer = deliver(&test, &status_webhook(wamid, status, None)).await;
        assert_eq!(answer["statuses"], 1, "{answer}");
        let ack = receiver.next_event("ack").await;
        verify_signature(secret, &ack);
        assert_eq!(ack.json["data"]["status"], status);
        assert_eq!(ack.json["data"]["message_id"], ours.as_str());
        assert_eq!(ack.json["data"]["timestamp"], 1_678_900_055);
    }
    // Meta's retry of a status (and its late `sent`) publish nothing.
    let answer = deliver(&test, &status_webhook(wamid, "read", None)).await;
    assert_eq!(answer["duplicates"], 1);
    let answer = deliver(&test, &status_webhook(wamid, "sent", None)).await;
    assert_eq!(answer["duplicates"], 1);
    receiver.expect_nothing(Duration::from_millis(300)).await;
    assert_eq!(test.get_json(&format!("/v1/messages/{ours}")).await["status"], "read");

    // The customer quotes the reply: the context names botlinkd's id, the one the API gave.
    let mut quoted: Value = serde_json::from_slice(&fixture("message_reply_context")).unwrap();
    quoted["entry"][0]["changes"][0]["value"]["messages"][0]["context"]["id"] = json!(wamid);
    deliver(&test, &serde_json::to_vec(&quoted).unwrap()).await;
    let reply = receiver.next_event("message").await;
    assert_eq!(reply.json["data"]["context"]["message_id"], ours.as_str());

    // Marking the conversation read sends Meta a read receipt for the newest message.
    let (status, _) = test
        .post(&format!("/v1/conversations/{CUSTOMER}/read"), json!({}))
        .await;
    assert_eq!(status, 200);
    let receipt = graph.sends(2).await.remove(1);
    assert_eq!(
        receipt.body,
        json!({"messaging_product": "whatsapp", "status": "read",
            "message_id": "wamid.HBgMNDQ3MTIzNDU2Nzg5FQIAEhggREPLYCTX"})
    );
}

#[tokio::test]
async fn every_documented_message_type_is_accepted_and_published() {
    let graph = GraphStub::start().await;
    let test = meta_app(&graph).await;
    let expected = [
        ("message_text", "text"),
        ("message_image", "image"),
        ("message_video", "video"),
        ("message_audio", "audio"),
        ("message_document", "document"),
        ("message_sticker", "sticker"),
        ("message_location", "location"),
        ("message_contacts", "contacts"),
        ("message_reaction", "reaction"),
        ("message_button_reply", "button"),
        ("message_list_reply", "list"),
        ("message_template_button", "button"),
        ("message_reply_context", "text"),
        ("message_unsupported", "unsupported"),
        ("message_order", "order"),
    ];
    for (name, _) in expected {
        let answer = deliver(&test, &fixture(name)).await;
        assert_eq!(answer["messages"], 1, "{name}: {answer}");
    }
    // The fixtures are dated 2023: retention counts from when botlinkd stored an event, not
    // from when the customer sent it, so a pruning pass keeps them all.
    assert_eq!(botlinkd::housekeeping::step(&test.app).await.unwrap(), 0);
    let published = events(&test).await;
    let kinds: Vec<&str> = published.iter().map(|e| e["data"]["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, expected.map(|(_, kind)| kind));
    for event in &published {
        let data = &event["data"];
        for field in ["from", "to", "type", "body", "message_id"] {
            assert!(data[field].is_string(), "{field} in {data}");
        }
        assert!(data["timestamp"].is_i64(), "{data}");
    }
}

#[tokio::test]
async fn the_verification_handshake_echoes_the_challenge_only_for_the_right_token() {
    let graph = GraphStub::start().await;
    let test = meta_app(&graph).await;
    let handshake = |token: &str| {
        test.client.get(format!(
            "{}/meta/webhook?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444",
            test.base
        ))
    };
    let ok = handshake(VERIFY_TOKEN).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert_eq!(ok.text().await.unwrap(), "1158201444");
    let wrong = handshake("not-the-token").send().await.unwrap();
    assert_eq!(wrong.status(), 403);
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["error"]["code"], "verification_failed");
    let unsubscribe = test
        .client
        .get(format!(
            "{}/meta/webhook?hub.mode=unsubscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1",
            test.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(unsubscribe.status(), 403);
}

#[tokio::test]
async fn unsigned_wrongly_signed_and_altered_webhooks_are_refused_and_store_nothing() {
    let graph = GraphStub::start().await;
    let test = meta_app(&graph).await;
    let body = fixture("message_text");
    let (status, answer) = post_webhook(&test, &body, None).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("invalid_signature"))
    );
    let (status, _) = post_webhook(&test, &body, Some(sign("another-apps-secret", &body))).await;
    assert_eq!(status, 401);
    let (status, _) = post_webhook(&test, &body, Some("sha256=not-hex".into())).await;
    assert_eq!(status, 401);
    let mut altered = body.clone();
    let at = altered.iter().position(|&b| b == b'H').unwrap();
    altered[at] = b'J';
    let (status, _) = post_webhook(&test, &altered, Some(sign(APP_SECRET, &body))).await;
    assert_eq!(status, 401);
    assert!(
        events(&test).await.is_empty(),
        "nothing may be stored from a refused webhook"
    );
    // The same body, rightly signed, is taken.
    assert_eq!(deliver(&test, &body).await["messages"], 1);
    // Signed but unreadable: taken with a 200 (Meta would only send it again), nothing stored.
    assert_eq!(deliver(&test, b"not json at all").await["ignored"], 1);
    let odd = br#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"messages":"?"}},{"field":"account_update","value":[1,2]}]}]}"#;
    assert_eq!(deliver(&test, odd).await["ignored"], 1);
    assert_eq!(events(&test).await.len(), 1);
}

#[tokio::test]
async fn a_status_that_overtakes_its_send_is_deferred_and_one_for_a_message_sent_elsewhere_ignored() {
    let graph = GraphStub::start().await;
    let test = meta_app(&graph).await;
    let receiver = Receiver::start().await;
    test.create_webhook(&receiver.url, Some(&["ack.sent", "ack.delivered"]))
        .await;
    // Meta throttles the send for a while: it stays queued.
    graph.script((0..6).map(|_| Scripted {
        status: 429,
        code: 130429,
        message: "Rate limit hit",
    }));
    customer_writes(&test).await;
    let ours = test.send_text(CUSTOMER, "coming soon").await;
    let early = status_webhook("wamid.STANDIN0007", "delivered", None);
    let (status, answer) = post_webhook(&test, &early, Some(sign(APP_SECRET, &early))).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (503, Some("status_deferred"))
    );
    // Meta retries after the send was recorded: the status applies.
    assert_eq!(receiver.next_event("ack").await.json["data"]["status"], "sent");
    assert_eq!(graph.sends(7).await.last().unwrap().body["text"]["body"], "coming soon");
    let answer = deliver(&test, &early).await;
    assert_eq!(answer["statuses"], 1, "{answer}");
    let delivered = receiver.next_event("ack").await;
    assert_eq!(delivered.json["data"]["message_id"], ours.as_str());
    // Nothing queued: a status of a message sent from elsewhere is simply not ours.
    let answer = deliver(&test, &status_webhook("wamid.SENTBYANOTHERTOOL", "read", None)).await;
    assert_eq!(answer["ignored"], 1);
}

#[tokio::test]
async fn batches_are_routed_by_phone_number_id_and_metas_retries_are_deduplicated() {
    let graph = GraphStub::start().await;
    let test = meta_app(&graph).await;
    let second = test.create_instance("second number").await;
    switch_to_meta(&test, &second, "209876543210987", TOKEN).await;
    let batch = fixture("batch");
    let answer = deliver(&test, &batch).await;
    assert_eq!(
        answer,
        json!({"messages": 3, "statuses": 0, "duplicates": 0, "ignored": 0})
    );
    // Meta retries the whole delivery: nothing new is stored or published.
    let answer = deliver(&test, &batch).await;
    assert_eq!(
        answer,
        json!({"messages": 0, "statuses": 0, "duplicates": 3, "ignored": 0})
    );
    let first: Vec<String> = events(&test)
        .await
        .iter()
        .map(|e| e["data"]["body"].to_string())
        .collect();
    assert_eq!(first, ["\"first\"", "\"second\""]);
    let other = test
        .request_as(&second, Method::GET, "/v1/events")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let events = other["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["payload"]["data"]["body"], "third");
    assert_eq!(events[0]["payload"]["data"]["name"], "Chen Wei");
    // Two instances cannot claim the same Meta number.
    let third = test.create_instance("third").await;
    let clash = test
        .request_as(&third, Method::PUT, "/v1/instance/channel")
        .json(
            &json!({"channel": "meta", "meta": {"phone_number_id": PHONE_NUMBER_ID, "access_token": "t",
            "app_secret": "s", "verify_token": "v"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(clash.status(), 409);
}

#[tokio::test]
async fn metas_errors_become_failed_acks_retries_or_an_instance_that_needs_attention() {
    let graph = GraphStub::start().await;
    let test = meta_app(&graph).await;
    let receiver = Receiver::start().await;
    test.create_webhook(&receiver.url, Some(&["ack.sent", "ack.failed"]))
        .await;

    // The window closes while the send is queued: Meta's 131047 makes it failed, with a title
    // that says a template is needed.
    customer_writes(&test).await;
    graph.script([Scripted {
        status: 400,
        code: 131047,
        message: "Re-engagement message",
    }]);
    let late = test.send_text(CUSTOMER, "Are you still there?").await;
    let failed = receiver.next_event("ack").await;
    assert_eq!(failed.json["data"]["status"], "failed");
    assert_eq!(failed.json["data"]["message_id"], late.as_str());
    assert_eq!(failed.json["data"]["error"]["code"], 131047);
    assert!(
        failed.json["data"]["error"]["title"]
            .as_str()
            .unwrap()
            .contains("template")
    );

    // Throttled twice (HTTP 429 and code 130429): retried with backoff, then sent.
    graph.script([
        Scripted {
            status: 429,
            code: 130429,
            message: "Rate limit hit",
        },
        Scripted {
            status: 400,
            code: 130429,
            message: "Rate limit hit",
        },
    ]);
    let throttled = test.send_text(CUSTOMER, "Your order shipped").await;
    let sent = receiver.next_event("ack").await;
    assert_eq!(sent.json["data"]["status"], "sent");
    assert_eq!(sent.json["data"]["message_id"], throttled.as_str());
    assert_eq!(
        graph.sends(4).await.len(),
        4,
        "one refused, two throttled tries and the one that got through"
    );

    // A template goes out with its parameters.
    let (status, _) = test
        .post(
            "/v1/messages",
            json!({"to": CUSTOMER, "type": "template",
            "template": {"name": "order_update", "language": "en_GB", "params": ["#1042"]}}),
        )
        .await;
    assert_eq!(status, 202);
    let template = graph.sends(5).await.remove(4);
    assert_eq!(template.body["template"]["name"], "order_update");
    assert_eq!(receiver.next_event("ack").await.json["data"]["status"], "sent");

    // An expired token: the message fails and the instance needs attention.
    switch_to_meta(&test, &test.keys, PHONE_NUMBER_ID, "EAAGanexpiredtokenxxxxxxxxxxxx").await;
    let doomed = test.send_text(CUSTOMER, "hello?").await;
    let failed = receiver.next_event("ack").await;
    assert_eq!(failed.json["data"]["message_id"], doomed.as_str());
    assert_eq!(failed.json["data"]["error"]["code"], 190);
    let instance = test.get_json("/v1/instance").await;
    assert!(
        instance["attention"].as_str().unwrap().contains("access token"),
        "{instance}"
    );
    let (status, refused) = test
        .post("/v1/messages", json!({"to": CUSTOMER, "body": "again"}))
        .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (409, Some("channel_needs_attention"))
    );
    // A new token clears it.
    let view = switch_to_meta(&test, &test.keys, PHONE_NUMBER_ID, TOKEN).await;
    assert_eq!(view["attention"], Value::Null);
    test.send_text(CUSTOMER, "back").await;
    assert_eq!(receiver.next_event("ack").await.json["data"]["status"], "sent");
}

#[tokio::test]
async fn inbound_media_is_downloaded_through_botlinkd_with_the_instances_keys() {
    let graph = GraphStub::start().await;
    let test = meta_app(&graph).await;
    deliver(&test, &fixture("message_image")).await;
    let event = events(&test).await.remove(0);
    let url = event["data"]["media"]["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&test.base), "{url}");
    let path = url.strip_prefix(&test.base).unwrap();
    let response = test.request(Method::GET, path).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/jpeg");
    assert_eq!(
        response.bytes().await.unwrap().to_vec(),
        media_bytes("1479537139650973")
    );
    // Without keys, or with another instance's keys, there is nothing to see.
    let anonymous = test.client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let other = test.create_instance("other").await;
    let foreign = test.request_as(&other, Method::GET, path).send().await.unwrap();
    assert_eq!(foreign.status(), 404);
}

#[tokio::test]
async fn a_meta_instance_set_up_from_the_command_line_works_and_its_secrets_reach_no_output_or_log() {
    let dir = tempfile::tempdir().unwrap();
    let graph = GraphStub::start().await;
    let stale_token = "EAAGstaletokenfromthecommandline99";
    let secrets = [
        ("BOTLINKD_META_ACCESS_TOKEN", stale_token),
        ("BOTLINKD_META_APP_SECRET", APP_SECRET),
        ("BOTLINKD_META_VERIFY_TOKEN", VERIFY_TOKEN),
    ];
    let create = [
        "instance",
        "create",
        "--name",
        "shop",
        "--channel",
        "meta",
        "--number",
        "15550123456",
        "--meta-phone-number-id",
        PHONE_NUMBER_ID,
        "--json",
    ];
    let refused = botlinkd(dir.path()).args(create).output().await.unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--meta-access-token"));
    let created = botlinkd(dir.path()).args(create).envs(secrets).output().await.unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let keys: Value = serde_json::from_slice(&created.stdout).unwrap();
    let listed = cli(dir.path(), &["instance", "list", "--json"]).await;
    assert_eq!(serde_json::from_str::<Value>(&listed).unwrap()[0]["channel"], "meta");

    // Served with debug logs: the handshake, a signed message and a send Meta refuses.
    let log_path = dir.path().join("server.log");
    let mut command = botlinkd(dir.path());
    command
        .env("BOTLINKD_LOG", "debug")
        .stderr(std::fs::File::create(&log_path).unwrap());
    let mut served = serve_command(command, &["--meta-graph-url", &graph.url]).await;
    let client = reqwest::Client::new();
    let challenge = client
        .get(format!(
            "{}/meta/webhook?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=42",
            served.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(challenge.text().await.unwrap(), "42");
    let body = written_now("message_text");
    let taken = client
        .post(format!("{}/meta/webhook", served.base))
        .header("x-hub-signature-256", sign(APP_SECRET, &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(taken.status(), 200);
    let (app_key, auth_key) = (keys["app_key"].as_str().unwrap(), keys["auth_key"].as_str().unwrap());
    let sent = client
        .post(format!("{}/v1/messages", served.base))
        .basic_auth(app_key, Some(auth_key))
        .json(&json!({"to": CUSTOMER, "body": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let instance: Value = client
            .get(format!("{}/v1/instance", served.base))
            .basic_auth(app_key, Some(auth_key))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if instance["attention"].is_string() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refused token was never flagged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The operator fixes the token from the command line.
    let fixed = botlinkd(dir.path())
        .args([
            "instance",
            "set-channel",
            keys["instance_id"].as_str().unwrap(),
            "--channel",
            "meta",
            "--meta-phone-number-id",
            PHONE_NUMBER_ID,
        ])
        .envs(secrets)
        .env("BOTLINKD_META_ACCESS_TOKEN", TOKEN)
        .output()
        .await
        .unwrap();
    assert!(fixed.status.success(), "{}", String::from_utf8_lossy(&fixed.stderr));
    served.child.kill().await.unwrap();

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("needs an operator"), "the log was captured: {log}");
    let output = format!(
        "{listed}{}{}{log}",
        String::from_utf8_lossy(&created.stdout),
        String::from_utf8_lossy(&fixed.stdout)
    );
    for secret in [stale_token, TOKEN, APP_SECRET, VERIFY_TOKEN] {
        assert!(!output.contains(secret), "a Meta secret reached the output or the log");
    }
    assert!(!log.contains(auth_key), "the Auth Key reached the log");
}

/// `customer` writes now, in a message of its own (`n` makes its wamid unique).
async fn writes_now(test: &TestApp, customer: &str, n: usize) {
    let body = String::from_utf8(written_now("message_text"))
        .unwrap()
        .replace(CUSTOMER, customer)
        .replace("TEXT0001", &format!("W{n:07}"));
    assert_eq!(deliver(test, body.as_bytes()).await["messages"], 1);
}

#[tokio::test]
async fn a_burst_of_sends_leaves_no_faster_than_the_numbers_pace() {
    // A pace of 20 a second: the API takes sends one after another far faster than that even
    // on a loaded machine (a send is a few milliseconds, the pace leaves 50), so the burst is
    // always ahead of the pace and every interval is the pacer's doing.
    const PACE: usize = 20;
    const SENDS: usize = 100;
    let graph = GraphStub::start().await;
    let url = graph.url.clone();
    let test = TestApp::spawn_with(move |c| {
        c.meta_graph_url = url;
        c.meta_max_mps = PACE as u32;
        // The burst is the point: the API's own limit would stop it first.
        c.api_rate_limit = None;
    })
    .await;
    switch_to_meta(&test, &test.keys, PHONE_NUMBER_ID, TOKEN).await;
    let customers: Vec<String> = (0..10).map(|c| format!("44770090{c:04}")).collect();
    for (n, customer) in customers.iter().enumerate() {
        writes_now(&test, customer, n).await;
    }
    for i in 0..SENDS {
        test.send_text(&customers[i % customers.len()], &format!("burst {i}"))
            .await;
    }
    let mut times: Vec<std::time::Instant> = graph.sends(SENDS).await.iter().map(|r| r.at).collect();
    times.sort();
    // 100 sends at 20 a second: 99 intervals of 50 ms (less ten: on a loaded machine the
    // first send may leave late, and the span starts with it; unpaced, the burst leaves in a
    // fraction of a second), and never more than the rate within a second, give or take a
    // send that woke late and so shares its second with the punctual ones after it.
    let interval = Duration::from_millis(1000 / PACE as u64);
    let span = times[SENDS - 1].duration_since(times[0]);
    assert!(
        span >= interval * (SENDS as u32 - 11),
        "{SENDS} sends left within {span:?}"
    );
    let busiest = crate::harness::most_within_a_second(&times);
    assert!(busiest <= PACE + 2, "{busiest} sends within one second");
    let metrics = metrics_of(&test).await;
    let paced = metrics
        .lines()
        .find_map(|l| l.strip_prefix("botlinkd_meta_sends_paced_total "))
        .expect("the pace is counted")
        .parse::<u64>()
        .unwrap();
    // The API takes them far faster than the pace, so most had to wait.
    assert!(paced as usize > SENDS / 2, "{paced} sends waited for the pace");
}

#[tokio::test]
async fn a_pair_rate_refusal_holds_back_only_that_customers_conversation() {
    let graph = GraphStub::start().await;
    let url = graph.url.clone();
    let test = TestApp::spawn_with(move |c| {
        c.meta_graph_url = url;
        c.meta_retry_base = Duration::from_millis(200);
    })
    .await;
    switch_to_meta(&test, &test.keys, PHONE_NUMBER_ID, TOKEN).await;
    let receiver = Receiver::start().await;
    test.create_webhook(&receiver.url, Some(&["ack.sent"])).await;
    let other = "447700900222";
    writes_now(&test, CUSTOMER, 1).await;
    writes_now(&test, other, 2).await;
    graph.script_to(
        CUSTOMER,
        (0..3).map(|_| Scripted {
            status: 400,
            code: 131056,
            message: "(#131056) (Business Account, Consumer Account) pair rate limit hit",
        }),
    );
    let first = test.send_text(CUSTOMER, "first to the busy customer").await;
    let second = test.send_text(CUSTOMER, "second to the busy customer").await;
    let elsewhere = test.send_text(other, "to another customer").await;

    // The other customer's message goes at once; the busy conversation follows, in order.
    let mut sent = Vec::new();
    while sent.len() < 3 {
        sent.push(
            receiver.next_event("ack").await.json["data"]["message_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(sent, [elsewhere, first, second]);
    let to_busy: Vec<String> = graph
        .requests()
        .iter()
        .filter(|r| r.body["to"] == CUSTOMER)
        .map(|r| r.body["text"]["body"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        to_busy,
        [
            "first to the busy customer",
            "first to the busy customer",
            "first to the busy customer",
            "first to the busy customer",
            "second to the busy customer"
        ]
    );
    let metrics = metrics_of(&test).await;
    assert!(
        metrics.contains("botlinkd_meta_sends_throttled_total{code=\"131056\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn templates_are_synced_from_meta_page_by_page_and_template_sends_are_checked_against_them() {
    const WABA_ID: &str = "102290129340398";
    let graph = GraphStub::start().await;
    let test = meta_app(&graph).await;
    // Without a WhatsApp Business Account id nothing is synced, and template sends go to Meta
    // unchecked (Meta refuses what it does not know).
    let listed = test.get_json("/v1/templates").await;
    assert_eq!(
        (listed["source"].as_str(), &listed["synced_at"]),
        (Some("meta"), &Value::Null)
    );
    let unchecked = json!({"to": CUSTOMER, "type": "template", "template": {"name": "anything", "params": []}});
    assert_eq!(test.post("/v1/messages", unchecked.clone()).await.0, 202);
    let (status, answer) = test.post("/v1/templates/sync", json!({})).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("cannot_sync_templates"))
    );

    // With one, setting the channel syncs every page.
    let response = test
        .request(Method::PUT, "/v1/instance/channel")
        .json(&json!({"channel": "meta", "meta": {
            "phone_number_id": PHONE_NUMBER_ID, "access_token": TOKEN,
            "app_secret": APP_SECRET, "verify_token": VERIFY_TOKEN, "waba_id": WABA_ID}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let view: Value = response.json().await.unwrap();
    assert_eq!(view["meta"]["waba_id"], WABA_ID);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let listed = loop {
        let listed = test.get_json("/v1/templates").await;
        if !listed["synced_at"].is_null() {
            break listed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the templates were never synced"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let templates = listed["templates"].as_array().unwrap();
    assert_eq!(templates.len(), 5, "{listed}");
    let order = templates
        .iter()
        .find(|t| t["name"] == "order_update" && t["language"] == "en_US")
        .unwrap();
    assert_eq!(order["params"], 2);
    assert_eq!(order["buttons"], json!(["Track it"]));
    assert_eq!(order["body"], "Your order {{1}} ships {{2}}.");
    let pages: Vec<String> = graph
        .requests()
        .into_iter()
        .map(|r| r.path)
        .filter(|p| p.contains("/message_templates"))
        .collect();
    // Each sync walks the pages by the cursor. Housekeeping's first round may see the new
    // instance before the channel change's own sync has stored anything and sync it too, so
    // the walk may come twice.
    let walk = [
        format!("/v24.0/{WABA_ID}/message_templates?after="),
        format!("/v24.0/{WABA_ID}/message_templates?after=page1"),
        format!("/v24.0/{WABA_ID}/message_templates?after=page2"),
    ];
    let mut sorted = pages.clone();
    sorted.sort();
    let walks = pages.len() / 3;
    assert!((1..=2).contains(&walks) && pages.len().is_multiple_of(3), "{pages:?}");
    assert_eq!(
        sorted,
        walk.iter()
            .flat_map(|p| std::iter::repeat_n(p.clone(), walks))
            .collect::<Vec<_>>()
    );
    assert_eq!(pages[0], walk[0], "{pages:?}");

    // Sends are checked against the catalogue before anything is queued.
    let send = |name: &str, language: &str, params: Vec<&str>| json!({"to": CUSTOMER, "type": "template", "template": {"name": name, "language": language, "params": params}});
    for (body, code) in [
        (unchecked, "unknown_template"),
        (send("order_update", "en_GB", vec!["1", "2"]), "unknown_template"),
        (
            send("spring_sale", "en_US", vec!["10%", "Monday"]),
            "template_not_approved",
        ),
        (send("account_alert", "en_US", vec!["1234"]), "template_not_approved"),
        (send("order_update", "pt_BR", vec!["A-1"]), "template_params"),
    ] {
        let (status, answer) = test.post("/v1/messages", body).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (422, Some(code)),
            "{answer}"
        );
    }
    let before = graph
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/messages"))
        .count();
    let (status, answer) = test.post("/v1/messages", send("welcome", "en_US", vec![])).await;
    assert_eq!(status, 202, "{answer}");
    let call = graph.sends(before + 1).await.pop().unwrap();
    assert_eq!(call.body["template"]["name"], "welcome");

    // A sync on demand answers the catalogue.
    let (status, synced) = test.post("/v1/templates/sync", json!({})).await;
    assert_eq!(status, 200, "{synced}");
    assert_eq!(synced["templates"].as_array().unwrap().len(), 5);
}

/// A customer's image webhook for `media_id`, written now, whose `sha256` is `sha256`
/// (base64, as Meta writes it), as message `n`.
fn image_webhook(media_id: &str, sha256: &str, kind: &str, n: usize) -> Vec<u8> {
    String::from_utf8(written_now("message_image"))
        .unwrap()
        .replace("1479537139650973", media_id)
        .replace("IqF9Gdr2dQ5cNoX7hIu0b4fp0pcbQ6zMBwCRNUfBP3c=", sha256)
        .replace("\"type\": \"image\"", &format!("\"type\": \"{kind}\""))
        .replace("\"image\": {", &format!("\"{kind}\": {{"))
        .replace("IMAGE001", &format!("MEDIA{n:03}"))
        .into_bytes()
}

/// Meta's base64 SHA-256 of these bytes.
fn sha256_b64(bytes: &[u8]) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(bytes))
}

/// Waits until botlinkd holds its own copy of a message's media, and answers it.
async fn kept(test: &TestApp, message_id: &str) -> botlinkd::store::KeptMedia {
    let instance: i64 = test.keys.instance_id.parse().unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(kept) = test.app.store.kept_media(instance, message_id).await.unwrap() {
            return kept;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{message_id}'s media was never kept"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test]
async fn customers_media_is_kept_when_it_arrives_and_served_after_meta_forgot_it() {
    let graph = GraphStub::start().await;
    let test = meta_app(&graph).await;
    let media_id = "2000000000000001";
    // Meta's first two lookups fail: the download is retried with back-off.
    graph.fail_media(2);
    let body = image_webhook(media_id, &sha256_b64(&media_bytes(media_id)), "image", 1);
    assert_eq!(deliver(&test, &body).await["messages"], 1);
    let message_id = "wamid.HBgMNDQ3MTIzNDU2Nzg5FQIAEhggMEDIA001";
    let copy = kept(&test, message_id).await;
    assert_eq!(copy.bytes, media_bytes(media_id));
    assert_eq!(copy.content_type, "image/jpeg");
    let lookups = graph
        .requests()
        .iter()
        .filter(|r| r.path == format!("/v24.0/{media_id}"))
        .count();
    assert_eq!(lookups, 3, "two failures, then the download");

    // Meta forgets the file; botlinkd still serves its copy.
    graph.forget(media_id);
    let response = test
        .request(Method::GET, &format!("/v1/messages/{message_id}/media"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/jpeg");
    assert_eq!(response.bytes().await.unwrap().to_vec(), media_bytes(media_id));
}

#[tokio::test]
async fn media_with_a_wrong_checksum_or_over_whatsapps_cap_is_not_kept() {
    let graph = GraphStub::start().await;
    let test = meta_app(&graph).await;
    // A file whose bytes are not the ones Meta's checksum names: tried again, never kept.
    let tampered = "2000000000000002";
    let body = image_webhook(tampered, &sha256_b64(b"something else"), "image", 2);
    assert_eq!(deliver(&test, &body).await["messages"], 1);
    // A sticker over WhatsApp's 500 KB cap: not downloaded at all.
    let huge = "2000000000000003";
    let big = vec![7u8; 600 * 1024];
    graph.serve_file(huge, big.clone());
    let body = image_webhook(huge, &sha256_b64(&big), "sticker", 3);
    assert_eq!(deliver(&test, &body).await["messages"], 1);

    // The keeper gives up on the tampered file after its tries (20 ms doubling, 8 tries).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while graph
        .requests()
        .iter()
        .filter(|r| r.path == format!("/files/{tampered}"))
        .count()
        < 8
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tampered file was not retried"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let instance: i64 = test.keys.instance_id.parse().unwrap();
    for (media_id, message_id) in [
        (tampered, "wamid.HBgMNDQ3MTIzNDU2Nzg5FQIAEhggMEDIA002"),
        (huge, "wamid.HBgMNDQ3MTIzNDU2Nzg5FQIAEhggMEDIA003"),
    ] {
        assert!(
            test.app.store.kept_media(instance, message_id).await.unwrap().is_none(),
            "{media_id} kept"
        );
    }
    assert_eq!(
        graph
            .requests()
            .iter()
            .filter(|r| r.path == format!("/files/{tampered}"))
            .count(),
        8
    );
    assert!(!graph.requests().iter().any(|r| r.path == format!("/files/{huge}")));
}

#[tokio::test]
async fn an_upload_goes_to_meta_and_the_send_names_metas_media_id() {
    let graph = GraphStub::start().await;
    let test = meta_app(&graph).await;
    customer_writes(&test).await;
    let part = reqwest::multipart::Part::bytes(b"%PDF-1.4 invoice".to_vec())
        .file_name("invoice.pdf")
        .mime_str("application/pdf")
        .unwrap();
    let response = test
        .request(Method::POST, "/v1/media")
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let uploaded: Value = response.json().await.unwrap();
    assert_eq!(uploaded["media_id"], crate::graph_stub::UPLOADED_MEDIA_ID);
    assert_eq!(uploaded["type"], "document");
    let upload = graph
        .requests()
        .into_iter()
        .find(|r| r.path == format!("/v24.0/{PHONE_NUMBER_ID}/media"))
        .expect("the file went to Meta");
    assert_eq!(upload.authorization, format!("Bearer {TOKEN}"));
    assert_eq!(upload.body["messaging_product"], "whatsapp");
    assert_eq!(upload.body["type"], "application/pdf");
    assert_eq!(upload.body["file"], "%PDF-1.4 invoice");

    let (status, sent) = test
        .post(
            "/v1/messages",
            json!({"to": CUSTOMER, "type": "image", "media_id": crate::graph_stub::UPLOADED_MEDIA_ID}),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    let call = graph.sends(1).await.pop().unwrap();
    assert_eq!(call.body["image"], json!({"id": crate::graph_stub::UPLOADED_MEDIA_ID}));
}

/// What `/metrics` says now.
async fn metrics_of(test: &TestApp) -> String {
    test.client
        .get(format!("{}/metrics", test.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

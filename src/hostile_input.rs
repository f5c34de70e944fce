//! Property tests of every parser of outside bytes: whatever arrives, each answers with a
//! value or an error, never a panic, and what it accepts keeps the invariants the rest of
//! the program relies on: simulated customers' messages, send bodies and the Graph request
//! built from them, compatibility forms from arbitrary bytes, webhook URLs, event filters,
//! signing secrets and Basic credentials, 1500 cases each (docs/RELIABILITY.md lists what
//! each checks). Meta's webhook payloads and signature header have their own in
//! `channels::meta::normalise_tests`; phone numbers in [`crate::phone`]. The case counts
//! bound the run (a few seconds in `cargo test`); a failure proptest finds is saved under
//! `proptest-regressions/` and replayed first on every later run, which makes it a
//! regression test once committed.

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::api::extract::parse_basic;
use crate::api::messages::{CompatForm, compat_send_request};
use crate::channels::meta::outbound::message_request;
use crate::messages::{InboundRequest, SendRequest};
use crate::webhooks::{EventFilter, SigningSecret, WebhookUrl};

/// JSON of any shape, with the field names the API's bodies use among the keys.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,16}".prop_map(Value::String),
        "[1-9][0-9]{5,14}".prop_map(Value::String),
        Just(json!("https://example.com/a.png")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("to".to_string()),
                    Just("from".to_string()),
                    Just("type".to_string()),
                    Just("body".to_string()),
                    Just("media_url".to_string()),
                    Just("caption".to_string()),
                    Just("buttons".to_string()),
                    Just("title".to_string()),
                    Just("id".to_string()),
                    Just("template".to_string()),
                    Just("name".to_string()),
                    Just("params".to_string()),
                    Just("location".to_string()),
                    Just("latitude".to_string()),
                    Just("longitude".to_string()),
                    Just("contacts".to_string()),
                    Just("reaction_to".to_string()),
                    Just("reply_to".to_string()),
                    Just("button_id".to_string()),
                    ".{0,6}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A body that deserialises more often: an object whose `type` is one the API knows.
fn body_like() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            Just("text"),
            Just("image"),
            Just("buttons"),
            Just("template"),
            Just("location"),
            Just("contacts"),
            Just("reaction"),
            Just("list"),
            Just("button"),
        ],
        any_json(),
    )
        .prop_map(|(kind, rest)| {
            let mut body = match rest {
                Value::Object(map) => Value::Object(map),
                other => json!({"body": other}),
            };
            body["type"] = json!(kind);
            body
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn inbound_bodies_validate_or_refuse(raw in prop_oneof![any_json(), body_like()]) {
        if let Ok(request) = serde_json::from_value::<InboundRequest>(raw)
            && let Ok(message) = request.validate()
        {
            prop_assert!(message.from.as_str().bytes().all(|b| b.is_ascii_digit()));
            prop_assert!(message.kind != "text" || !message.body.trim().is_empty());
        }
    }

    #[test]
    fn send_bodies_validate_or_refuse_and_go_to_meta_whole(raw in prop_oneof![any_json(), body_like()]) {
        if let Ok(request) = serde_json::from_value::<SendRequest>(raw)
            && let Ok(message) = request.validate()
        {
            let graph = message_request(&message);
            prop_assert_eq!(&graph["to"], &json!(message.to.as_str()));
            prop_assert!(graph["type"].is_string());
        }
    }

    #[test]
    fn compatibility_forms_of_any_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), form in "[a-z=&%0-9+]{0,80}") {
        let parsed = [serde_urlencoded::from_bytes::<CompatForm>(&bytes).ok(),
                      serde_urlencoded::from_str::<CompatForm>(&form).ok(),
                      serde_json::from_slice::<CompatForm>(&bytes).ok()];
        for form in parsed.into_iter().flatten() {
            let _ = compat_send_request(form).validate();
        }
    }

    #[test]
    fn webhook_urls_are_http_with_a_host_or_refused(s in ".{0,60}", tail in "[a-z0-9./:@%?#\\[\\]-]{0,40}") {
        for input in [s.clone(), format!("http://{tail}"), format!("https://{tail}")] {
            if let Ok(url) = WebhookUrl::parse(&input) {
                prop_assert!(matches!(url.as_url().scheme(), "http" | "https"));
                prop_assert!(url.as_url().host().is_some());
            }
        }
    }

    #[test]
    fn event_filters_secrets_and_basic_credentials_never_panic(names in prop::collection::vec(".{0,12}", 0..6), s in ".{0,60}") {
        let _ = EventFilter::parse(&names);
        let _ = SigningSecret::parse(&s);
        let _ = SigningSecret::parse(&format!("whsec_{s}"));
        let _ = parse_basic(&s);
        let _ = parse_basic(&format!("Basic {s}"));
    }
}

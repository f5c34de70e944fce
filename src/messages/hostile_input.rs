//! Property tests of the message bodies that come from outside: whatever arrives, each parser
//! answers with a value or an error, never a panic, and what it accepts keeps the invariants
//! the rest of the program relies on: simulated customers' messages, send bodies and the
//! Graph request built from them, compatibility forms from arbitrary bytes, 1500 cases each
//! (docs/RELIABILITY.md lists what each checks). Meta's webhook payloads have their own in
//! `channels::meta::normalise_tests`; webhook URLs, event filters and signing secrets in
//! `webhooks`; Basic credentials in `api::extract`; phone numbers in `crate::phone`. A
//! failure proptest finds is saved under `proptest-regressions/` and replayed first on every
//! later run, which makes it a regression test once committed.

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::api::messages::{CompatForm, compat_send_request};
use crate::channels::meta::outbound::message_request;
use crate::messages::{InboundRequest, SendRequest};

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
}

//! Every message type and status Meta documents, from the fixtures in `tests/fixtures/meta`,
//! through the normaliser.

use serde_json::{Value, json};

use super::*;
use crate::channels::meta::payload::Notification;

const BASE: &str = "https://chat.example.com";

macro_rules! fixture {
    ($name:literal) => {
        serde_json::from_str::<Notification>(include_str!(concat!("../../../tests/fixtures/meta/", $name, ".json")))
            .expect("fixture parses")
    };
}

/// The first message of a fixture, normalised with the profile name Meta sent along.
fn first_message(notification: Notification) -> NormalisedMessage {
    let value = &notification.entry[0].changes[0].messages().unwrap().unwrap();
    let name = value
        .contacts
        .first()
        .and_then(|c| c.profile.as_ref())
        .map(|p| p.name.as_str());
    message(&value.messages[0], name, BASE).expect("normalises")
}

fn first_status(notification: Notification) -> Option<StatusUpdate> {
    status(&notification.entry[0].changes[0].messages().unwrap().unwrap().statuses[0])
}

#[test]
fn text_keeps_id_time_sender_and_profile_name() {
    let n = first_message(fixture!("message_text"));
    assert_eq!(n.wamid, "wamid.HBgMNDQ3MTIzNDU2Nzg5FQIAEhggTEXT0001");
    assert_eq!(n.sent_at, Some(1_678_900_000_000));
    assert_eq!(n.message.from.as_str(), "447123456789");
    assert_eq!(n.message.kind, "text");
    assert_eq!(n.message.body, "Hello, where is my order?");
    assert_eq!(n.message.detail["name"], "Ana Souza");
}

#[test]
fn media_types_carry_id_mime_caption_and_a_download_url_through_botlinkd() {
    let image = first_message(fixture!("message_image"));
    assert_eq!(image.message.kind, "image");
    assert_eq!(image.message.body, "My parcel arrived damaged");
    let media = &image.message.detail["media"];
    assert_eq!(media["id"], "1479537139650973");
    assert_eq!(media["mime_type"], "image/jpeg");
    assert_eq!(
        media["url"],
        "https://chat.example.com/v1/messages/wamid.HBgMNDQ3MTIzNDU2Nzg5FQIAEhggIMAGE001/media"
    );
    let document = first_message(fixture!("message_document"));
    assert_eq!(document.message.body, "invoice");
    assert_eq!(document.message.detail["media"]["filename"], "invoice-1042.pdf");
    let audio = first_message(fixture!("message_audio"));
    assert_eq!(
        (audio.message.kind.as_str(), audio.message.body.as_str()),
        ("audio", "")
    );
    assert_eq!(audio.message.detail["media"]["voice"], true);
    assert_eq!(first_message(fixture!("message_video")).message.kind, "video");
    let sticker = first_message(fixture!("message_sticker"));
    assert_eq!(sticker.message.kind, "sticker");
    assert_eq!(sticker.message.detail["media"]["mime_type"], "image/webp");
}

#[test]
fn locations_contacts_and_reactions() {
    let location = first_message(fixture!("message_location"));
    assert_eq!(location.message.body, "Trafalgar Square");
    assert_eq!(location.message.detail["location"]["latitude"], 51.5072);
    assert_eq!(location.message.detail["location"]["address"], "London WC2N 5DN");
    let contacts = first_message(fixture!("message_contacts"));
    assert_eq!(contacts.message.body, "Maria Lopez");
    assert_eq!(
        contacts.message.detail["contacts"],
        json!([{"name": "Maria Lopez", "phone": "+34 612 345 678", "wa_id": "34612345678"}])
    );
    let reaction = first_message(fixture!("message_reaction"));
    assert_eq!(reaction.message.body, "👍");
    assert_eq!(
        reaction.message.detail["reaction"]["message_id"],
        "wamid.HBgMNDQ3MTIzNDU2Nzg5FQIAERgSOUTGOING"
    );
}

#[test]
fn button_list_and_template_replies_become_button_and_list() {
    let button = first_message(fixture!("message_button_reply"));
    assert_eq!(button.message.kind, "button");
    assert_eq!(button.message.body, "Track order");
    assert_eq!(
        button.message.detail["button"],
        json!({"id": "track_order", "title": "Track order"})
    );
    assert_eq!(
        button.message.detail["context"]["message_id"],
        "wamid.HBgMNDQ3MTIzNDU2Nzg5FQIAERgSBUTTONSQ"
    );
    let list = first_message(fixture!("message_list_reply"));
    assert_eq!(list.message.kind, "list");
    assert_eq!(list.message.body, "Express");
    assert_eq!(list.message.detail["list"]["description"], "Next day, £4.99");
    let template = first_message(fixture!("message_template_button"));
    assert_eq!(template.message.kind, "button");
    assert_eq!(
        template.message.detail["button"],
        json!({"id": "STOP_PROMOTIONS", "title": "Stop promotions"})
    );
}

#[test]
fn quoted_replies_keep_their_context() {
    let reply = first_message(fixture!("message_reply_context"));
    assert_eq!(reply.message.body, "Yes, this one");
    assert_eq!(
        reply.message.detail["context"],
        json!({"message_id": "wamid.HBgMNDQ3MTIzNDU2Nzg5FQIAERgSQUOTEDMSG", "from": "15550123456"})
    );
}

#[test]
fn unknown_and_unsupported_types_pass_through_without_failing() {
    let unsupported = first_message(fixture!("message_unsupported"));
    assert_eq!(unsupported.message.kind, "unsupported");
    assert_eq!(unsupported.message.body, "");
    assert_eq!(unsupported.message.detail["error"]["code"], 131051);
    let order = first_message(fixture!("message_order"));
    assert_eq!(order.message.kind, "order");
    assert_eq!(order.message.body, "");
    assert_eq!(order.message.detail["meta"]["order"]["catalog_id"], "1234");
    // A type from the future, with odd characters in its name.
    let future = json!({"from": "447123456789", "id": "wamid.F", "timestamp": "1", "type": "holo gram!"});
    assert_eq!(message(&future, None, BASE).unwrap().message.kind, "hologram");
    // What cannot be stored at all is an error, not a panic.
    assert!(message(&json!({"type": "text"}), None, BASE).is_err());
    assert!(message(&json!({"from": "not a number", "id": "x", "type": "text"}), None, BASE).is_err());
}

#[test]
fn statuses_become_acks_and_failures_say_what_to_do() {
    for (fixture, expected) in [
        (fixture!("status_sent"), MessageStatus::Sent),
        (fixture!("status_delivered"), MessageStatus::Delivered),
        (fixture!("status_read"), MessageStatus::Read),
    ] {
        let update = first_status(fixture).unwrap();
        assert_eq!(update.status, expected);
        assert_eq!(update.wamid, "wamid.HBgMNDQ3MTIzNDU2Nzg5FQIAERgSOUTGOING");
        assert_eq!(update.at, Some(1_678_900_055_000));
        assert_eq!(update.error, None);
    }
    let failed = first_status(fixture!("status_failed")).unwrap();
    assert_eq!(failed.status, MessageStatus::Failed);
    let error = failed.error.unwrap();
    assert_eq!(error.code, 131047);
    assert!(error.title.contains("template"), "{}", error.title);
    let deleted: Status = serde_json::from_value(json!({"id": "wamid.X", "status": "deleted"})).unwrap();
    assert_eq!(status(&deleted), None);
}

#[test]
fn the_batch_fixture_holds_two_numbers() {
    let batch = fixture!("batch");
    let ids: Vec<String> = batch
        .entry
        .iter()
        .flat_map(|e| &e.changes)
        .filter_map(|c| c.messages()?.ok()?.metadata)
        .map(|m| m.phone_number_id)
        .collect();
    assert_eq!(ids, ["106540352242922", "209876543210987"]);
    let messages: usize = batch
        .entry
        .iter()
        .flat_map(|e| &e.changes)
        .map(|c| c.messages().unwrap().unwrap().messages.len())
        .sum();
    assert_eq!(messages, 3);
    let first: Value = batch.entry[0].changes[0].messages().unwrap().unwrap().messages[0].clone();
    assert_eq!(first["text"]["body"], "first");
}

mod hostile_input {
    //! Whatever Meta (or someone pretending to be Meta, before the signature check) sends,
    //! the parsers answer with a value or an error, never a panic.

    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::super::{message, status};
    use crate::channels::meta::payload::{Notification, Status};
    use crate::channels::meta::signature::HubSignature;

    /// JSON values of any shape, a few levels deep.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("type".to_string()),
                        Just("from".to_string()),
                        Just("id".to_string()),
                        Just("text".to_string()),
                        Just("image".to_string()),
                        Just("interactive".to_string()),
                        Just("context".to_string()),
                        Just("contacts".to_string()),
                        ".{0,6}"
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A message with the fields botlinkd needs, and anything at all in the type's object.
    fn message_like() -> impl Strategy<Value = Value> {
        (
            prop_oneof![
                Just("text"),
                Just("image"),
                Just("location"),
                Just("contacts"),
                Just("reaction"),
                Just("interactive"),
                Just("button"),
                Just("order"),
            ],
            any_json(),
            any_json(),
        )
            .prop_map(|(kind, object, context)| {
                json!({"from": "447123456789", "id": "wamid.P", "timestamp": "1", "type": kind,
                    kind: object, "context": context})
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn messages_of_any_shape_never_panic(raw in prop_oneof![any_json(), message_like()]) {
            if let Ok(n) = message(&raw, Some("name"), "http://h") {
                prop_assert!(!n.wamid.is_empty() || raw["id"] == "");
            }
        }

        #[test]
        fn statuses_and_whole_bodies_never_panic(raw in any_json(), bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(s) = serde_json::from_value::<Status>(raw.clone()) {
                let _ = status(&s);
            }
            let _ = serde_json::from_value::<Notification>(raw);
            let _ = serde_json::from_slice::<Notification>(&bytes);
        }

        #[test]
        fn signature_headers_never_panic(header in ".{0,80}") {
            let _ = HubSignature::parse(Some(&header));
            let prefixed = format!("sha256={header}");
            let _ = HubSignature::parse(Some(&prefixed));
        }
    }
}

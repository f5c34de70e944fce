//! The Graph API request for a business's message (`POST /{version}/{phone-number-id}/messages`
//! bodies), built from a validated [`OutboundMessage`], and the mark-as-read request.

use serde_json::{Value, json};

use crate::messages::OutboundMessage;

/// The request body that sends `message`.
pub fn message_request(message: &OutboundMessage) -> Value {
    let mut request = json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": message.to.as_str(),
    });
    let d = &message.detail;
    match message.kind.as_str() {
        "image" => {
            // An upload is sent by Meta's media id, anything else by link.
            let mut image = match d["media"]["id"].as_str() {
                Some(id) => json!({"id": id}),
                None => json!({"link": d["media"]["url"]}),
            };
            if !message.body.is_empty() {
                image["caption"] = Value::String(message.body.clone());
            }
            request["type"] = "image".into();
            request["image"] = image;
        }
        "buttons" => {
            let buttons: Vec<Value> = d["buttons"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| json!({"type": "reply", "reply": {"id": b["id"], "title": b["title"]}}))
                .collect();
            request["type"] = "interactive".into();
            request["interactive"] = json!({
                "type": "button",
                "body": {"text": message.body},
                "action": {"buttons": buttons},
            });
        }
        "template" => {
            let t = &d["template"];
            let mut template = json!({"name": t["name"], "language": {"code": t["language"]}});
            let params: Vec<Value> = t["params"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| json!({"type": "text", "text": p}))
                .collect();
            if !params.is_empty() {
                template["components"] = json!([{"type": "body", "parameters": params}]);
            }
            request["type"] = "template".into();
            request["template"] = template;
        }
        _ => {
            request["type"] = "text".into();
            request["text"] = json!({"preview_url": false, "body": message.body});
        }
    }
    request
}

/// The request body that marks a customer's message read (blue ticks on their phone).
pub fn read_request(wamid: &str) -> Value {
    json!({"messaging_product": "whatsapp", "status": "read", "message_id": wamid})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::SendRequest;

    fn request(body: Value) -> Value {
        let message = serde_json::from_value::<SendRequest>(body).unwrap().validate().unwrap();
        message_request(&message)
    }

    #[test]
    fn each_kind_becomes_the_documented_graph_body() {
        let text = request(json!({"to": "+44 7123 456789", "body": "Hi"}));
        assert_eq!(text["to"], "447123456789");
        assert_eq!(text["text"]["body"], "Hi");
        let image = request(json!({"to": "447123456789", "media_url": "https://x.test/a.png", "caption": "c"}));
        assert_eq!(image["image"], json!({"link": "https://x.test/a.png", "caption": "c"}));
        let buttons = request(json!({"to": "447123456789", "type": "buttons", "body": "Pick",
            "buttons": [{"id": "y", "title": "Yes"}, {"title": "No"}]}));
        assert_eq!(buttons["interactive"]["type"], "button");
        assert_eq!(
            buttons["interactive"]["action"]["buttons"][1],
            json!({"type": "reply", "reply": {"id": "No", "title": "No"}})
        );
        let template = request(json!({"to": "447123456789", "type": "template",
            "template": {"name": "order_update", "language": "en_GB", "params": ["#1042", "Friday"]}}));
        assert_eq!(template["template"]["language"]["code"], "en_GB");
        assert_eq!(template["template"]["components"][0]["parameters"][1]["text"], "Friday");
        let bare = request(json!({"to": "447123456789", "type": "template", "template": {"name": "hello_world"}}));
        assert!(bare["template"].get("components").is_none());
    }
}

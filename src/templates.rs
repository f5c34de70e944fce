//! Message templates: the catalogue a send of `"type":"template"` is checked against before
//! it is queued.
//!
//! On `meta` the catalogue is the WhatsApp Business Account's, synced from the Graph API
//! (`GET /{version}/{waba-id}/message_templates`, every page) when the channel is set with a
//! `waba_id`, on `POST /v1/templates/sync`, and every hour by housekeeping; it is stored, so
//! every process checks against the same one. A `meta` instance without a `waba_id`, or whose
//! catalogue was never synced, is not checked (Meta still refuses what it does not know, as
//! an `ack.failed`). The sandbox has a few built-in templates ([`sandbox_catalogue`]).
//!
//! A template's parameters are its body's `{{1}}`, `{{2}}`, … placeholders (named ones,
//! `{{name}}`, count too); a send must give exactly that many `params`.

use serde::Serialize;
use serde_json::Value;

use crate::messages::{Invalid, TemplateRef};

/// One template of a catalogue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Template {
    /// Its name.
    pub name: String,
    /// Its language code, e.g. `en_US`.
    pub language: String,
    /// `MARKETING`, `UTILITY` or `AUTHENTICATION`.
    pub category: String,
    /// `APPROVED`, `PENDING`, `REJECTED`, `PAUSED`, `DISABLED`, …; only approved ones go out.
    pub status: String,
    /// The body's text, placeholders included.
    pub body: String,
    /// How many body parameters a send must give.
    pub params: u32,
    /// The buttons' labels.
    pub buttons: Vec<String>,
}

impl Template {
    /// Reads one template as the Graph API lists it; `None` for one without a name or language.
    pub fn from_graph(t: &Value) -> Option<Self> {
        let components = t["components"].as_array().map(Vec::as_slice).unwrap_or_default();
        let body = components
            .iter()
            .find(|c| c["type"].as_str().is_some_and(|k| k.eq_ignore_ascii_case("BODY")))
            .and_then(|c| c["text"].as_str())
            .unwrap_or_default()
            .to_string();
        let buttons = components
            .iter()
            .filter(|c| c["type"].as_str().is_some_and(|k| k.eq_ignore_ascii_case("BUTTONS")))
            .flat_map(|c| c["buttons"].as_array().cloned().unwrap_or_default())
            .filter_map(|b| b["text"].as_str().map(str::to_string))
            .collect();
        Some(Self {
            name: t["name"].as_str()?.to_string(),
            language: t["language"].as_str()?.to_string(),
            category: t["category"].as_str().unwrap_or_default().to_string(),
            status: t["status"].as_str().unwrap_or_default().to_string(),
            params: placeholders(&body),
            body,
            buttons,
        })
    }

    fn built_in(name: &str, language: &str, category: &str, status: &str, body: &str, buttons: &[&str]) -> Self {
        Self {
            name: name.into(),
            language: language.into(),
            category: category.into(),
            status: status.into(),
            params: placeholders(body),
            body: body.into(),
            buttons: buttons.iter().map(|b| b.to_string()).collect(),
        }
    }
}

/// The templates every sandbox instance has, to try template sends and their checks with.
pub fn sandbox_catalogue() -> Vec<Template> {
    vec![
        Template::built_in("hello_world", "en_US", "UTILITY", "APPROVED", "Hello World", &[]),
        Template::built_in(
            "order_update",
            "en_US",
            "UTILITY",
            "APPROVED",
            "Your order {{1}} has shipped and arrives {{2}}.",
            &["Track it"],
        ),
        Template::built_in(
            "order_update",
            "en_GB",
            "UTILITY",
            "APPROVED",
            "Your order {{1}} has been dispatched and arrives {{2}}.",
            &["Track it"],
        ),
        Template::built_in(
            "appointment_reminder",
            "en_US",
            "UTILITY",
            "APPROVED",
            "Hi {{1}}, this is a reminder of your appointment on {{2}} at {{3}}.",
            &["Confirm", "Reschedule"],
        ),
        Template::built_in(
            "spring_sale",
            "en_US",
            "MARKETING",
            "PENDING",
            "Our spring sale starts {{1}}: {{2}} off everything.",
            &[],
        ),
    ]
}

/// How many distinct placeholders a body has.
fn placeholders(body: &str) -> u32 {
    let mut seen: Vec<&str> = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let name = after[..end].trim();
        if !name.is_empty() && !seen.contains(&name) {
            seen.push(name);
        }
        rest = &after[end + 2..];
    }
    seen.len() as u32
}

/// Checks a template send against a catalogue.
pub fn check_send(catalogue: &[Template], wanted: &TemplateRef) -> Result<(), Invalid> {
    let Some(template) = catalogue
        .iter()
        .find(|t| t.name == wanted.name && t.language == wanted.language)
    else {
        let languages: Vec<&str> = catalogue
            .iter()
            .filter(|t| t.name == wanted.name)
            .map(|t| t.language.as_str())
            .collect();
        let hint = if languages.is_empty() {
            "GET /v1/templates lists the templates there are".to_string()
        } else {
            format!("it exists in {}", languages.join(", "))
        };
        return Err(Invalid::new(
            "unknown_template",
            format!(
                "there is no template `{}` in language `{}`: {hint}",
                wanted.name, wanted.language
            ),
        ));
    };
    if !template.status.eq_ignore_ascii_case("APPROVED") {
        return Err(Invalid::new(
            "template_not_approved",
            format!(
                "template `{}` ({}) is {}, not APPROVED: Meta sends only approved templates",
                template.name, template.language, template.status
            ),
        ));
    }
    if wanted.params.len() as u32 != template.params {
        return Err(Invalid::new(
            "template_params",
            format!(
                "template `{}` ({}) takes {} body parameter(s), `params` has {}",
                template.name,
                template.language,
                template.params,
                wanted.params.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn wanted(name: &str, language: &str, params: &[&str]) -> TemplateRef {
        TemplateRef {
            name: name.into(),
            language: language.into(),
            params: params.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn a_graph_template_is_read_with_its_placeholders_and_buttons() {
        let t = Template::from_graph(&json!({
            "name": "order_update", "language": "en_US", "status": "APPROVED", "category": "UTILITY", "id": "1",
            "components": [
                {"type": "HEADER", "format": "TEXT", "text": "Order {{1}}"},
                {"type": "BODY", "text": "Hi {{1}}, order {{2}} ships {{2}} {{ when }}."},
                {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "Thanks"}, {"type": "URL", "text": "Track", "url": "https://x/{{1}}"}]}
            ]
        }))
        .unwrap();
        assert_eq!(t.params, 3);
        assert_eq!(t.buttons, ["Thanks", "Track"]);
        assert!(Template::from_graph(&json!({"language": "en_US"})).is_none());
    }

    #[test]
    fn sends_are_checked_by_name_language_status_and_parameters() {
        let catalogue = sandbox_catalogue();
        assert!(check_send(&catalogue, &wanted("order_update", "en_GB", &["A-1", "today"])).is_ok());
        assert!(check_send(&catalogue, &wanted("hello_world", "en_US", &[])).is_ok());
        let e = check_send(&catalogue, &wanted("order_update", "pt_BR", &["A-1", "hoje"])).unwrap_err();
        assert_eq!(e.code, "unknown_template");
        assert!(e.message.contains("en_US, en_GB"), "{}", e.message);
        assert_eq!(
            check_send(&catalogue, &wanted("nope", "en_US", &[])).unwrap_err().code,
            "unknown_template"
        );
        assert_eq!(
            check_send(&catalogue, &wanted("spring_sale", "en_US", &["Monday", "10%"]))
                .unwrap_err()
                .code,
            "template_not_approved"
        );
        assert_eq!(
            check_send(&catalogue, &wanted("order_update", "en_US", &["A-1"]))
                .unwrap_err()
                .code,
            "template_params"
        );
    }
}

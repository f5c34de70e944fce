//! The settings of an instance on the `meta` channel: its phone-number id and the three
//! secrets it speaks to Meta with (see `crate::channels::meta`, which uses them). They are
//! part of the instance, stored with it (the database is the one place the secrets rest, see
//! `crate::secret`), and shown by the API only as their last characters.

use serde::{Deserialize, Serialize};

use crate::messages::Invalid;
use crate::secret::Secret;

/// What an instance needs to speak to Meta: its phone-number id and three secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaSettings {
    /// The Cloud API's id of the business number (not the number itself).
    pub phone_number_id: String,
    /// The (system user) access token sends and media downloads are made with.
    pub access_token: Secret,
    /// The Meta app's secret, the key of `X-Hub-Signature-256`.
    pub app_secret: Secret,
    /// What Meta's verification handshake must present as `hub.verify_token`.
    pub verify_token: Secret,
    /// The WhatsApp Business Account id, whose message templates botlinkd syncs (optional).
    pub waba_id: Option<String>,
}

/// The form the settings are stored in (the database is the one place the secrets rest).
#[derive(Serialize, Deserialize)]
struct StoredSettings {
    phone_number_id: String,
    access_token: String,
    app_secret: String,
    verify_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    waba_id: Option<String>,
}

impl MetaSettings {
    /// Checks settings given by an operator.
    pub fn new(
        phone_number_id: &str,
        access_token: &str,
        app_secret: &str,
        verify_token: &str,
    ) -> Result<Self, Invalid> {
        let phone_number_id = phone_number_id.trim();
        if phone_number_id.is_empty()
            || phone_number_id.len() > 32
            || !phone_number_id.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(Invalid::new(
                "invalid_phone_number_id",
                "`phone_number_id` is the numeric id Meta shows under WhatsApp > API Setup (not the phone number)",
            ));
        }
        for (field, value) in [
            ("access_token", access_token),
            ("app_secret", app_secret),
            ("verify_token", verify_token),
        ] {
            if value.trim().is_empty() || value.len() > 1024 || value.chars().any(char::is_control) {
                return Err(Invalid::new(
                    "invalid_meta_settings",
                    format!("`{field}` must be 1 to 1024 printable characters"),
                ));
            }
        }
        Ok(Self {
            phone_number_id: phone_number_id.to_string(),
            access_token: Secret::new(access_token.trim()),
            app_secret: Secret::new(app_secret.trim()),
            verify_token: Secret::new(verify_token.trim()),
            waba_id: None,
        })
    }

    /// With the WhatsApp Business Account id (digits, as Meta's WhatsApp Manager shows it).
    pub fn with_waba_id(mut self, waba_id: Option<&str>) -> Result<Self, Invalid> {
        self.waba_id = match waba_id.map(str::trim).filter(|w| !w.is_empty()) {
            None => None,
            Some(w) if w.len() <= 32 && w.bytes().all(|b| b.is_ascii_digit()) => Some(w.to_string()),
            Some(_) => {
                return Err(Invalid::new(
                    "invalid_waba_id",
                    "`waba_id` is the numeric WhatsApp Business Account id Meta shows under WhatsApp > API Setup",
                ));
            }
        };
        Ok(self)
    }

    /// The stored form.
    pub fn to_stored(&self) -> String {
        serde_json::to_string(&StoredSettings {
            phone_number_id: self.phone_number_id.clone(),
            access_token: self.access_token.expose().to_string(),
            app_secret: self.app_secret.expose().to_string(),
            verify_token: self.verify_token.expose().to_string(),
            waba_id: self.waba_id.clone(),
        })
        .expect("settings serialise")
    }

    /// Reads the stored form back.
    pub fn from_stored(stored: &str) -> Result<Self, String> {
        let s: StoredSettings = serde_json::from_str(stored).map_err(|e| format!("meta settings: {e}"))?;
        Ok(Self {
            phone_number_id: s.phone_number_id,
            access_token: Secret::new(s.access_token),
            app_secret: Secret::new(s.app_secret),
            verify_token: Secret::new(s.verify_token),
            waba_id: s.waba_id,
        })
    }

    /// What the API shows of the settings: the id, and hints of the secrets.
    pub fn view(&self) -> MetaSettingsView {
        MetaSettingsView {
            phone_number_id: self.phone_number_id.clone(),
            access_token: self.access_token.hint(),
            app_secret: self.app_secret.hint(),
            verify_token: self.verify_token.hint(),
            waba_id: self.waba_id.clone(),
        }
    }
}

/// The Meta settings as the API shows them: secrets only as their last characters.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct MetaSettingsView {
    /// The Cloud API's phone-number id.
    #[schema(example = "106540352242922")]
    pub phone_number_id: String,
    /// The access token's last four characters.
    #[schema(example = "…x9Qz")]
    pub access_token: String,
    /// The app secret's last four characters.
    pub app_secret: String,
    /// The verify token's last four characters.
    pub verify_token: String,
    /// The WhatsApp Business Account id, if given: its templates are synced.
    pub waba_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_never_print_secrets() {
        let s = MetaSettings::new(" 106540352242922 ", "EAAGtokentokentoken1234", "appsecret", "verify-me").unwrap();
        assert_eq!(MetaSettings::from_stored(&s.to_stored()).unwrap(), s);
        let debug = format!("{s:?}");
        assert!(!debug.contains("EAAG") && !debug.contains("appsecret") && !debug.contains("verify-me"));
        assert_eq!(s.view().access_token, "…1234");
        assert_eq!(
            MetaSettings::new("+44 7700", "t", "s", "v").unwrap_err().code,
            "invalid_phone_number_id"
        );
        assert_eq!(
            MetaSettings::new("123", "", "s", "v").unwrap_err().code,
            "invalid_meta_settings"
        );
    }
}

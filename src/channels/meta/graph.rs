//! The Graph API client: send a message, mark one read, fetch media; and what Meta's
//! errors mean for botlinkd (retry later, fail the message, or stop: the token is bad).
//!
//! The base URL and version are settings, so tests point them at a local stand-in.
//! [`Graph`] offers `post_message`, `media_info` and `download`, follows no redirects, limits
//! every call to 15 s (`meta_request_timeout`) and leaves URLs out of its errors.
//! [`GraphError::verdict`] classifies a failure: retry (HTTP 429, 5xx, Meta's throttling and
//! temporary codes, no answer), fail the message (any other refusal), or needs attention (code
//! 190 or a 401 without a code: the token; 10, 200, 131031, 131042, 133010: permissions, a
//! locked account, an unregistered number, payment). [`ack_error`] gives Meta's well-known
//! codes a title that says what to do.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::events::AckError;
use crate::secret::Secret;

/// Meta's codes for "too many messages for now": retried with backoff.
const THROTTLED: [i64; 6] = [4, 80007, 130429, 131048, 131056, 133016];
/// Meta's codes for a temporary failure on its side: retried with backoff.
const TEMPORARY: [i64; 4] = [1, 2, 131000, 131016];
/// The access token is expired, revoked or lacks permission: the instance needs attention.
pub const TOKEN_INVALID: i64 = 190;
/// Problems of the whole account or number (permissions, account locked, number not
/// registered, payment): no message can go until an operator acts.
const ACCOUNT_PROBLEMS: [i64; 5] = [10, 200, 131031, 131042, 133010];

/// The Graph API, as configured.
#[derive(Clone, Debug)]
pub struct Graph {
    client: reqwest::Client,
    /// For media: no limit on the whole exchange (a large video to a slow client takes
    /// long), only on each wait for bytes.
    downloads: reqwest::Client,
    base_url: String,
    version: String,
}

/// A failed Graph call.
#[derive(Clone, Debug, thiserror::Error)]
pub enum GraphError {
    /// Meta answered with an error.
    #[error("Graph API error {code} (HTTP {status}): {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// Meta's error code.
        code: i64,
        /// Meta's title or message.
        message: String,
        /// The `Retry-After` of a 429, if any.
        retry_after: Option<Duration>,
    },
    /// No answer (connection refused, timeout, unreadable answer).
    #[error("Graph API unreachable: {0}")]
    Transport(String),
}

/// What to do about a failed send.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Try again later (not before this, if Meta said).
    Retry(Option<Duration>),
    /// The message failed for good.
    Fail(AckError),
    /// The message failed because of the token or the account, not the message; the
    /// instance needs attention.
    NeedsAttention(AckError),
}

impl GraphError {
    /// Whether to retry, fail the message, or flag the instance.
    /// Meta's code when this is a throttling answer (HTTP 429 without a code counts as 429).
    pub fn throttle_code(&self) -> Option<i64> {
        match self {
            GraphError::Api { status, code, .. } if THROTTLED.contains(code) => Some(*code),
            GraphError::Api { status: 429, .. } => Some(429),
            _ => None,
        }
    }

    pub fn verdict(&self) -> Verdict {
        match self {
            GraphError::Transport(_) => Verdict::Retry(None),
            GraphError::Api {
                status,
                code,
                message,
                retry_after,
            } => {
                if *code == TOKEN_INVALID || (*status == 401 && *code == 0) {
                    Verdict::NeedsAttention(ack_error(TOKEN_INVALID, None, Some(message)))
                } else if ACCOUNT_PROBLEMS.contains(code) {
                    Verdict::NeedsAttention(ack_error(*code, None, Some(message)))
                } else if *status == 429 || THROTTLED.contains(code) {
                    Verdict::Retry(*retry_after)
                } else if *status >= 500 || TEMPORARY.contains(code) {
                    Verdict::Retry(None)
                } else {
                    Verdict::Fail(ack_error(*code, None, Some(message)))
                }
            }
        }
    }
}

/// The `error` of a failed ack for one of Meta's error codes: the well-known ones get a
/// title that says what to do, the others keep Meta's words.
pub fn ack_error(code: i64, title: Option<&str>, message: Option<&str>) -> AckError {
    let known = match code {
        131047 => Some(
            "Outside the 24-hour customer service window: more than 24 hours have passed since the customer \
             last wrote, so only a template message can be sent",
        ),
        130429 | 131056 => Some("Meta's throughput limit was reached and retries did not get the message through"),
        131026 => Some("Message undeliverable: the number is not on WhatsApp or cannot receive this message"),
        131030 => Some("The recipient is not in the test number's allowed list"),
        131031 => Some("Meta has locked the business account: see the WhatsApp Manager"),
        131042 => Some("A payment problem on the business account stops sending: see the WhatsApp Manager"),
        133010 => Some("The phone number is not registered with the Cloud API"),
        TOKEN_INVALID => Some("Meta refused the access token (expired or revoked): update the instance's token"),
        132000 | 132012 => Some("The template's parameters do not match the approved template"),
        132001 => Some("The template does not exist in that language or is not approved"),
        _ => None,
    };
    let title = match (known, title, message) {
        (Some(known), _, _) => known.to_string(),
        (None, Some(title), _) if !title.trim().is_empty() => title.to_string(),
        (None, _, Some(message)) if !message.trim().is_empty() => message.to_string(),
        _ => "The message could not be delivered".to_string(),
    };
    AckError { code, title }
}

/// What Meta says about a media id.
#[derive(Clone, Debug, Deserialize)]
pub struct MediaInfo {
    /// A short-lived download address (needs the token too).
    pub url: String,
    /// Its MIME type.
    #[serde(default)]
    pub mime_type: Option<String>,
    /// Its size in bytes.
    #[serde(default)]
    pub file_size: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
    #[serde(default)]
    error_user_msg: Option<String>,
    #[serde(default)]
    error_data: Option<ErrorData>,
}

#[derive(Deserialize)]
struct ErrorData {
    #[serde(default)]
    details: Option<String>,
}

impl Graph {
    /// A client for `base_url` (e.g. `https://graph.facebook.com`) and `version` (`v24.0`).
    pub fn new(base_url: &str, version: &str, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("botlinkd/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds");
        let downloads = reqwest::Client::builder()
            .read_timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("botlinkd/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds");
        Self {
            client,
            downloads,
            base_url: base_url.trim_end_matches('/').to_string(),
            version: version.trim_matches('/').to_string(),
        }
    }

    /// `POST /{version}/{phone-number-id}/messages` with a prepared body; answers the
    /// `wamid` Meta gave the message (`None` for a mark-as-read, which has none).
    pub async fn post_message(
        &self,
        phone_number_id: &str,
        token: &Secret,
        body: &str,
    ) -> Result<Option<String>, GraphError> {
        let url = format!("{}/{}/{}/messages", self.base_url, self.version, phone_number_id);
        let response = self
            .client
            .post(url)
            .bearer_auth(token.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(transport)?;
        let value: Value = read_json(response).await?;
        Ok(value["messages"][0]["id"].as_str().map(str::to_string))
    }

    /// `GET /{version}/{waba-id}/message_templates`: every template of a WhatsApp Business
    /// Account, page by page (by the `after` cursor, never by a URL from the answer), at most
    /// 50 pages of 100.
    pub async fn list_templates(&self, waba_id: &str, token: &Secret) -> Result<Vec<Value>, GraphError> {
        let mut templates = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..50 {
            let mut url = reqwest::Url::parse(&format!(
                "{}/{}/{}/message_templates",
                self.base_url, self.version, waba_id
            ))
            .map_err(|e| GraphError::Transport(format!("bad Graph API URL: {e}")))?;
            url.query_pairs_mut()
                .append_pair("fields", "name,language,status,category,components")
                .append_pair("limit", "100");
            if let Some(cursor) = &after {
                url.query_pairs_mut().append_pair("after", cursor);
            }
            let response = self
                .client
                .get(url)
                .bearer_auth(token.expose())
                .send()
                .await
                .map_err(transport)?;
            let page = read_json(response).await?;
            templates.extend(page["data"].as_array().cloned().unwrap_or_default());
            after = page["paging"]["next"]
                .is_string()
                .then(|| page["paging"]["cursors"]["after"].as_str().map(str::to_string))
                .flatten();
            if after.is_none() {
                break;
            }
        }
        Ok(templates)
    }

    /// `POST /{version}/{phone-number-id}/media`: uploads a file for the business to send;
    /// answers Meta's media id.
    pub async fn upload_media(
        &self,
        phone_number_id: &str,
        token: &Secret,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<String, GraphError> {
        let url = format!("{}/{}/{}/media", self.base_url, self.version, phone_number_id);
        let file = reqwest::multipart::Part::bytes(bytes)
            .file_name("upload")
            .mime_str(content_type)
            .map_err(|e| GraphError::Transport(format!("bad content type: {}", e.without_url())))?;
        let form = reqwest::multipart::Form::new()
            .text("messaging_product", "whatsapp")
            .text("type", content_type.to_string())
            .part("file", file);
        let response = self
            .downloads
            .post(url)
            .bearer_auth(token.expose())
            .multipart(form)
            .send()
            .await
            .map_err(transport)?;
        let value = read_json(response).await?;
        value["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| GraphError::Transport("Meta's answer had no media id".into()))
    }

    /// `GET /{version}/{media-id}`: where to download a customer's media.
    pub async fn media_info(&self, media_id: &str, token: &Secret) -> Result<MediaInfo, GraphError> {
        let url = format!(
            "{}/{}/{}",
            self.base_url,
            self.version,
            url::form_urlencoded::byte_serialize(media_id.as_bytes()).collect::<String>()
        );
        let response = self
            .client
            .get(url)
            .bearer_auth(token.expose())
            .send()
            .await
            .map_err(transport)?;
        let value = read_json(response).await?;
        serde_json::from_value(value).map_err(|e| GraphError::Transport(format!("unreadable media answer: {e}")))
    }

    /// Starts downloading media from the address [`Graph::media_info`] gave.
    pub async fn download(&self, url: &str, token: &Secret) -> Result<reqwest::Response, GraphError> {
        let response = self
            .downloads
            .get(url)
            .bearer_auth(token.expose())
            .send()
            .await
            .map_err(transport)?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(api_error(response).await)
        }
    }
}

fn transport(error: reqwest::Error) -> GraphError {
    // Without the URL: it is Meta's or the operator's, but never worth a log line's space.
    GraphError::Transport(error.without_url().to_string())
}

async fn read_json(response: reqwest::Response) -> Result<Value, GraphError> {
    if !response.status().is_success() {
        return Err(api_error(response).await);
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| GraphError::Transport(format!("answer broken off: {}", e.without_url())))?;
    serde_json::from_slice(&body).map_err(|e| GraphError::Transport(format!("unreadable answer: {e}")))
}

async fn api_error(response: reqwest::Response) -> GraphError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(3600)));
    let body = response.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<ErrorEnvelope>(&body) {
        Ok(envelope) => {
            let e = envelope.error;
            // The Cloud API puts the useful sentence in `error_data.details`.
            let message = match (e.error_user_msg, e.error_data.and_then(|d| d.details)) {
                (Some(user), _) => user,
                (None, Some(details)) if !details.is_empty() => format!("{}: {details}", e.message),
                (None, _) => e.message,
            };
            GraphError::Api {
                status,
                code: e.code,
                message,
                retry_after,
            }
        }
        Err(_) => GraphError::Api {
            status,
            code: 0,
            message: format!("HTTP {status}"),
            retry_after,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: i64) -> GraphError {
        GraphError::Api {
            status,
            code,
            message: "m".into(),
            retry_after: None,
        }
    }

    #[test]
    fn errors_are_classified() {
        assert_eq!(api(400, 130429).verdict(), Verdict::Retry(None));
        assert_eq!(api(429, 0).verdict(), Verdict::Retry(None));
        assert_eq!(api(503, 0).verdict(), Verdict::Retry(None));
        assert!(matches!(api(401, 190).verdict(), Verdict::NeedsAttention(e) if e.code == 190));
        assert!(matches!(api(403, 131031).verdict(), Verdict::NeedsAttention(e) if e.code == 131031));
        match api(400, 131047).verdict() {
            Verdict::Fail(e) => assert!(e.title.contains("template"), "{}", e.title),
            other => panic!("{other:?}"),
        }
        assert!(matches!(api(400, 100).verdict(), Verdict::Fail(e) if e.title == "m"));
        assert_eq!(GraphError::Transport("refused".into()).verdict(), Verdict::Retry(None));
    }
}

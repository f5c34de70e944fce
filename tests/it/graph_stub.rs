//! A local stand-in for Meta's Graph API: records every request, answers sends with new
//! wamids (or with the errors a test scripts), and serves media behind the access token.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The token the stand-in accepts.
pub const TOKEN: &str = "EAAGstandinaccesstoken0000000001";

/// One request the stand-in got.
#[derive(Clone, Debug)]
pub struct GraphRequest {
    pub path: String,
    pub authorization: String,
    pub body: Value,
    /// When it arrived.
    pub at: std::time::Instant,
}

/// A scripted error answer for the next send.
#[derive(Clone, Debug)]
pub struct Scripted {
    pub status: u16,
    pub code: i64,
    pub message: &'static str,
}

#[derive(Clone, Default)]
struct StubState {
    base: Arc<Mutex<String>>,
    requests: Arc<Mutex<Vec<GraphRequest>>>,
    script: Arc<Mutex<VecDeque<Scripted>>>,
    /// Media ids Meta has forgotten (their media id expired).
    forgotten: Arc<Mutex<std::collections::HashSet<String>>>,
    /// How many of the next media lookups fail with a 500.
    media_failures: Arc<Mutex<usize>>,
    /// Bytes served instead of [`media_bytes`], by media id.
    files: Arc<Mutex<std::collections::HashMap<String, Vec<u8>>>>,
    /// Errors for the next sends to one recipient, by number.
    script_to: Arc<Mutex<std::collections::HashMap<String, VecDeque<Scripted>>>>,
}

/// The running stand-in.
pub struct GraphStub {
    pub url: String,
    state: StubState,
    shutdown: CancellationToken,
}

impl GraphStub {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind stand-in");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = StubState::default();
        *state.base.lock().unwrap() = url.clone();
        let router = Router::new()
            .route("/{version}/{phone_number_id}/messages", post(send))
            .route("/{version}/{waba_id}/message_templates", get(templates))
            .route("/{version}/{phone_number_id}/media", post(upload))
            .route("/{version}/{media_id}", get(media_info))
            .route("/files/{media_id}", get(media_file))
            .with_state(state.clone());
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(token.cancelled_owned())
                .await;
        });
        Self { url, state, shutdown }
    }

    /// The next sends are answered with these errors, in order.
    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.state.script.lock().unwrap().extend(answers);
    }

    /// The next sends to `to` are answered with these errors, in order; sends to others are
    /// not affected.
    pub fn script_to(&self, to: &str, answers: impl IntoIterator<Item = Scripted>) {
        self.state
            .script_to
            .lock()
            .unwrap()
            .entry(to.to_string())
            .or_default()
            .extend(answers);
    }

    /// Meta forgets this media id: its lookup and download answer 404 from now on.
    pub fn forget(&self, media_id: &str) {
        self.state.forgotten.lock().unwrap().insert(media_id.to_string());
    }

    /// The next `n` media lookups answer 500.
    pub fn fail_media(&self, n: usize) {
        *self.state.media_failures.lock().unwrap() = n;
    }

    /// Serves these bytes for a media id (and reports their size).
    pub fn serve_file(&self, media_id: &str, bytes: Vec<u8>) {
        self.state.files.lock().unwrap().insert(media_id.to_string(), bytes);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<GraphRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Waits until `n` send requests have arrived and returns them.
    pub async fn sends(&self, n: usize) -> Vec<GraphRequest> {
        let deadline = tokio::time::Instant::now() + super::harness::PATIENCE;
        loop {
            let sends: Vec<GraphRequest> = self
                .requests()
                .into_iter()
                .filter(|r| r.path.ends_with("/messages"))
                .collect();
            if sends.len() >= n {
                return sends;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the stand-in got {} sends, waited for {n}",
                sends.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl Drop for GraphStub {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn authorised(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

fn error(status: u16, code: i64, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "Az1"}});
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

fn record(state: &StubState, path: String, headers: &HeaderMap, body: Value) -> usize {
    let mut requests = state.requests.lock().unwrap();
    requests.push(GraphRequest {
        path,
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        body,
        at: std::time::Instant::now(),
    });
    requests.len()
}

async fn send(
    State(state): State<StubState>,
    Path((version, phone_number_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let n = record(
        &state,
        format!("/{version}/{phone_number_id}/messages"),
        &headers,
        body.clone(),
    );
    if !authorised(&headers) {
        return error(401, 190, "Error validating access token: Session has expired.");
    }
    if let Some(scripted) = state.script.lock().unwrap().pop_front() {
        return error(scripted.status, scripted.code, scripted.message);
    }
    let to = body["to"].as_str().unwrap_or_default().to_string();
    if let Some(scripted) = state.script_to.lock().unwrap().get_mut(&to).and_then(|s| s.pop_front()) {
        return error(scripted.status, scripted.code, scripted.message);
    }
    if body["status"] == "read" {
        return axum::Json(json!({"success": true})).into_response();
    }
    axum::Json(json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": body["to"], "wa_id": body["to"]}],
        "messages": [{"id": format!("wamid.STANDIN{n:04}")}],
    }))
    .into_response()
}

/// The media id the stand-in gives every upload.
pub const UPLOADED_MEDIA_ID: &str = "3000000000000001";

/// An upload: recorded with its form fields (the file as text), answered with
/// [`UPLOADED_MEDIA_ID`].
async fn upload(
    State(state): State<StubState>,
    Path((version, phone_number_id)): Path<(String, String)>,
    headers: HeaderMap,
    mut form: axum::extract::Multipart,
) -> Response {
    let mut fields = serde_json::Map::new();
    while let Ok(Some(field)) = form.next_field().await {
        let name = field.name().unwrap_or_default().to_string();
        let text = String::from_utf8_lossy(&field.bytes().await.unwrap_or_default()).into_owned();
        fields.insert(name, Value::String(text));
    }
    record(
        &state,
        format!("/{version}/{phone_number_id}/media"),
        &headers,
        Value::Object(fields),
    );
    if !authorised(&headers) {
        return error(401, 190, "Error validating access token");
    }
    axum::Json(json!({"id": UPLOADED_MEDIA_ID})).into_response()
}

/// The WhatsApp Business Account's templates, as Meta lists them: two a page, the `after`
/// cursor naming the next page.
pub fn stub_templates() -> Vec<Value> {
    vec![
        json!({"name": "order_update", "language": "en_US", "status": "APPROVED", "category": "UTILITY", "id": "9001",
               "components": [{"type": "BODY", "text": "Your order {{1}} ships {{2}}."},
                              {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "Track it"}]}]}),
        json!({"name": "order_update", "language": "pt_BR", "status": "APPROVED", "category": "UTILITY", "id": "9002",
               "components": [{"type": "BODY", "text": "Seu pedido {{1}} chega {{2}}."}]}),
        json!({"name": "welcome", "language": "en_US", "status": "APPROVED", "category": "MARKETING", "id": "9003",
               "components": [{"type": "HEADER", "format": "TEXT", "text": "Hi"}, {"type": "BODY", "text": "Welcome to the shop!"}]}),
        json!({"name": "spring_sale", "language": "en_US", "status": "PENDING", "category": "MARKETING", "id": "9004",
               "components": [{"type": "BODY", "text": "{{1}} off from {{2}}."}]}),
        json!({"name": "account_alert", "language": "en_US", "status": "REJECTED", "category": "UTILITY", "id": "9005",
               "components": [{"type": "BODY", "text": "Your code is {{1}}."}]}),
    ]
}

async fn templates(
    State(state): State<StubState>,
    Path((version, waba_id)): Path<(String, String)>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let after = query.get("after").cloned().unwrap_or_default();
    record(
        &state,
        format!("/{version}/{waba_id}/message_templates?after={after}"),
        &headers,
        Value::Null,
    );
    if !authorised(&headers) {
        return error(401, 190, "Error validating access token");
    }
    let page: usize = after.strip_prefix("page").and_then(|p| p.parse().ok()).unwrap_or(0);
    let all = stub_templates();
    let data: Vec<Value> = all.iter().skip(page * 2).take(2).cloned().collect();
    let mut paging = json!({"cursors": {"before": format!("page{page}"), "after": format!("page{}", page + 1)}});
    if (page + 1) * 2 < all.len() {
        paging["next"] = json!(format!(
            "https://graph.facebook.com/{version}/{waba_id}/message_templates?after=page{}",
            page + 1
        ));
    }
    axum::Json(json!({"data": data, "paging": paging})).into_response()
}

async fn media_info(
    State(state): State<StubState>,
    Path((version, media_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    record(&state, format!("/{version}/{media_id}"), &headers, Value::Null);
    if !authorised(&headers) {
        return error(401, 190, "Error validating access token");
    }
    if state.forgotten.lock().unwrap().contains(&media_id) {
        return error(404, 100, "Unsupported get request. Object does not exist");
    }
    {
        let mut failures = state.media_failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            return error(500, 2, "Service temporarily unavailable");
        }
    }
    let base = state.base.lock().unwrap().clone();
    axum::Json(json!({
        "messaging_product": "whatsapp",
        "url": format!("{base}/files/{media_id}"),
        "mime_type": "image/jpeg",
        "sha256": "IqF9Gdr2dQ5cNoX7hIu0b4fp0pcbQ6zMBwCRNUfBP3c=",
        "file_size": file_of(&state, &media_id).len(),
        "id": media_id,
    }))
    .into_response()
}

fn file_of(state: &StubState, media_id: &str) -> Vec<u8> {
    state
        .files
        .lock()
        .unwrap()
        .get(media_id)
        .cloned()
        .unwrap_or_else(|| media_bytes(media_id))
}

/// The bytes the stand-in serves for a media id.
pub fn media_bytes(media_id: &str) -> Vec<u8> {
    format!("\u{FFFD}JPEG bytes of media {media_id}").into_bytes()
}

async fn media_file(State(state): State<StubState>, Path(media_id): Path<String>, headers: HeaderMap) -> Response {
    record(&state, format!("/files/{media_id}"), &headers, Value::Null);
    if !authorised(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if state.forgotten.lock().unwrap().contains(&media_id) {
        return StatusCode::NOT_FOUND.into_response();
    }
    ([("content-type", "image/jpeg")], file_of(&state, &media_id)).into_response()
}

//! A fake Zulip on loopback: its REST API's `POST /api/v1/messages` and
//! `PATCH /api/v1/messages/{id}`, checking the bot's credentials as Zulip does; and the
//! outgoing webhook's requests, as Zulip posts them to Kiln.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{patch, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::Kiln;

/// The bot's email and API key the fake accepts.
pub const BOT_EMAIL: &str = "kiln-bot@zulip.test";
pub const API_KEY: &str = "zulip-api-key-for-tests";

/// A message as the fake keeps it: where it went, and its content as last edited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub id: u64,
    /// `stream` or `direct`.
    pub kind: String,
    /// The stream's id, or the direct message's recipients (`[12]`).
    pub to: String,
    pub topic: String,
    pub content: String,
    /// How many times it was edited.
    pub edits: usize,
}

/// The fake server and what it received.
#[derive(Debug, Clone)]
pub struct FakeZulip {
    pub addr: SocketAddr,
    sent: Arc<Mutex<Vec<Sent>>>,
}

type Shared = Arc<Mutex<Vec<Sent>>>;

impl FakeZulip {
    /// Starts the fake on `127.0.0.1:0`; it stops with the test's runtime.
    pub async fn start() -> Self {
        let sent: Shared = Arc::default();
        let app = Router::new()
            .route("/api/v1/messages", post(send))
            .route("/api/v1/messages/{id}", patch(edit))
            .with_state(sent.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, sent }
    }

    /// The server's URL, as Kiln's configuration names it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The messages sent to topic `topic` of stream `stream`, in order, as last edited.
    pub fn topic(&self, stream: u64, topic: &str) -> Vec<Sent> {
        self.sent
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|m| m.kind == "stream" && m.to == stream.to_string() && m.topic == topic)
            .cloned()
            .collect()
    }

    /// The direct messages sent to `user`, in order.
    pub fn direct(&self, user: u64) -> Vec<Sent> {
        self.sent
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|m| m.kind == "direct" && m.to == format!("[{user}]"))
            .cloned()
            .collect()
    }
}

/// Whether the call carries the bot's credentials (HTTP basic: email and API key).
fn authorized(headers: &HeaderMap) -> bool {
    use base64::Engine as _;
    let expected =
        base64::engine::general_purpose::STANDARD.encode(format!("{BOT_EMAIL}:{API_KEY}"));
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Basic {expected}"))
}

fn refused(status: StatusCode, msg: &str) -> (StatusCode, Json<Value>) {
    (status, Json(json!({ "result": "error", "msg": msg })))
}

/// Answers like `POST /api/v1/messages`: the new message's `id`.
async fn send(
    State(sent): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    if !authorized(&headers) {
        return refused(StatusCode::UNAUTHORIZED, "Invalid API key");
    }
    let field = |name: &str| form.get(name).cloned().unwrap_or_default();
    let kind = field("type");
    if !matches!(kind.as_str(), "stream" | "direct") || field("content").is_empty() {
        return refused(StatusCode::BAD_REQUEST, "Invalid message");
    }
    let mut sent = sent.lock().expect("not poisoned");
    let id = 1000 + sent.len() as u64;
    sent.push(Sent {
        id,
        kind,
        to: field("to"),
        topic: field("topic"),
        content: field("content"),
        edits: 0,
    });
    (
        StatusCode::OK,
        Json(json!({ "result": "success", "msg": "", "id": id })),
    )
}

/// Answers like `PATCH /api/v1/messages/{id}`; an unknown id is Zulip's 400.
async fn edit(
    State(sent): State<Shared>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    if !authorized(&headers) {
        return refused(StatusCode::UNAUTHORIZED, "Invalid API key");
    }
    let mut sent = sent.lock().expect("not poisoned");
    let Some(message) = sent.iter_mut().find(|m| m.id == id) else {
        return refused(StatusCode::BAD_REQUEST, "Invalid message(s)");
    };
    if let Some(content) = form.get("content") {
        message.content = content.clone();
        message.edits += 1;
    }
    (
        StatusCode::OK,
        Json(json!({ "result": "success", "msg": "" })),
    )
}

/// What Zulip's outgoing webhook posts when `sender` mentions the bot with `text` in topic
/// `topic` of stream `stream` (the fields of Zulip's documented example).
pub fn mention(token: &str, sender: (u64, &str), stream: u64, topic: &str, text: &str) -> Value {
    json!({
        "bot_email": BOT_EMAIL,
        "bot_full_name": "Kiln",
        "data": format!("@**Kiln** {text}"),
        "message": {
            "client": "website",
            "content": format!("@**Kiln** {text}"),
            "display_recipient": "builds",
            "id": 112,
            "is_me_message": false,
            "recipient_id": 20,
            "sender_email": format!("user{}@zulip.test", sender.0),
            "sender_full_name": sender.1,
            "sender_id": sender.0,
            "sender_realm_str": "zulip",
            "stream_id": stream,
            "subject": topic,
            "timestamp": 1527876931,
            "type": "stream"
        },
        "token": token,
        "trigger": "mention"
    })
}

/// Posts an outgoing webhook's `body` to the bot: the HTTP status and the JSON answer.
pub async fn send_command(kiln: &Kiln, body: &Value) -> (u16, Value) {
    let response = kiln
        .http
        .post(kiln.url("/zulip/commands"))
        .json(body)
        .send()
        .await
        .expect("the bot answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

//! A fake Slack on loopback: it takes what Kiln posts to a slash command's `response_url` and
//! to the Web API's `chat.postMessage` and `chat.update`, and signs slash commands the way
//! Slack does.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use kiln_bot::vendors::slack::signature::sign;
use serde_json::{Value, json};

use crate::Kiln;

/// Seconds since the epoch, as Slack stamps its requests.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Posts `body` (a form) to the bot's `path` as Slack would, signed with `secret` at
/// `timestamp`: the HTTP status and the JSON answer.
pub async fn send(
    kiln: &Kiln,
    path: &str,
    body: &str,
    secret: &str,
    timestamp: u64,
) -> (u16, Value) {
    send_to(&kiln.http, &kiln.url(path), body, secret, timestamp).await
}

/// Like [`send`], to the bot's `url`.
pub async fn send_to(
    http: &reqwest::Client,
    url: &str,
    body: &str,
    secret: &str,
    timestamp: u64,
) -> (u16, Value) {
    let response = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", timestamp.to_string())
        .header(
            "x-slack-signature",
            sign(secret.as_bytes(), timestamp, body.as_bytes()),
        )
        .body(body.to_owned())
        .send()
        .await
        .expect("the bot answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// The bot token the fake's Web API accepts.
pub const BOT_TOKEN: &str = "xoxb-kiln-test-token";

/// The fake server and what it received.
#[derive(Debug, Clone)]
pub struct FakeSlack {
    pub addr: SocketAddr,
    received: Arc<Mutex<Received>>,
}

/// What the fake received, in order.
#[derive(Debug, Default)]
struct Received {
    answers: Vec<Value>,
    /// `(method, body)` of each Web API call.
    calls: Vec<(String, Value)>,
}

type Shared = Arc<Mutex<Received>>;

impl FakeSlack {
    /// Starts the fake on `127.0.0.1:0`; it stops with the test's runtime.
    pub async fn start() -> Self {
        let received: Shared = Arc::default();
        let app = Router::new()
            .route("/commands/{team}/{id}/{token}", post(response_url))
            .route("/api/chat.postMessage", post(post_message))
            .route("/api/chat.update", post(update))
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, received }
    }

    /// A `response_url` of this fake, as Slack would send one.
    pub fn response_url(&self, id: u32) -> String {
        format!("http://{}/commands/T1/{id}/token", self.addr)
    }

    /// The Web API's base URL, in place of `https://slack.com/api`.
    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// Every answer received so far.
    pub fn answers(&self) -> Vec<Value> {
        self.received.lock().expect("not poisoned").answers.clone()
    }

    /// The messages posted to `channel`, in order, each as its latest update left it.
    pub fn channel(&self, channel: &str) -> Vec<Value> {
        let received = self.received.lock().expect("not poisoned");
        let mut shown: Vec<Value> = Vec::new();
        for (method, body) in &received.calls {
            if body["channel"] != channel {
                continue;
            }
            match method.as_str() {
                "chat.postMessage" => shown.push(body.clone()),
                _ => {
                    if let Some(earlier) = shown.iter_mut().find(|m| m["ts"] == body["ts"]) {
                        *earlier = body.clone();
                    }
                }
            }
        }
        shown
    }

    /// How many times the message `ts` was updated.
    pub fn updates_of(&self, ts: &str) -> usize {
        let received = self.received.lock().expect("not poisoned");
        received
            .calls
            .iter()
            .filter(|(method, body)| method == "chat.update" && body["ts"] == ts)
            .count()
    }
}

async fn response_url(State(received): State<Shared>, Json(body): Json<Value>) {
    received.lock().expect("not poisoned").answers.push(body);
}

/// Whether the call carries the bot token, as Slack checks it.
fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {BOT_TOKEN}"))
}

/// Answers like `chat.postMessage`: `ok` and the new message's `ts`, which the fake records
/// in the body.
async fn post_message(
    State(received): State<Shared>,
    headers: HeaderMap,
    Json(mut body): Json<Value>,
) -> Json<Value> {
    if !authorized(&headers) {
        return Json(json!({ "ok": false, "error": "invalid_auth" }));
    }
    let mut received = received.lock().expect("not poisoned");
    let ts = format!("1700000000.{:06}", received.calls.len() + 1);
    body["ts"] = ts.clone().into();
    let channel = body["channel"].clone();
    received.calls.push(("chat.postMessage".into(), body));
    Json(json!({ "ok": true, "channel": channel, "ts": ts }))
}

/// Answers like `chat.update`: `ok`, or `message_not_found` for a `ts` never posted.
async fn update(
    State(received): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    if !authorized(&headers) {
        return Json(json!({ "ok": false, "error": "invalid_auth" }));
    }
    let mut received = received.lock().expect("not poisoned");
    let known = received
        .calls
        .iter()
        .any(|(method, posted)| method == "chat.postMessage" && posted["ts"] == body["ts"]);
    if !known {
        return Json(json!({ "ok": false, "error": "message_not_found" }));
    }
    let answer = json!({ "ok": true, "channel": body["channel"], "ts": body["ts"] });
    received.calls.push(("chat.update".into(), body));
    Json(answer)
}

/// A slash-command body, as Slack form-encodes it, typed in channel `C1`.
pub fn slash_command(user_id: &str, user_name: &str, text: &str, response_url: &str) -> String {
    slash_command_in("C1", user_id, user_name, text, response_url)
}

/// A slash-command body, as Slack form-encodes it, typed in `channel`.
pub fn slash_command_in(
    channel: &str,
    user_id: &str,
    user_name: &str,
    text: &str,
    response_url: &str,
) -> String {
    let fields = [
        ("token", "unused"),
        ("team_id", "T1"),
        ("channel_id", channel),
        ("user_id", user_id),
        ("user_name", user_name),
        ("command", "/kiln"),
        ("text", text),
        ("response_url", response_url),
    ];
    serde_urlencoded::to_string(fields).expect("a form")
}

/// A click on a button whose value is `value`, as Slack form-encodes a `block_actions`
/// payload (the fields of Slack's documented example that Kiln reads, and some it does not),
/// from channel `C1`.
pub fn block_action(user_id: &str, value: &str, response_url: &str) -> String {
    let payload = json!({
        "type": "block_actions",
        "user": { "id": user_id, "username": user_id.to_lowercase(), "team_id": "T1" },
        "api_app_id": "A1",
        "token": "unused",
        "team": { "id": "T1", "domain": "acme" },
        "channel": { "id": "C1", "name": "builds" },
        "trigger_id": "1.2.3",
        "response_url": response_url,
        "actions": [{
            "action_id": "logs", "block_id": "b1", "type": "button", "value": value,
            "text": { "type": "plain_text", "text": "Logs" }, "action_ts": "1700000000.000001"
        }]
    });
    serde_urlencoded::to_string([("payload", payload.to_string())]).expect("a form")
}

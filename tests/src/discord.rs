//! A fake Discord REST API on loopback: it records the messages serenity posts and edits,
//! so tests see exactly what Discord would have received.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

/// One message posted to a channel, or an edit of one.
#[derive(Debug, Clone)]
pub struct PostedMessage {
    pub channel_id: String,
    /// The id the fake gave the message (of a post), or the id edited (of an edit).
    pub message_id: String,
    /// An edit of an earlier message.
    pub edit: bool,
    pub body: Value,
}

/// The fake server and what it received.
#[derive(Debug, Clone)]
pub struct FakeDiscord {
    pub addr: SocketAddr,
    posted: Posted,
}

/// Every post and edit, in order.
type Posted = Arc<Mutex<Vec<PostedMessage>>>;

/// The first message id the fake gives; the next ones count up.
const FIRST_MESSAGE_ID: u64 = 1_100_000_000_000_000_100;

impl FakeDiscord {
    /// Starts the fake on `127.0.0.1:0`; it stops with the test's runtime.
    pub async fn start() -> Self {
        let posted: Arc<Mutex<Vec<PostedMessage>>> = Arc::default();
        let app = Router::new()
            .route("/api/v10/channels/{channel}/messages", post(create_message))
            .route(
                "/api/v10/channels/{channel}/messages/{message}",
                axum::routing::patch(edit_message),
            )
            .route(
                "/api/v10/webhooks/{application}/{token}/messages/@original",
                axum::routing::patch(edit_original),
            )
            .route(
                "/api/v10/applications/{application}/commands",
                axum::routing::put(set_commands),
            )
            .with_state(posted.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, posted }
    }

    /// The base URL serenity is pointed at in place of `https://discord.com`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The edits of interaction responses received so far, by interaction token (in
    /// `channel_id`).
    pub fn interaction_answers(&self) -> Vec<PostedMessage> {
        self.messages()
            .into_iter()
            .filter(|m| m.channel_id.starts_with("interaction:"))
            .collect()
    }

    /// Every message posted and edit received so far.
    pub fn messages(&self) -> Vec<PostedMessage> {
        self.posted.lock().expect("not poisoned").clone()
    }

    /// The messages posted to `channel`, in order, each as its latest edit left it.
    pub fn channel(&self, channel: u64) -> Vec<PostedMessage> {
        let channel = channel.to_string();
        let mut shown: Vec<PostedMessage> = Vec::new();
        for message in self.messages() {
            if message.channel_id != channel {
                continue;
            }
            if !message.edit {
                shown.push(message);
            } else if let Some(old) = shown
                .iter_mut()
                .find(|m| m.message_id == message.message_id)
                .and_then(|m| m.body.as_object_mut())
                && let Some(new) = message.body.as_object()
            {
                old.extend(new.clone());
            }
        }
        shown
    }

    /// How many times the message `message_id` was edited.
    pub fn edits_of(&self, message_id: &str) -> usize {
        self.messages()
            .iter()
            .filter(|m| m.edit && m.message_id == message_id)
            .count()
    }
}

/// Answers like Discord's Edit Original Interaction Response.
async fn edit_original(
    State(posted): State<Posted>,
    Path((_application, token)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Json<Value> {
    record(&posted, format!("interaction:{token}"), None, body)
}

/// Answers like Discord's Edit Message: the message as edited.
async fn edit_message(
    State(posted): State<Posted>,
    Path((channel, message)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Json<Value> {
    record(&posted, channel, Some(message), body)
}

/// Answers like Discord's Bulk Overwrite Global Application Commands: the commands, with
/// the ids and version Discord gives them. Recorded as a message to `commands:<app>`.
async fn set_commands(
    State(posted): State<Posted>,
    Path(application): Path<String>,
    Json(body): Json<Value>,
) -> Json<Value> {
    posted.lock().expect("not poisoned").push(PostedMessage {
        channel_id: format!("commands:{application}"),
        message_id: String::new(),
        edit: false,
        body: body.clone(),
    });
    let commands = body
        .as_array()
        .map(|commands| {
            commands
                .iter()
                .enumerate()
                .map(|(i, command)| {
                    let mut command = command.clone();
                    command["id"] = format!("110000000000000{i:04}").into();
                    command["application_id"] = application.clone().into();
                    command["version"] = "1100000000000000001".into();
                    if command.get("type").is_none() {
                        command["type"] = 1.into(); // CHAT_INPUT, Discord's default
                    }
                    command
                })
                .collect()
        })
        .unwrap_or_default();
    Json(Value::Array(commands))
}

/// Answers like Discord's Create Message: the message object it created.
async fn create_message(
    State(posted): State<Posted>,
    Path(channel): Path<String>,
    Json(body): Json<Value>,
) -> Json<Value> {
    record(&posted, channel, None, body)
}

/// Keeps a message, or the edit of message `edited`, and answers with the message object
/// Discord would return.
fn record(posted: &Posted, channel: String, edited: Option<String>, body: Value) -> Json<Value> {
    let content = body["content"].clone();
    // An interaction's answer lives in some channel; any snowflake will do.
    let channel_id = if channel.parse::<u64>().is_ok() {
        channel.clone()
    } else {
        "1100000000000000003".to_owned()
    };
    let mut posted = posted.lock().expect("not poisoned");
    let message_id = edited.clone().unwrap_or_else(|| {
        let posts = posted.iter().filter(|m| !m.edit).count() as u64;
        (FIRST_MESSAGE_ID + posts).to_string()
    });
    posted.push(PostedMessage {
        channel_id: channel.clone(),
        message_id: message_id.clone(),
        edit: edited.is_some(),
        body,
    });
    Json(json!({
        "id": message_id,
        "channel_id": channel_id,
        "author": { "id": "1100000000000000002", "username": "kiln", "discriminator": "0",
                    "global_name": null, "avatar": null, "bot": true },
        "content": content,
        "timestamp": "2026-11-23T12:00:00.000000+00:00",
        "edited_timestamp": null,
        "tts": false,
        "mention_everyone": false,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "pinned": false,
        "type": 0
    }))
}

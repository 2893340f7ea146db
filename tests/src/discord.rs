//! A fake Discord REST API on loopback: it records the messages serenity posts, so tests see
//! exactly what Discord would have received.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

/// One message posted to a channel.
#[derive(Debug, Clone)]
pub struct PostedMessage {
    pub channel_id: String,
    pub body: Value,
}

/// The fake server and what it received.
#[derive(Debug, Clone)]
pub struct FakeDiscord {
    pub addr: SocketAddr,
    posted: Arc<Mutex<Vec<PostedMessage>>>,
}

/// The channel or interaction a message went to, and the message.
type Posted = Arc<Mutex<Vec<PostedMessage>>>;

impl FakeDiscord {
    /// Starts the fake on `127.0.0.1:0`; it stops with the test's runtime.
    pub async fn start() -> Self {
        let posted: Arc<Mutex<Vec<PostedMessage>>> = Arc::default();
        let app = Router::new()
            .route("/api/v10/channels/{channel}/messages", post(create_message))
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

    /// Every message received so far.
    pub fn messages(&self) -> Vec<PostedMessage> {
        self.posted.lock().expect("not poisoned").clone()
    }
}

/// Answers like Discord's Edit Original Interaction Response.
async fn edit_original(
    State(posted): State<Posted>,
    Path((_application, token)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Json<Value> {
    record(&posted, format!("interaction:{token}"), body)
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
    record(&posted, channel, body)
}

/// Keeps a message and answers with the message object Discord would return.
fn record(posted: &Posted, channel: String, body: Value) -> Json<Value> {
    let content = body["content"].clone();
    // An interaction's answer lives in some channel; any snowflake will do.
    let channel_id = if channel.parse::<u64>().is_ok() {
        channel.clone()
    } else {
        "1100000000000000003".to_owned()
    };
    posted.lock().expect("not poisoned").push(PostedMessage {
        channel_id: channel.clone(),
        body,
    });
    Json(json!({
        "id": "1100000000000000001",
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

//! `POST /zulip/commands`: what Zulip's outgoing webhook bot posts when someone mentions it
//! in a stream or sends it a direct message. The request carries the bot's token, checked in
//! constant time before anything else; the command's answer is the response's `content`,
//! which Zulip posts as the bot where the command was given. A command that takes longer
//! than [`ANSWER_WITHIN`] is answered "working on it", and its result follows through the
//! REST API.

use kiln_shared::ident::ChannelName;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Place;
use super::dialect::inert_mentions;
use crate::app::App;
use crate::commands::{self, Actor};
use crate::http::respond::error;

/// How long a command may take to be answered in the webhook's response: Zulip waits 10 s
/// by default, and a slow answer must not be lost to its timeout.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// The outgoing webhook's request, the fields Kiln uses.
#[derive(Debug, Deserialize)]
struct Outgoing {
    /// The message's text, the bot's mention included.
    data: String,
    /// The bot's token, which Kiln's configuration names.
    token: String,
    message: Message,
}

#[derive(Debug, Deserialize)]
struct Message {
    sender_id: u64,
    #[serde(default)]
    sender_full_name: String,
    /// `stream` or `private`.
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    stream_id: Option<u64>,
    /// The topic.
    #[serde(default)]
    subject: String,
}

/// A command from Zulip, its token checked.
#[derive(Debug)]
pub struct ZulipCommand {
    /// The command, the bot's mention taken off.
    pub text: String,
    pub sender_id: u64,
    pub sender_name: String,
    /// The stream's topic it was given in, or the direct message to answer.
    pub topic: Option<(u64, String)>,
}

impl ZulipCommand {
    /// Where the command was given, as Zulip places go.
    fn place(&self) -> Place<'_> {
        match &self.topic {
            Some((stream, topic)) => Place::Topic {
                stream: *stream,
                topic,
            },
            None => Place::Direct {
                user: self.sender_id,
            },
        }
    }
}

/// Whether `token` is `secret`. Both are hashed first, so the comparison takes the same time
/// whatever their lengths and contents.
fn token_matches(secret: &[u8], token: &str) -> bool {
    Sha256::digest(secret)
        .ct_eq(&Sha256::digest(token.as_bytes()))
        .into()
}

/// The command in `data`: a leading mention of the bot (`@**Kiln**`, `@_**Kiln**`) taken
/// off.
fn command_text(data: &str) -> String {
    let data = data.trim();
    let rest = data
        .strip_prefix("@**")
        .or_else(|| data.strip_prefix("@_**"))
        .and_then(|rest| rest.split_once("**").map(|(_, after)| after))
        .unwrap_or(data);
    rest.trim().to_owned()
}

impl FromRequest<App> for ZulipCommand {
    type Rejection = Response;

    async fn from_request(request: Request, app: &App) -> Result<Self, Response> {
        let Some(zulip) = &app.config.zulip else {
            return Err(error(StatusCode::NOT_FOUND, "Zulip is not configured"));
        };
        let body = Bytes::from_request(request, app)
            .await
            .map_err(IntoResponse::into_response)?;
        let (token, command) =
            ZulipCommand::read(&body).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
        if !token_matches(zulip.token.expose_secret().as_bytes(), &token) {
            tracing::warn!("refused a Zulip request with a wrong token");
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "the token does not match the outgoing webhook's",
            ));
        }
        Ok(command)
    }
}

impl ZulipCommand {
    /// The token and the command of an outgoing webhook's `body`, the token not yet checked;
    /// or why it is not one.
    pub fn read(body: &[u8]) -> Result<(String, Self), String> {
        let outgoing: Outgoing = serde_json::from_slice(body)
            .map_err(|e| format!("not a Zulip outgoing webhook: {e}"))?;
        let message = outgoing.message;
        let topic = match (message.kind.as_str(), message.stream_id) {
            ("stream", Some(stream)) if !message.subject.is_empty() => {
                Some((stream, message.subject))
            }
            _ => None,
        };
        let command = Self {
            text: command_text(&outgoing.data),
            sender_id: message.sender_id,
            sender_name: message.sender_full_name,
            topic,
        };
        Ok((outgoing.token, command))
    }
}

/// Carries the command out and answers it in the response, or, past [`ANSWER_WITHIN`],
/// through the REST API once it is done.
pub async fn handle_zulip_command(State(app): State<App>, command: ZulipCommand) -> Response {
    let text = command.text.clone();
    let mut running = tokio::spawn(carry_out(app.clone(), command));
    match tokio::time::timeout(ANSWER_WITHIN, &mut running).await {
        Ok(Ok((_, answer))) => Json(json!({ "content": answer })).into_response(),
        Ok(Err(_)) => {
            Json(json!({ "content": "Kiln could not do that just now." })).into_response()
        }
        Err(_) => {
            tokio::spawn(async move {
                let Ok((channel, answer)) = running.await else {
                    return;
                };
                if let Err(error) = app.chat.post(&channel, &answer, None, None).await {
                    tracing::error!(%channel, error = format!("{error:#}"), "cannot post a command's late answer to Zulip");
                }
            });
            let working = inert_mentions(&format!("Working on `{text}`…"));
            Json(json!({ "content": working })).into_response()
        }
    }
}

/// Carries `command` out: where to answer, and the answer.
async fn carry_out(app: App, command: ZulipCommand) -> (ChannelName, String) {
    let id = format!("zulip:{}", command.sender_id);
    let name = if command.sender_name.is_empty() {
        id.clone()
    } else {
        command.sender_name.clone()
    };
    let channel = command.place().channel();
    let actor = Actor {
        name: &name,
        via: "zulip",
        id: &id,
        operator: false,
        channel: Some(&channel),
        writes: None,
        roles: &[],
    };
    let reply = commands::run(&app, actor, &command.text).await;
    (channel.clone(), inert_mentions(&reply.text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bots_mention_is_taken_off() {
        assert_eq!(command_text("@**Kiln** build acme/api"), "build acme/api");
        assert_eq!(command_text("  @_**Kiln CI|7** status "), "status");
        assert_eq!(command_text("logs 12"), "logs 12");
        assert_eq!(command_text("@**Kiln**"), "");
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(token_matches(
            b"xvOzfurIutdRRVLzpXrIIHXJvNfaJLJ0",
            "xvOzfurIutdRRVLzpXrIIHXJvNfaJLJ0"
        ));
        assert!(!token_matches(
            b"xvOzfurIutdRRVLzpXrIIHXJvNfaJLJ0",
            "xvOzfurIutdRRVLzpXrIIHXJvNfaJLJ"
        ));
        assert!(!token_matches(b"secret", ""));
    }

    #[test]
    fn reads_zulips_example_payload() {
        let body = include_bytes!("../../../../tests/fixtures/zulip-outgoing-webhook.json");
        let outgoing: Outgoing = serde_json::from_slice(body).expect("a payload");
        assert_eq!(outgoing.token, "xvOzfurIutdRRVLzpXrIIHXJvNfaJLJ0");
        assert_eq!(outgoing.message.kind, "stream");
        assert_eq!(outgoing.message.stream_id, Some(5));
        assert_eq!(outgoing.message.subject, "Verona2");
        assert_eq!(outgoing.message.sender_id, 5);
        assert_eq!(
            command_text(&outgoing.data),
            "Zulip is the world\u{2019}s most productive group chat!"
        );
    }
}

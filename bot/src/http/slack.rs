//! `POST /slack/commands`: Slack's slash commands. The request is verified (signature, five
//! minutes) before anything else; it is answered at once, privately, and the command's
//! result follows through the `response_url` Slack gave.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde_json::json;

use super::{error, header, unix_now};
use crate::app::App;
use crate::commands::{self, Actor};
use crate::slack::{SlashCommand, escape, signature};

pub async fn handle_slack_command(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(slack) = &app.config.slack else {
        return error(StatusCode::NOT_FOUND, "Slack is not configured");
    };
    let header = |name: &str| header(&headers, name);
    let now = unix_now();
    if let Err(why) = signature::verify(
        slack.signing_secret.expose_secret().as_bytes(),
        header("x-slack-request-timestamp"),
        &body,
        header("x-slack-signature"),
        now,
    ) {
        tracing::warn!(%why, "refused a Slack request");
        return error(StatusCode::UNAUTHORIZED, why.to_string());
    }
    let command: SlashCommand = match serde_urlencoded::from_bytes(&body) {
        Ok(command) => command,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, format!("not a slash command: {e}"));
        }
    };
    if !slack.teams.is_empty() && !slack.teams.contains(&command.team_id) {
        let refusal = "Kiln does not take commands from this workspace.";
        return Json(json!({ "response_type": "ephemeral", "text": refusal })).into_response();
    }
    let text = command.text.trim().to_owned();
    let ack = format!("Working on `{}`…", escape(&text));
    tokio::spawn(answer(app.clone(), command));
    Json(json!({ "response_type": "ephemeral", "text": ack })).into_response()
}

/// Carries the command out and posts the answer to its `response_url`.
async fn answer(app: App, command: SlashCommand) {
    let id = format!("slack:{}", command.user_id);
    let name = if command.user_name.is_empty() {
        command.user_id.clone()
    } else {
        command.user_name.clone()
    };
    let channel = format!("slack:{}", command.channel_id);
    let actor = Actor {
        name: &name,
        via: "slack",
        id: &id,
        operator: false,
        channel: (!command.channel_id.is_empty()).then_some(channel.as_str()),
    };
    let reply = commands::run(&app, actor, &command.text).await;
    let message = json!({ "response_type": "ephemeral", "text": escape(&reply.text) });
    let posted = app
        .http
        .post(&command.response_url)
        .json(&message)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status);
    if let Err(error) = posted {
        tracing::error!(%error, user = %id, "cannot post a command's answer to Slack");
    }
}

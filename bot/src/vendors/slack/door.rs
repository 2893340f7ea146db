//! `POST /slack/commands` and `POST /slack/actions`: Slack's slash commands, and clicks on the
//! buttons of Kiln's cards. The request is verified (signature, five minutes) before anything
//! else; it is answered at once, privately, and the command's result follows through the
//! `response_url` Slack gave.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kiln_shared::ident::ChannelName;
use secrecy::ExposeSecret;
use serde_json::json;

use super::forms;
use super::{escape, signature};
use crate::app::App;
use crate::commands::{self, Actor};
use crate::config;
use crate::http::respond::{error, header, unix_now};

/// What Kiln answers a workspace it does not serve.
const OTHER_WORKSPACE: &str = "Kiln does not take commands from this workspace.";

/// A command to carry out, from a slash command or a click.
struct Request {
    user_id: String,
    user_name: String,
    channel_id: String,
    text: String,
    response_url: String,
}

pub async fn handle_slack_command(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let slack = match verified(&app, &headers, &body) {
        Ok(slack) => slack,
        Err((status, why)) => return error(status, why),
    };
    let command = match forms::slash_command(&body) {
        Ok(command) => command,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if !slack.teams.is_empty() && !slack.teams.contains(&command.team_id) {
        return Json(json!({ "response_type": "ephemeral", "text": OTHER_WORKSPACE }))
            .into_response();
    }
    let text = command.text.trim().to_owned();
    let ack = format!("Working on `{}`…", escape(&text));
    tokio::spawn(answer(
        app.clone(),
        Request {
            user_name: command.user_name,
            user_id: command.user_id,
            channel_id: command.channel_id,
            text,
            response_url: command.response_url,
        },
    ));
    Json(json!({ "response_type": "ephemeral", "text": ack })).into_response()
}

/// A click on a card's button: the command it carries, for the person who clicked. A link
/// button's click, which carries none, is acknowledged and nothing more.
pub async fn handle_slack_action(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let slack = match verified(&app, &headers, &body) {
        Ok(slack) => slack,
        Err((status, why)) => return error(status, why),
    };
    let click = match forms::block_actions(&body) {
        Ok(click) => click,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let team = click
        .team
        .as_ref()
        .map(|t| t.id.as_str())
        .unwrap_or_default();
    if !slack.teams.is_empty() && !slack.teams.iter().any(|t| t == team) {
        return error(StatusCode::FORBIDDEN, OTHER_WORKSPACE);
    }
    let command = click.actions.iter().find_map(|a| a.value.clone());
    if click.kind != "block_actions" || command.is_none() {
        return StatusCode::OK.into_response();
    }
    tokio::spawn(answer(
        app.clone(),
        Request {
            user_name: click.user.username,
            user_id: click.user.id,
            channel_id: click.channel.map(|c| c.id).unwrap_or_default(),
            text: command.unwrap_or_default(),
            response_url: click.response_url,
        },
    ));
    StatusCode::OK.into_response()
}

/// Slack's configuration, if the request is signed with its secret within five minutes;
/// otherwise why it is refused.
fn verified<'a>(
    app: &'a App,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<&'a config::Slack, (StatusCode, String)> {
    let Some(slack) = &app.config.slack else {
        return Err((StatusCode::NOT_FOUND, "Slack is not configured".into()));
    };
    let header = |name: &str| header(headers, name);
    if let Err(why) = signature::verify(
        slack.signing_secret.expose_secret().as_bytes(),
        header("x-slack-request-timestamp"),
        body,
        header("x-slack-signature"),
        unix_now(),
    ) {
        tracing::warn!(%why, "refused a Slack request");
        return Err((StatusCode::UNAUTHORIZED, why.to_string()));
    }
    Ok(slack)
}

/// Carries the command out and posts the answer, privately, to its `response_url`.
async fn answer(app: App, request: Request) {
    let id = format!("slack:{}", request.user_id);
    let name = if request.user_name.is_empty() {
        request.user_id.clone()
    } else {
        request.user_name.clone()
    };
    let channel = ChannelName::from(format!("slack:{}", request.channel_id));
    let actor = Actor {
        name: &name,
        via: "slack",
        id: &id,
        operator: false,
        channel: (!request.channel_id.is_empty()).then_some(&channel),
        writes: None,
        roles: &[],
    };
    let reply = commands::run(&app, actor, &request.text).await;
    let message = json!({ "response_type": "ephemeral", "text": escape(&reply.text) });
    let posted = app
        .http
        .post(&request.response_url)
        .json(&message)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status);
    if let Err(error) = posted {
        tracing::error!(%error, user = %id, "cannot post a command's answer to Slack");
    }
}

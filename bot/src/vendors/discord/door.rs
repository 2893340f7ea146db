//! `POST /discord/interactions`: Discord's slash commands and the buttons of Kiln's build
//! cards. The request is verified (Ed25519 over timestamp and body, five minutes) before
//! anything else; a PING is answered PONG; a command or a click is answered at once with a
//! deferred, private response, which the command's result then replaces.

use kiln_shared::ident::ChannelName;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::interactions::{
    APPLICATION_COMMAND, Interaction, Interactions, MESSAGE_COMPONENT, PING,
};
use crate::app::App;
use crate::commands::{self, Actor};
use crate::http::respond::{error, header, unix_now};

/// Discord's interaction callback types and message flags Kiln answers with.
const PONG: u8 = 1;
const CHANNEL_MESSAGE: u8 = 4;
const DEFERRED_CHANNEL_MESSAGE: u8 = 5;
const EPHEMERAL: u64 = 1 << 6;

pub async fn handle_interaction(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(discord) = app.interactions.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "Discord slash commands are not configured",
        );
    };
    let header = |name: &str| header(&headers, name);
    let now = unix_now();
    if let Err(why) = discord.verify(
        header("x-signature-ed25519"),
        header("x-signature-timestamp"),
        &body,
        now,
    ) {
        tracing::warn!(why, "refused a Discord request");
        return error(StatusCode::UNAUTHORIZED, why);
    }
    let interaction: Interaction = match serde_json::from_slice(&body) {
        Ok(interaction) => interaction,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("not an interaction: {e}")),
    };
    match interaction.kind {
        PING => Json(json!({ "type": PONG })).into_response(),
        APPLICATION_COMMAND | MESSAGE_COMPONENT if !allowed_here(&app, &interaction) => {
            Json(json!({
                "type": CHANNEL_MESSAGE,
                "data": { "content": "Kiln does not take commands from here.", "flags": EPHEMERAL }
            }))
            .into_response()
        }
        APPLICATION_COMMAND | MESSAGE_COMPONENT => {
            tokio::spawn(answer(app, discord, interaction));
            Json(json!({ "type": DEFERRED_CHANNEL_MESSAGE, "data": { "flags": EPHEMERAL } }))
                .into_response()
        }
        other => error(
            StatusCode::BAD_REQUEST,
            format!("Kiln does not take interactions of type {other}"),
        ),
    }
}

/// Whether the configuration lets the interaction's server (or a direct message) use Kiln.
fn allowed_here(app: &App, interaction: &Interaction) -> bool {
    let guilds = app
        .config
        .discord
        .as_ref()
        .map_or(&[][..], |d| &d.guilds[..]);
    guilds.is_empty()
        || interaction
            .guild_id
            .as_deref()
            .and_then(|g| g.parse::<u64>().ok())
            .is_some_and(|g| guilds.contains(&g))
}

/// Carries the command out and puts its result in place of the deferred response.
async fn answer(app: App, discord: Arc<Interactions>, interaction: Interaction) {
    let (id, name) = match interaction.user() {
        Some(user) => (format!("discord:{}", user.id), user.username.clone()),
        None => ("discord:unknown".to_owned(), "someone".to_owned()),
    };
    let channel = interaction
        .channel_id
        .as_ref()
        .map(|c| ChannelName::from(format!("discord:{c}")));
    let roles = interaction.roles();
    let actor = Actor {
        name: &name,
        via: "discord",
        id: &id,
        operator: false,
        channel: channel.as_ref(),
        writes: None,
        roles: &roles,
    };
    let text = interaction.command_text().unwrap_or_default();
    let reply = commands::run(&app, actor, &text).await;
    if let Err(error) = discord.answer(&interaction.token, &reply.text).await {
        tracing::error!(%error, user = %id, "cannot answer a Discord command");
    }
}

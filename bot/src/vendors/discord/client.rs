//! Discord's REST API, through serenity's client: posting and editing cards.

use std::time::Duration;

use secrecy::ExposeSecret;
use serenity::all::{
    ApplicationId, ButtonStyle, ChannelId, CreateActionRow, CreateAllowedMentions, CreateButton,
    CreateMessage, EditMessage, Http, HttpBuilder, MessageId, UserId,
};

use anyhow::Context as _;
use async_trait::async_trait;

use crate::config::{self, Person};
use crate::notify::chat::{Buttons, ChatClient};

/// Discord's limit on a message's content, in characters.
pub const MAX_MESSAGE_CHARS: usize = 2000;

/// How long one request to Discord may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// serenity's REST client for `config`; `api_url`, when set, replaces `https://discord.com`.
pub fn http_client(config: &config::Discord) -> Http {
    let mut builder = HttpBuilder::new(config.token.expose_secret());
    if let Ok(client) = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build() {
        builder = builder.client(client);
    }
    if let Some(api_url) = &config.api_url {
        // A proxy (or a test's fake) has no rate limits of Discord's to mirror.
        builder = builder
            .proxy(api_url.trim_end_matches('/'))
            .ratelimiter_disabled(true);
    }
    if let Some(id) = config.application_id {
        builder = builder.application_id(ApplicationId::new(id));
    }
    builder.build()
}

/// Posts and edits messages in Discord channels, as the bot user.
pub struct Discord {
    http: Http,
}

impl std::fmt::Debug for Discord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discord").finish_non_exhaustive()
    }
}

/// A message's content: cut to Discord's limit.
fn content(text: &str) -> String {
    text.chars().take(MAX_MESSAGE_CHARS).collect()
}

/// The buttons as one row of Discord components: each command button carries its command
/// as its id, which a click sends back as an interaction.
fn components(buttons: &Buttons) -> Vec<CreateActionRow> {
    let mut row: Vec<CreateButton> = buttons
        .commands
        .iter()
        .map(|(label, command)| {
            CreateButton::new(command.clone())
                .label(*label)
                .style(ButtonStyle::Secondary)
        })
        .collect();
    row.push(CreateButton::new_link(buttons.link.1.clone()).label(buttons.link.0));
    vec![CreateActionRow::Buttons(row)]
}

impl Discord {
    /// A client for the configured bot.
    pub fn new(config: &config::Discord) -> Self {
        Self {
            http: http_client(config),
        }
    }
}

#[async_trait]
impl ChatClient for Discord {
    async fn post(
        &self,
        id: &str,
        text: &str,
        buttons: Option<&Buttons>,
        ping: Option<&Person>,
    ) -> anyhow::Result<String> {
        let notify = ping.and_then(|p| p.discord);
        let mentions = CreateAllowedMentions::new().users(notify.map(UserId::new));
        let mut message = CreateMessage::new()
            .content(content(text))
            .allowed_mentions(mentions);
        if let Some(buttons) = buttons {
            message = message.components(components(buttons));
        }
        Ok(channel(id)?
            .send_message(&self.http, message)
            .await?
            .id
            .to_string())
    }

    async fn edit(
        &self,
        id: &str,
        message: &str,
        text: &str,
        buttons: Option<&Buttons>,
    ) -> anyhow::Result<()> {
        let message = MessageId::new(message.parse().context("a Discord message id")?);
        let mut edit = EditMessage::new()
            .content(content(text))
            .allowed_mentions(CreateAllowedMentions::new());
        if let Some(buttons) = buttons {
            edit = edit.components(components(buttons));
        }
        channel(id)?.edit_message(&self.http, message, edit).await?;
        Ok(())
    }
}

/// The channel `id` names.
fn channel(id: &str) -> anyhow::Result<ChannelId> {
    let id: u64 = id.parse().context("a Discord channel id")?;
    Ok(ChannelId::new(id))
}

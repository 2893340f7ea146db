//! Discord, through serenity's REST client. Only this module knows Discord's API.

use secrecy::ExposeSecret;
use serenity::all::{
    ApplicationId, ChannelId, CreateAllowedMentions, CreateMessage, Http, HttpBuilder, UserId,
};

use crate::config;

/// Discord's limit on a message's content, in characters.
pub const MAX_MESSAGE_CHARS: usize = 2000;

/// serenity's REST client for `config`; `api_url`, when set, replaces `https://discord.com`.
pub fn http_client(config: &config::Discord) -> Http {
    let mut builder = HttpBuilder::new(config.token.expose_secret());
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

/// Posts messages to one Discord channel.
pub struct DiscordChannel {
    http: Http,
    channel: ChannelId,
}

impl std::fmt::Debug for DiscordChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscordChannel")
            .field("channel", &self.channel)
            .finish()
    }
}

impl DiscordChannel {
    /// A client for the configured channel; `api_url`, when set, replaces
    /// `https://discord.com` in every request.
    pub fn new(config: &config::Discord) -> Self {
        Self {
            http: http_client(config),
            channel: ChannelId::new(config.channel_id),
        }
    }

    /// Names the channel for the once-per-channel notification guard.
    pub fn channel_key(&self) -> String {
        format!("discord:{}", self.channel)
    }

    /// Posts `text`, cut to Discord's limit, with every mention disabled but that of
    /// `notify`: nothing a commit author wrote can ping a channel.
    pub async fn post(&self, text: &str, notify: Option<u64>) -> serenity::Result<()> {
        let content: String = text.chars().take(MAX_MESSAGE_CHARS).collect();
        let mentions = CreateAllowedMentions::new().users(notify.map(UserId::new));
        let message = CreateMessage::new()
            .content(content)
            .allowed_mentions(mentions);
        self.channel.send_message(&self.http, message).await?;
        Ok(())
    }
}

//! The notifier: a build's card in every channel that follows it, edited in place as the
//! build runs, and a notification of its failure that names the author ([`cards`]).
//!
//! Rendering is pure ([`render`]); posting is per vendor ([`discord`], [`slack`]). A channel
//! is named `discord:<id>` or `slack:<id>`; the configured Discord channel follows every
//! repository, other channels what they `subscribe` to.

pub mod cards;
pub mod discord;
pub mod render;
pub mod slack;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, anyhow};
use kiln_shared::build::BuildStatus;
use kiln_shared::subscription::Subscription;
use kiln_shared::view::BuildMessage;
use serenity::all::{ChannelId, MessageId};

use crate::app::App;
use crate::config::Config;
use render::Dialect;

/// The longest Kiln waits for a chat vendor to take one message, rate limits included; a
/// message it could not take is tried again by a later pass of the card keeper.
const CHAT_TIMEOUT: Duration = Duration::from_secs(20);

/// What the configured Discord channel's implicit subscription names as its repository.
const EVERY_REPOSITORY: &str = "*";

/// A card's buttons: commands a click gives, as `(label, command)`, and a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buttons {
    pub commands: Vec<(&'static str, String)>,
    pub link: (&'static str, String),
}

impl Buttons {
    /// A build card's: its logs, a retry once it has ended, and its page.
    pub fn card(message: &BuildMessage) -> Self {
        let id = message.build_id;
        let mut commands = vec![("Logs", format!("logs {id}"))];
        if message.finished {
            commands.push(("Retry", format!("retry {id}")));
        }
        Self {
            commands,
            link: ("Open", message.url.clone()),
        }
    }
}

/// A channel, parsed from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel<'a> {
    Discord(ChannelId),
    Slack(&'a str),
}

impl<'a> Channel<'a> {
    fn parse(name: &'a str) -> Option<Self> {
        match name.split_once(':')? {
            ("discord", id) => id
                .parse::<u64>()
                .ok()
                .filter(|id| *id != 0)
                .map(|id| Self::Discord(ChannelId::new(id))),
            ("slack", id) if !id.is_empty() => Some(Self::Slack(id)),
            _ => None,
        }
    }

    fn dialect(self) -> Dialect {
        match self {
            Self::Discord(_) => Dialect::Discord,
            Self::Slack(_) => Dialect::Slack,
        }
    }
}

/// The chat vendors Kiln posts to, as configured.
#[derive(Debug)]
pub struct Chat {
    discord: Option<discord::Discord>,
    /// The Discord channel that follows every repository.
    discord_channel: Option<u64>,
    slack: Option<slack::Slack>,
}

impl Chat {
    pub fn new(config: &Config, http: &reqwest::Client) -> Self {
        Self {
            discord: config.discord.as_ref().map(discord::Discord::new),
            discord_channel: config.discord.as_ref().map(|d| d.channel_id),
            slack: config
                .slack
                .as_ref()
                .and_then(|s| slack::Slack::new(s, http.clone())),
        }
    }

    /// Why Kiln cannot post to `channel`, if it cannot.
    pub fn unreachable(&self, channel: &str) -> Option<String> {
        match Channel::parse(channel) {
            None => Some(format!(
                "`{channel}` is not a channel Kiln knows how to post to."
            )),
            Some(Channel::Discord(_)) if self.discord.is_none() => {
                Some("Kiln has no Discord bot token: it cannot post to Discord channels.".into())
            }
            Some(Channel::Slack(_)) if self.slack.is_none() => Some(
                "Kiln has no Slack bot token (`[slack] bot_token`): it cannot post to Slack \
                 channels."
                    .into(),
            ),
            Some(_) => None,
        }
    }

    /// The dialect `channel` is written in.
    pub fn dialect(channel: &str) -> Option<Dialect> {
        Channel::parse(channel).map(Channel::dialect)
    }

    /// Posts `text` to `channel`, mentioning `notify` (a Discord user id: Slack mentions
    /// are in the text); returns the message's id.
    pub async fn post(
        &self,
        channel: &str,
        text: &str,
        buttons: Option<&Buttons>,
        notify: Option<u64>,
    ) -> anyhow::Result<String> {
        let posted =
            tokio::time::timeout(CHAT_TIMEOUT, self.post_now(channel, text, buttons, notify));
        posted
            .await
            .map_err(|_| anyhow!("{channel} took longer than {CHAT_TIMEOUT:?}"))?
    }

    async fn post_now(
        &self,
        channel: &str,
        text: &str,
        buttons: Option<&Buttons>,
        notify: Option<u64>,
    ) -> anyhow::Result<String> {
        match Channel::parse(channel) {
            Some(Channel::Discord(id)) => {
                let discord = self.discord.as_ref().context("Discord is not configured")?;
                Ok(discord.post(id, text, buttons, notify).await?)
            }
            Some(Channel::Slack(id)) => {
                let slack = self.slack.as_ref().context("Slack has no bot token")?;
                slack.post(id, text, buttons).await
            }
            None => Err(anyhow!("no such channel: {channel}")),
        }
    }

    /// Replaces the text and buttons of `message` in `channel`.
    pub async fn edit(
        &self,
        channel: &str,
        message: &str,
        text: &str,
        buttons: Option<&Buttons>,
    ) -> anyhow::Result<()> {
        let edited =
            tokio::time::timeout(CHAT_TIMEOUT, self.edit_now(channel, message, text, buttons));
        edited
            .await
            .map_err(|_| anyhow!("{channel} took longer than {CHAT_TIMEOUT:?}"))?
    }

    async fn edit_now(
        &self,
        channel: &str,
        message: &str,
        text: &str,
        buttons: Option<&Buttons>,
    ) -> anyhow::Result<()> {
        match Channel::parse(channel) {
            Some(Channel::Discord(id)) => {
                let discord = self.discord.as_ref().context("Discord is not configured")?;
                let message = MessageId::new(message.parse().context("a Discord message id")?);
                Ok(discord.edit(id, message, text, buttons).await?)
            }
            Some(Channel::Slack(id)) => {
                let slack = self.slack.as_ref().context("Slack has no bot token")?;
                slack.update(id, message, text, buttons).await
            }
            None => Err(anyhow!("no such channel: {channel}")),
        }
    }
}

/// Whether a build that ended so is announced by a notification of its own.
fn is_alarm(status: BuildStatus) -> bool {
    matches!(status, BuildStatus::Failed | BuildStatus::Errored)
}

/// Why Kiln cannot post to `channel`, if it cannot.
pub fn unreachable(app: &App, channel: &str) -> Option<String> {
    app.chat.unreachable(channel)
}

/// The channels that follow `repo`, each with its subscriptions to it.
pub async fn followers(
    app: &App,
    repo: &str,
) -> anyhow::Result<BTreeMap<String, Vec<Subscription>>> {
    let mut all = app.store.subscribers(repo).await?;
    if let Some(id) = app.chat.discord_channel {
        all.push(Subscription::new(
            format!("discord:{id}"),
            EVERY_REPOSITORY,
            None,
            Vec::new(),
        ));
    }
    let mut by_channel: BTreeMap<String, Vec<Subscription>> = BTreeMap::new();
    for subscription in all {
        by_channel
            .entry(subscription.channel.clone())
            .or_default()
            .push(subscription);
    }
    Ok(by_channel)
}

//! The notifier: a build's card in every channel that follows it, edited in place as the
//! build runs, and a notification of its failure that names the author ([`cards`]).
//!
//! Rendering is pure ([`render`]); posting is per vendor ([`discord`], [`slack`]). A channel
//! is named `discord:<id>` or `slack:<id>`; the configured Discord channel follows every
//! repository, other channels what they `subscribe` to.

pub mod cards;
pub mod discord;
pub mod keepers;
pub mod render;
pub mod slack;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use kiln_shared::build::BuildStatus;
use kiln_shared::view::BuildMessage;
use serenity::all::{ChannelId, MessageId};

use crate::config::{Config, Forge};
use crate::forges::Forges;
use render::Dialect;

/// The longest Kiln waits for a chat vendor to take one message, rate limits included; a
/// message it could not take is tried again by a later pass of the card keeper.
const CHAT_TIMEOUT: Duration = Duration::from_secs(20);

/// What the configured Discord channel's implicit subscription names as its repository.
pub(crate) const EVERY_REPOSITORY: &str = "*";

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
    /// The comments of a pull request (`github:owner/name#7`) or merge request
    /// (`gitlab:group/name!7`).
    Request {
        forge: Forge,
        repo: &'a str,
        number: u64,
    },
}

impl<'a> Channel<'a> {
    fn parse(name: &'a str) -> Option<Self> {
        let request = |forge, rest: &'a str, mark| {
            let (repo, number) = rest.rsplit_once(mark)?;
            Some(Self::Request {
                forge,
                repo,
                number: number.parse().ok()?,
            })
        };
        match name.split_once(':')? {
            ("discord", id) => id
                .parse::<u64>()
                .ok()
                .filter(|id| *id != 0)
                .map(|id| Self::Discord(ChannelId::new(id))),
            ("slack", id) if !id.is_empty() => Some(Self::Slack(id)),
            ("github", rest) => request(Forge::GitHub, rest, '#'),
            ("gitlab", rest) => request(Forge::GitLab, rest, '!'),
            _ => None,
        }
    }

    fn dialect(self) -> Dialect {
        match self {
            Self::Discord(_) => Dialect::Discord,
            Self::Slack(_) => Dialect::Slack,
            Self::Request { .. } => Dialect::Forge,
        }
    }
}

/// The channel of pull (merge) request `number` of `repo` on `forge`.
pub fn request_channel(forge: Forge, repo: &str, number: u64) -> String {
    match forge {
        Forge::GitHub => format!("github:{repo}#{number}"),
        Forge::GitLab => format!("gitlab:{repo}!{number}"),
    }
}

/// The chat vendors Kiln posts to, as configured, and the forges' request comments.
#[derive(Debug)]
pub struct Chat {
    discord: Option<discord::Discord>,
    /// The Discord channel that follows every repository.
    discord_channel: Option<u64>,
    slack: Option<slack::Slack>,
    forges: Arc<Forges>,
}

impl Chat {
    pub fn new(config: &Config, http: &reqwest::Client, forges: Arc<Forges>) -> Self {
        Self {
            discord: config.discord.as_ref().map(discord::Discord::new),
            discord_channel: config.discord.as_ref().map(|d| d.channel_id),
            slack: config
                .slack
                .as_ref()
                .and_then(|s| slack::Slack::new(s, http.clone())),
            forges,
        }
    }

    /// Whether Kiln can post to `channel`: it is one Kiln knows, and configured.
    pub fn can_post(&self, channel: &str) -> bool {
        match Channel::parse(channel) {
            None => false,
            Some(Channel::Discord(_)) => self.discord.is_some(),
            Some(Channel::Slack(_)) => self.slack.is_some(),
            Some(Channel::Request { forge, .. }) => self.forges.serves(forge),
        }
    }

    /// Why `channel` cannot subscribe, if it cannot.
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
            Some(Channel::Request { .. }) => Some(
                "Subscriptions are for chat channels; a pull request hears of the builds it \
                 asks for."
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
        in_time(channel, self.post_now(channel, text, buttons, notify)).await
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
            // A comment has no buttons: its text links to the build.
            Some(Channel::Request {
                forge,
                repo,
                number,
            }) => self.forges.comment(forge, repo, number, text).await,
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
        in_time(channel, self.edit_now(channel, message, text, buttons)).await
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
            Some(Channel::Request {
                forge,
                repo,
                number,
            }) => {
                self.forges
                    .edit_comment(forge, repo, number, message, text)
                    .await
            }
            None => Err(anyhow!("no such channel: {channel}")),
        }
    }
}

/// `call` to `channel`, given at most [`CHAT_TIMEOUT`].
async fn in_time<T>(
    channel: &str,
    call: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(CHAT_TIMEOUT, call)
        .await
        .map_err(|_| anyhow!("{channel} took longer than {CHAT_TIMEOUT:?}"))?
}

/// Whether a build that ended so is announced by a notification of its own.
fn is_alarm(status: BuildStatus) -> bool {
    matches!(status, BuildStatus::Failed | BuildStatus::Errored)
}

//! Chat as the notifier sees it: a channel is named `<vendor>:<id>` (`discord:123`,
//! `slack:C1`, `zulip:stream/topic`, or a forge's request, `github:owner/name#7`), and each
//! vendor is a [`ChatClient`] that posts and edits messages in its channels. Nothing here
//! knows a vendor's API or format: those live in `crate::vendors`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use async_trait::async_trait;
use kiln_shared::ident::ChannelName;
use kiln_shared::view::BuildMessage;

use super::render::Dialect;
use crate::config::Person;
use crate::metrics::Metrics;

/// The longest Kiln waits for a chat vendor to take one message, rate limits included; a
/// message it could not take is tried again by a later pass of the card keeper.
const CHAT_TIMEOUT: Duration = Duration::from_secs(20);

/// The most Run buttons a card shows (Discord takes five buttons to a row).
const MAX_RUN_BUTTONS: usize = 2;

/// A card's buttons: commands a click gives, as `(label, command)`, and a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buttons {
    pub commands: Vec<(&'static str, String)>,
    pub link: (&'static str, String),
}

impl Buttons {
    /// A build card's: its logs, a retry and a Run for each of its first steps run by hand
    /// once it has ended, and its page.
    pub fn card(message: &BuildMessage) -> Self {
        let id = message.build_id;
        let mut commands = vec![("Logs", format!("logs {id}"))];
        if message.finished {
            commands.push(("Retry", format!("retry {id}")));
            let mut steps: Vec<&str> = Vec::new();
            let manual = message
                .tasks
                .iter()
                .filter(|t| t.by_hand && t.status == "manual");
            for task in manual {
                if !steps.contains(&task.step.as_str()) && steps.len() < MAX_RUN_BUTTONS {
                    steps.push(&task.step);
                }
            }
            commands.extend(steps.iter().map(|step| ("Run", format!("run {id} {step}"))));
        }
        Self {
            commands,
            link: ("Open", message.url.clone()),
        }
    }
}

/// One chat vendor's client: posts and edits messages in its channels, each named by the
/// part of the channel's name after `<vendor>:`.
#[async_trait]
pub trait ChatClient: Send + Sync + std::fmt::Debug {
    /// Posts `text` (in the vendor's dialect) with `buttons` to channel `id`, pinging `ping`
    /// when the vendor knows them; every other mention stays disabled, so nothing a commit
    /// author wrote can ping a channel. Returns the message's id.
    async fn post(
        &self,
        id: &str,
        text: &str,
        buttons: Option<&Buttons>,
        ping: Option<&Person>,
    ) -> anyhow::Result<String>;

    /// Replaces the text and buttons of `message` in channel `id`; it pings no one.
    async fn edit(
        &self,
        id: &str,
        message: &str,
        text: &str,
        buttons: Option<&Buttons>,
    ) -> anyhow::Result<()>;
}

/// What Kiln knows of a chat vendor whether or not it is configured.
#[derive(Debug, Clone)]
pub struct Vendor {
    /// The prefix of its channels' names.
    pub scheme: &'static str,
    /// The dialect its messages are written in.
    pub dialect: &'static Dialect,
    /// Whether `id` can name one of its channels.
    pub is_channel: fn(&str) -> bool,
    /// How a person is mentioned in its messages, when Kiln knows them there.
    pub mention: fn(&Person) -> Option<String>,
    /// Why a channel of it cannot `subscribe`, if none can (a forge's requests).
    pub unsubscribable: Option<&'static str>,
    /// Its client, or why there is none (what its configuration lacks).
    pub client: Result<Arc<dyn ChatClient>, &'static str>,
    /// Its channels that follow every repository (named by Kiln's configuration).
    pub everywhere: Vec<ChannelName>,
}

/// Every chat vendor Kiln knows, configured or not, by the prefix of its channels' names.
#[derive(Debug, Default)]
pub struct Chat {
    vendors: BTreeMap<&'static str, Vendor>,
    /// Where each call is counted, by vendor and result.
    metrics: Arc<Metrics>,
}

impl Chat {
    /// The registry of `vendors`, counting calls in `metrics`.
    pub fn new(vendors: impl IntoIterator<Item = Vendor>, metrics: Arc<Metrics>) -> Self {
        Self {
            vendors: vendors.into_iter().map(|v| (v.scheme, v)).collect(),
            metrics,
        }
    }

    /// The vendor of `channel` and the channel's id there, if `channel` names a channel of
    /// a vendor Kiln knows.
    fn vendor<'a>(&self, channel: &'a ChannelName) -> Option<(&Vendor, &'a str)> {
        let (scheme, id) = channel.split_once(':')?;
        let vendor = self.vendors.get(scheme)?;
        (vendor.is_channel)(id).then_some((vendor, id))
    }

    /// Whether Kiln can post to `channel`: it is one Kiln knows, and its vendor configured.
    pub fn can_post(&self, channel: &ChannelName) -> bool {
        self.vendor(channel).is_some_and(|(v, _)| v.client.is_ok())
    }

    /// Why `channel` cannot subscribe, if it cannot.
    pub fn unreachable(&self, channel: &ChannelName) -> Option<String> {
        match self.vendor(channel) {
            None => Some(format!(
                "`{channel}` is not a channel Kiln knows how to post to."
            )),
            Some((vendor, _)) => vendor
                .unsubscribable
                .or(vendor.client.as_ref().err().copied())
                .map(str::to_owned),
        }
    }

    /// The dialect `channel` is written in.
    pub fn dialect(&self, channel: &ChannelName) -> Option<&'static Dialect> {
        self.vendor(channel).map(|(v, _)| v.dialect)
    }

    /// How `person` is mentioned in `channel`, if Kiln knows them there.
    pub fn mention(&self, channel: &ChannelName, person: &Person) -> Option<String> {
        self.vendor(channel).and_then(|(v, _)| (v.mention)(person))
    }

    /// The channels that follow every repository.
    pub fn everywhere(&self) -> impl Iterator<Item = &ChannelName> {
        self.vendors.values().flat_map(|v| v.everywhere.iter())
    }

    /// Posts `text` to `channel`, pinging `ping`; returns the message's id.
    pub async fn post(
        &self,
        channel: &ChannelName,
        text: &str,
        buttons: Option<&Buttons>,
        ping: Option<&Person>,
    ) -> anyhow::Result<String> {
        let (client, id) = self.client(channel)?;
        let posted = in_time(channel, client.post(id, text, buttons, ping)).await;
        self.count(channel, posted.is_ok());
        posted
    }

    /// Replaces the text and buttons of `message` in `channel`.
    pub async fn edit(
        &self,
        channel: &ChannelName,
        message: &str,
        text: &str,
        buttons: Option<&Buttons>,
    ) -> anyhow::Result<()> {
        let (client, id) = self.client(channel)?;
        let edited = in_time(channel, client.edit(id, message, text, buttons)).await;
        self.count(channel, edited.is_ok());
        edited
    }

    fn count(&self, channel: &ChannelName, ok: bool) {
        if let Some((vendor, _)) = self.vendor(channel) {
            self.metrics.called(vendor.scheme, ok);
        }
    }

    fn client<'a>(&self, channel: &'a ChannelName) -> anyhow::Result<(&dyn ChatClient, &'a str)> {
        let (vendor, id) = self
            .vendor(channel)
            .ok_or_else(|| anyhow!("no such channel: {channel}"))?;
        let client = vendor.client.as_ref().map_err(|why| anyhow!("{why}"))?;
        Ok((client.as_ref(), id))
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

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_shared::build::{BuildId, BuildStatus};
    use kiln_shared::view::TaskLine;
    use kiln_shared::wire::BuildRef;

    #[test]
    fn an_ended_cards_steps_run_by_hand_get_run_buttons() {
        let build = BuildRef {
            id: BuildId(12),
            repo: "acme/api".into(),
            branch: "master".into(),
            commit: "abc".into(),
        };
        let line = |name: &str, status: &str| TaskLine {
            name: name.into(),
            status: status.into(),
            exit_code: None,
            allow_failure: false,
            by_hand: name != "unit" && name != "smoke",
            step: name.split('.').next().unwrap_or(name).to_owned(),
        };
        // `smoke` needs `deploy`: held with it, but not run by hand itself.
        let tasks = vec![
            line("unit", "passed"),
            line("deploy.1", "manual"),
            line("deploy.2", "manual"),
            line("smoke", "manual"),
            line("docs", "manual"),
            line("notes", "manual"),
        ];
        let message =
            |status| BuildMessage::new(&build, status, "a", "s", tasks.clone(), None, "http://k");
        let commands = |status| Buttons::card(&message(status)).commands;
        assert_eq!(
            commands(BuildStatus::Passed),
            [
                ("Logs", "logs 12".to_owned()),
                ("Retry", "retry 12".to_owned()),
                ("Run", "run 12 deploy".to_owned()),
                ("Run", "run 12 docs".to_owned()),
            ]
        );
        assert_eq!(
            commands(BuildStatus::Running),
            [("Logs", "logs 12".to_owned())]
        );
    }
}

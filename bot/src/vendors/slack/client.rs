//! Slack's Web API, `chat.postMessage` and `chat.update`, with the bot token; messages are
//! Block Kit: the text in a section, the buttons in an actions block.

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use async_trait::async_trait;

use crate::config::{self, Person};
use crate::notify::chat::{Buttons, ChatClient};

/// Slack's Web API, unless the configuration names another.
const API_URL: &str = "https://slack.com/api";

/// The most a section block's text holds, in characters.
pub const MAX_SECTION_CHARS: usize = 3000;

/// Posts and updates messages in Slack channels, as the app's bot user.
#[derive(Debug)]
pub struct Slack {
    http: reqwest::Client,
    token: SecretString,
    api_url: String,
}

/// The message's blocks: its text, then its buttons (each command button carries its
/// command as its value, which a click sends back).
fn blocks(text: &str, buttons: Option<&Buttons>) -> Value {
    let text: String = text.chars().take(MAX_SECTION_CHARS).collect();
    let mut blocks = vec![json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } })];
    if let Some(buttons) = buttons {
        let mut elements: Vec<Value> = buttons
            .commands
            .iter()
            .map(|(label, command)| {
                json!({
                    "type": "button",
                    "text": { "type": "plain_text", "text": label },
                    // Unique in the block, as Slack requires: two Run buttons share a label.
                    "action_id": command.replace(' ', "-"),
                    "value": command,
                })
            })
            .collect();
        elements.push(json!({
            "type": "button",
            "text": { "type": "plain_text", "text": buttons.link.0 },
            "action_id": "open",
            "url": buttons.link.1,
        }));
        blocks.push(json!({ "type": "actions", "elements": elements }));
    }
    Value::Array(blocks)
}

impl Slack {
    /// A client for the configured app, if it has a bot token.
    pub fn new(config: &config::Slack, http: reqwest::Client) -> Option<Self> {
        Some(Self {
            http,
            token: config.bot_token.clone()?,
            api_url: config
                .api_url
                .as_deref()
                .unwrap_or(API_URL)
                .trim_end_matches('/')
                .to_owned(),
        })
    }

    /// Posts `text` (mrkdwn) with `buttons` to `channel`; returns the message's `ts`, its id.
    pub async fn post(
        &self,
        channel: &str,
        text: &str,
        buttons: Option<&Buttons>,
    ) -> anyhow::Result<String> {
        let answer = self
            .call(
                "chat.postMessage",
                json!({ "channel": channel, "text": text, "blocks": blocks(text, buttons) }),
            )
            .await?;
        answer["ts"]
            .as_str()
            .map(str::to_owned)
            .context("Slack's answer has no `ts`")
    }

    /// Replaces the text and buttons of the message `ts` in `channel`.
    pub async fn update(
        &self,
        channel: &str,
        ts: &str,
        text: &str,
        buttons: Option<&Buttons>,
    ) -> anyhow::Result<()> {
        self.call(
            "chat.update",
            json!({ "channel": channel, "ts": ts, "text": text, "blocks": blocks(text, buttons) }),
        )
        .await?;
        Ok(())
    }

    /// Calls a Web API method; Slack answers 200 with `"ok": false` and an `error` when it
    /// refuses.
    async fn call(&self, method: &str, body: Value) -> anyhow::Result<Value> {
        let answer: Value = self
            .http
            .post(format!("{}/{method}", self.api_url))
            .bearer_auth(self.token.expose_secret())
            .json(&body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if answer["ok"] != true {
            bail!(
                "Slack refused {method}: {}",
                answer["error"].as_str().unwrap_or("no reason given")
            );
        }
        Ok(answer)
    }
}

/// Slack mentions are in the text (`<@U…>`): a post pings whoever its text names.
#[async_trait]
impl ChatClient for Slack {
    async fn post(
        &self,
        id: &str,
        text: &str,
        buttons: Option<&Buttons>,
        _ping: Option<&Person>,
    ) -> anyhow::Result<String> {
        Slack::post(self, id, text, buttons).await
    }

    async fn edit(
        &self,
        id: &str,
        message: &str,
        text: &str,
        buttons: Option<&Buttons>,
    ) -> anyhow::Result<()> {
        self.update(id, message, text, buttons).await
    }
}

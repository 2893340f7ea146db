//! Zulip's REST API with the bot's email and API key: `POST /api/v1/messages` and
//! `PATCH /api/v1/messages/{id}`.
//!
//! A channel id is `<stream id>/<topic>` (a stream's topic) or `@<user id>` (a direct
//! message to them).

use anyhow::{Context as _, bail};
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::Place;
use crate::config::{self, Person};
use crate::notify::chat::{Buttons, ChatClient};

/// The bot's REST client.
#[derive(Debug)]
pub struct Zulip {
    http: reqwest::Client,
    url: String,
    email: String,
    key: SecretString,
}

impl Zulip {
    /// A client for the configured bot, if it has an API key.
    pub fn new(config: &config::Zulip, http: reqwest::Client) -> Option<Self> {
        Some(Self {
            http,
            url: config.url.trim_end_matches('/').to_owned(),
            email: config.bot_email.clone(),
            key: config.api_key.clone()?,
        })
    }

    /// Sends `content` to `place`; returns the message's id.
    pub async fn send(&self, place: &Place<'_>, content: &str) -> anyhow::Result<String> {
        let form: Vec<(&str, String)> = match place {
            Place::Topic { stream, topic } => vec![
                ("type", "stream".into()),
                ("to", stream.to_string()),
                ("topic", (*topic).to_owned()),
                ("content", content.to_owned()),
            ],
            Place::Direct { user } => vec![
                ("type", "direct".into()),
                ("to", format!("[{user}]")),
                ("content", content.to_owned()),
            ],
        };
        let request = self.http.post(format!("{}/api/v1/messages", self.url));
        let answer = self.call(request.form(&form), "send a message").await?;
        answer["id"]
            .as_u64()
            .map(|id| id.to_string())
            .context("Zulip's answer has no message `id`")
    }

    /// Replaces the content of message `id`.
    pub async fn update(&self, id: &str, content: &str) -> anyhow::Result<()> {
        let id: u64 = id.parse().context("a Zulip message id")?;
        let request = self
            .http
            .patch(format!("{}/api/v1/messages/{id}", self.url))
            .form(&[("content", content)]);
        self.call(request, "edit a message").await?;
        Ok(())
    }

    /// Sends `request` as the bot; Zulip answers `"result": "error"` with a `msg` when it
    /// refuses.
    async fn call(&self, request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
        let response = request
            .basic_auth(&self.email, Some(self.key.expose_secret()))
            .send()
            .await
            .with_context(|| format!("cannot reach Zulip to {what}"))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or_default();
        if !status.is_success() || answer["result"] != "success" {
            bail!(
                "Zulip refused to {what} ({status}): {}",
                answer["msg"].as_str().unwrap_or("no reason given")
            );
        }
        Ok(answer)
    }
}

/// Mentions are in the text (`@**Name|id**`): a post pings whoever its text names. Zulip has
/// no buttons; a card's text names its links and commands.
#[async_trait]
impl ChatClient for Zulip {
    async fn post(
        &self,
        id: &str,
        text: &str,
        _buttons: Option<&Buttons>,
        _ping: Option<&Person>,
    ) -> anyhow::Result<String> {
        let place = Place::parse(id).with_context(|| format!("`{id}` is not a Zulip place"))?;
        self.send(&place, text).await
    }

    async fn edit(
        &self,
        _id: &str,
        message: &str,
        text: &str,
        _buttons: Option<&Buttons>,
    ) -> anyhow::Result<()> {
        self.update(message, text).await
    }
}

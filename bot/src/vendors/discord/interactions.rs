//! Discord's interactions endpoint: slash commands arrive as HTTP requests signed with
//! Ed25519 over timestamp and body; Kiln defers its answer at once and then edits it in,
//! through serenity's REST client.

use std::time::Duration;

use serde::Deserialize;
use serenity::all::{
    Command, CommandOptionType, CreateAllowedMentions, CreateCommand, CreateCommandOption,
    EditInteractionResponse, Http,
};
use serenity::builder::Builder as _;
use serenity::interactions_endpoint::Verifier;

use super::client::{MAX_MESSAGE_CHARS, http_client};
use crate::config;

/// How far a request's timestamp may be from now.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(5 * 60);

/// Interaction types Kiln takes (Discord's numbering).
pub const PING: u8 = 1;
pub const APPLICATION_COMMAND: u8 = 2;
/// A click on a button of a message: Kiln's buttons carry the command they give.
pub const MESSAGE_COMPONENT: u8 = 3;

/// Verifies interactions and answers them, for one application.
pub struct Interactions {
    verifier: Verifier,
    http: Http,
}

impl std::fmt::Debug for Interactions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interactions").finish_non_exhaustive()
    }
}

impl Interactions {
    /// For the configured application, if it takes slash commands (a `public_key`).
    pub fn new(config: &config::Discord) -> anyhow::Result<Option<Self>> {
        let Some(key) = &config.public_key else {
            return Ok(None);
        };
        let bytes: [u8; 32] = hex::decode(key)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("a Discord public key has 32 bytes"))?;
        Ok(Some(Self {
            verifier: Verifier::try_new(bytes)?,
            http: http_client(config),
        }))
    }

    /// Whether `body` was signed by Discord at `timestamp` (seconds), within the replay
    /// window of `now`.
    pub fn verify(
        &self,
        signature: &str,
        timestamp: &str,
        body: &[u8],
        now: u64,
    ) -> Result<(), &'static str> {
        let sent: u64 = timestamp
            .parse()
            .map_err(|_| "no X-Signature-Timestamp, or not a number")?;
        if now.abs_diff(sent) >= REPLAY_WINDOW.as_secs() {
            return Err("the request is five minutes old or more (or from the future)");
        }
        self.verifier
            .verify(signature, timestamp, body)
            .map_err(|()| "the signature does not match")
    }

    /// Registers Kiln's slash command with Discord, replacing the application's global
    /// commands; returns their names.
    pub async fn register(&self) -> serenity::Result<Vec<String>> {
        let registered = Command::set_global_commands(&self.http, slash_commands()).await?;
        Ok(registered.into_iter().map(|c| c.name).collect())
    }

    /// Replaces the deferred answer to the interaction with `token` by `text`, cut to
    /// Discord's limit, with every mention disabled.
    pub async fn answer(&self, token: &str, text: &str) -> serenity::Result<()> {
        let content: String = text.chars().take(MAX_MESSAGE_CHARS).collect();
        EditInteractionResponse::new()
            .content(content)
            .allowed_mentions(CreateAllowedMentions::new())
            .execute(&self.http, token)
            .await?;
        Ok(())
    }
}

/// Kiln's slash command: `/kiln` and the command as typed anywhere else (`cancel 12`), so
/// every command of the grammar works without a registration of its own.
pub fn slash_commands() -> Vec<CreateCommand> {
    let command = CreateCommandOption::new(
        CommandOptionType::String,
        "command",
        "e.g. status acme/api, logs 12, cancel 12 (try help)",
    )
    .required(true);
    vec![
        CreateCommand::new("kiln")
            .description("Kiln: build, look at and cancel builds")
            .add_option(command),
    ]
}

/// An interaction, the fields Kiln uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Interaction {
    #[serde(rename = "type")]
    pub kind: u8,
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub data: Option<CommandData>,
    /// Who, in a server.
    #[serde(default)]
    pub member: Option<Member>,
    /// Who, in a direct message.
    #[serde(default)]
    pub user: Option<User>,
    /// The server it came from; none in a direct message.
    #[serde(default)]
    pub guild_id: Option<String>,
    /// The channel it came from.
    #[serde(default)]
    pub channel_id: Option<String>,
}

/// A command's name and options, or a button's id.
#[derive(Debug, Clone, Deserialize)]
pub struct CommandData {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub options: Vec<CommandOption>,
    /// A button's: for Kiln's, the command it gives, e.g. `logs 12`.
    #[serde(default)]
    pub custom_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CommandOption {
    pub name: String,
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    /// A subcommand's own options.
    #[serde(default)]
    pub options: Vec<CommandOption>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Member {
    pub user: User,
    /// The member's roles in the server (ids).
    #[serde(default)]
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: String,
    #[serde(default)]
    pub username: String,
}

impl Interaction {
    /// The command as one line of Kiln's grammar: its name, then each option's value in
    /// order (a subcommand by its name). `/kiln command:"cancel 12"` and `/cancel build:12`
    /// both read `… cancel 12`; a button gives the command it carries.
    pub fn command_text(&self) -> Option<String> {
        fn words(options: &[CommandOption], out: &mut Vec<String>) {
            for option in options {
                match &option.value {
                    Some(serde_json::Value::String(text)) => out.push(text.clone()),
                    Some(other) => out.push(other.to_string()),
                    None => {
                        out.push(option.name.clone());
                        words(&option.options, out);
                    }
                }
            }
        }
        let data = self.data.as_ref()?;
        if self.kind == MESSAGE_COMPONENT {
            return data.custom_id.clone();
        }
        let mut out = vec![data.name.clone()];
        words(&data.options, &mut out);
        Some(out.join(" "))
    }

    /// The sender's roles, as permissions name them (`discord:<role id>`); none in a direct
    /// message.
    pub fn roles(&self) -> Vec<String> {
        self.member
            .iter()
            .flat_map(|m| &m.roles)
            .map(|role| format!("discord:{role}"))
            .collect()
    }

    /// Who sent it.
    pub fn user(&self) -> Option<&User> {
        self.member.as_ref().map(|m| &m.user).or(self.user.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RFC 8032 TEST 1 public key and a signature made with its secret key
    /// (tests/fixtures/SOURCES.md).
    const PUBLIC_KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const TIMESTAMP: &str = "1700000000";
    const SIGNATURE: &str = "f0bd878adcef1f6d475c9644421905bd02b5de38e0d3ecfc6f58a711962c69ccc8dd7c9db312f9bdf08b1e1b8182e27a844da728c5e0dbb5507bf9931c1ed80b";
    const PING_BODY: &[u8] =
        include_bytes!("../../../../tests/fixtures/discord-interaction-ping.json");

    fn interactions() -> Interactions {
        let config: config::Discord = toml::from_str(&format!(
            "token = 't'\nchannel_id = 1\npublic_key = '{PUBLIC_KEY}'\napplication_id = 2"
        ))
        .expect("config");
        Interactions::new(&config)
            .expect("valid")
            .expect("configured")
    }

    #[test]
    fn accepts_the_signed_ping_and_nothing_else() {
        let discord = interactions();
        let now = 1_700_000_030;
        assert_eq!(discord.verify(SIGNATURE, TIMESTAMP, PING_BODY, now), Ok(()));
        let mut longer = PING_BODY.to_vec();
        longer.push(b'\n');
        assert!(discord.verify(SIGNATURE, TIMESTAMP, &longer, now).is_err());
        assert!(
            discord
                .verify(SIGNATURE, "1700000001", PING_BODY, now)
                .is_err()
        );
        let flipped = SIGNATURE.replacen('f', "e", 1);
        assert!(discord.verify(&flipped, TIMESTAMP, PING_BODY, now).is_err());
        assert!(
            discord
                .verify(SIGNATURE, TIMESTAMP, PING_BODY, now + 300)
                .is_err()
        );
        assert!(discord.verify("", TIMESTAMP, PING_BODY, now).is_err());
    }

    #[test]
    fn reads_discords_example_command() {
        let body = include_bytes!("../../../../tests/fixtures/discord-interaction-command.json");
        let interaction: Interaction = serde_json::from_slice(body).expect("an interaction");
        assert_eq!(interaction.kind, APPLICATION_COMMAND);
        assert_eq!(interaction.token, "A_UNIQUE_TOKEN");
        assert_eq!(
            interaction.command_text().as_deref(),
            Some("cardsearch The Gitrog Monster")
        );
        let user = interaction.user().expect("a member");
        assert_eq!(
            (user.id.as_str(), user.username.as_str()),
            ("53908232506183680", "Mason")
        );
        let ping: Interaction = serde_json::from_slice(PING_BODY).expect("a ping");
        assert_eq!((ping.kind, ping.command_text()), (PING, None));
    }

    #[test]
    fn reads_subcommands_and_numbers() {
        let interaction: Interaction = serde_json::from_value(serde_json::json!({
            "type": 2, "token": "t", "user": { "id": "1", "username": "u" },
            "data": { "name": "kiln", "options": [
                { "name": "logs", "type": 1, "options": [
                    { "name": "build", "type": 4, "value": 12 },
                    { "name": "task", "type": 3, "value": "unit" } ] } ] }
        }))
        .expect("an interaction");
        assert_eq!(
            interaction.command_text().as_deref(),
            Some("kiln logs 12 unit")
        );
    }
}

//! Slack: everything Kiln knows of it. Slash commands and button clicks arrive signed
//! ([`signature`]) as forms ([`forms`]) at its door ([`door`]); answers and cards are mrkdwn
//! ([`dialect`]) posted through its Web API ([`client`]).

pub mod client;
pub mod dialect;
pub mod door;
pub mod forms;
pub mod signature;

use std::sync::Arc;

pub use dialect::{DIALECT, escape};

use crate::config;
use crate::notify::chat::{ChatClient, Vendor};

/// Slack, as a chat vendor: channels are `slack:<channel id>`.
pub fn chat(config: Option<&config::Slack>, http: &reqwest::Client) -> Vendor {
    let client = config.and_then(|c| client::Slack::new(c, http.clone()));
    Vendor {
        scheme: "slack",
        dialect: &DIALECT,
        is_channel: |id| !id.is_empty(),
        mention: |person| person.slack.as_ref().map(|user| format!("<@{user}>")),
        unsubscribable: None,
        client: client.map(|c| Arc::new(c) as Arc<dyn ChatClient>).ok_or(
            "Kiln has no Slack bot token (`[slack] bot_token`): it cannot post to Slack channels.",
        ),
        everywhere: Vec::new(),
    }
}

//! Discord: everything Kiln knows of it. Slash commands and button clicks arrive as signed
//! interactions ([`interactions`]) at its door ([`door`]); cards are Discord markdown
//! ([`dialect`]) posted through serenity's REST client ([`client`]).

pub mod client;
pub mod dialect;
pub mod door;
pub mod interactions;

use kiln_shared::ident::ChannelName;
use std::sync::Arc;

pub use dialect::DIALECT;

use crate::config;
use crate::notify::chat::{ChatClient, Vendor};

/// Discord, as a chat vendor: channels are `discord:<channel id>`; the configured channel
/// follows every repository.
pub fn chat(config: Option<&config::Discord>) -> Vendor {
    Vendor {
        scheme: "discord",
        dialect: &DIALECT,
        is_channel: |id| id.parse::<u64>().is_ok_and(|id| id != 0),
        mention: |person| person.discord.map(|user| format!("<@{user}>")),
        unsubscribable: None,
        client: config
            .map(|c| Arc::new(client::Discord::new(c)) as Arc<dyn ChatClient>)
            .ok_or("Kiln has no Discord bot token: it cannot post to Discord channels."),
        everywhere: config
            .map(|c| ChannelName::from(format!("discord:{}", c.channel_id)))
            .into_iter()
            .collect(),
    }
}

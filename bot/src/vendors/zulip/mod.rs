//! Zulip: everything Kiln knows of it. Commands arrive from an outgoing webhook bot at its
//! door ([`door`]), carrying the bot's token; answers come back in the webhook's response,
//! and cards are Zulip markdown ([`dialect`]) sent and edited through its REST API
//! ([`client`]).
//!
//! A channel is `zulip:<stream id>/<topic>`, or `zulip:@<user id>` for direct messages.

pub mod client;
pub mod dialect;
pub mod door;

use kiln_shared::ident::ChannelName;
use std::sync::Arc;

pub use dialect::DIALECT;

use crate::config;
use crate::notify::chat::{ChatClient, Vendor};

/// Where a Zulip message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place<'a> {
    /// A topic of a stream.
    Topic { stream: u64, topic: &'a str },
    /// A direct message to a user.
    Direct { user: u64 },
}

impl<'a> Place<'a> {
    /// The place a channel id names: `<stream id>/<topic>` or `@<user id>`.
    pub fn parse(id: &'a str) -> Option<Self> {
        if let Some(user) = id.strip_prefix('@') {
            return Some(Self::Direct {
                user: user.parse().ok()?,
            });
        }
        let (stream, topic) = id.split_once('/')?;
        Some(Self::Topic {
            stream: stream.parse().ok()?,
            topic: Some(topic).filter(|t| !t.is_empty())?,
        })
    }

    /// The channel name of this place.
    pub fn channel(&self) -> ChannelName {
        match self {
            Self::Topic { stream, topic } => format!("zulip:{stream}/{topic}").into(),
            Self::Direct { user } => format!("zulip:@{user}").into(),
        }
    }
}

/// Zulip, as a chat vendor.
pub fn chat(config: Option<&config::Zulip>, http: &reqwest::Client) -> Vendor {
    let client = config.and_then(|c| client::Zulip::new(c, http.clone()));
    Vendor {
        scheme: "zulip",
        dialect: &DIALECT,
        is_channel: |id| Place::parse(id).is_some(),
        mention: |person| person.zulip.as_ref().map(|who| format!("@**{who}**")),
        unsubscribable: None,
        client: client.map(|c| Arc::new(c) as Arc<dyn ChatClient>).ok_or(
            "Kiln has no Zulip API key (`[zulip] api_key`): it cannot post to Zulip streams.",
        ),
        everywhere: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_a_streams_topic_or_a_user() {
        let topic = Place::parse("5/builds / api").expect("a topic");
        assert_eq!(
            topic,
            Place::Topic {
                stream: 5,
                topic: "builds / api"
            }
        );
        assert_eq!(topic.channel(), "zulip:5/builds / api");
        assert_eq!(Place::parse("@12"), Some(Place::Direct { user: 12 }));
        for bad in ["", "5", "5/", "general/builds", "@ada", "@"] {
            assert_eq!(Place::parse(bad), None, "{bad}");
        }
    }
}

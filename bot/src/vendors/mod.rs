//! Every vendor Kiln talks to, one folder each: its webhook or command door (an axum handler
//! that verifies, then translates into Kiln's types, nothing else), its API client behind the
//! small traits the rest of the bot calls ([`crate::notify::chat::ChatClient`],
//! [`crate::forge::ForgeClient`]), and its message dialect (escaping and templates).
//!
//! A new chat or forge is a new folder here, its [`Vendor`](crate::notify::chat::Vendor)
//! entry in [`chats`], and its routes.

pub mod commonmark;
pub mod discord;
pub mod github;
pub mod gitlab;
pub mod payload;
pub mod slack;
pub mod zulip;

use crate::config::{Config, Forge};
use crate::forge::{Forges, comments};
use crate::notify::chat::Vendor;
use crate::notify::render::Dialect;

/// Every dialect Kiln writes, compiled at start-up whether or not its vendor is configured.
pub const DIALECTS: [&Dialect; 4] = [
    &discord::DIALECT,
    &slack::DIALECT,
    &zulip::DIALECT,
    &commonmark::DIALECT,
];

/// Every chat vendor, configured or not: the chats, and the forges' requests, whose comments
/// Kiln posts to like a channel.
pub fn chats(config: &Config, http: &reqwest::Client, forges: &Forges) -> Vec<Vendor> {
    let mut vendors = vec![
        discord::chat(config.discord.as_ref()),
        slack::chat(config.slack.as_ref(), http),
        zulip::chat(config.zulip.as_ref(), http),
    ];
    for (forge, mark) in [
        (Forge::GitHub, github::REQUEST_MARK),
        (Forge::GitLab, gitlab::REQUEST_MARK),
    ] {
        vendors.push(comments::vendor(
            forge,
            mark,
            &commonmark::DIALECT,
            forges.get(forge),
        ));
    }
    vendors
}

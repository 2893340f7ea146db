//! The notifier: a build's card in every channel that follows it, edited in place as the
//! build runs, and a notification of its failure that names the author ([`cards`]).
//!
//! Rendering is pure ([`render`]); posting goes through [`chat::Chat`] to each vendor's
//! client (`crate::vendors`). Channels that Kiln's configuration names follow every
//! repository, other channels what they `subscribe` to.

pub mod cards;
pub mod chat;
pub mod keepers;
pub mod render;

#[cfg(test)]
mod render_tests;

use kiln_shared::build::BuildStatus;

pub use chat::{Buttons, Chat};

/// What a channel's implicit subscription to every repository names as its repository.
pub(crate) const EVERY_REPOSITORY: &str = "*";

/// Whether a build that ended so is announced by a notification of its own.
fn is_alarm(status: BuildStatus) -> bool {
    matches!(status, BuildStatus::Failed | BuildStatus::Errored)
}

//! Subscriptions: which chat channels follow which repository's builds, and what each wants
//! to see of them.
//!
//! A channel is named by its front end and id, `discord:<channel id>` or `slack:<channel
//! id>`. A subscription to no event in particular is a subscription to all of them: the
//! channel gets a build's card when the build is requested, edited as it runs. One to some
//! events gets the card when the build reaches one of them.

use serde::{Deserialize, Serialize};

use crate::build::BuildStatus;
use crate::ident::{ChannelName, RepoName};
use crate::pattern::branch_matches;

/// One channel's interest in one repository, or in one of its branches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// `discord:<id>` or `slack:<id>`.
    pub channel: ChannelName,
    /// `owner/name`, lowercase: forges compare repository names without regard to case.
    pub repo: RepoName,
    /// A branch, or a pattern as in `when: { branch: … }`; every branch when absent.
    pub branch: Option<String>,
    /// Names from [`crate::command::SUBSCRIBABLE_EVENTS`]; every event when empty.
    pub events: Vec<String>,
}

impl Subscription {
    /// A subscription of `channel` to `repo` (compared without regard to case).
    pub fn new(
        channel: impl Into<ChannelName>,
        repo: &str,
        branch: Option<String>,
        events: Vec<String>,
    ) -> Self {
        Self {
            channel: channel.into(),
            repo: repo.to_ascii_lowercase().into(),
            branch,
            events,
        }
    }

    /// What tells it from the channel's other subscriptions to the same repository.
    pub fn field(&self) -> String {
        format!("{}@{}", self.channel, self.branch.as_deref().unwrap_or("*"))
    }

    /// Whether it follows builds of `branch`.
    pub fn covers(&self, branch: &str) -> bool {
        self.branch
            .as_deref()
            .is_none_or(|pattern| pattern == branch || branch_matches(pattern, branch))
    }

    /// Whether it asks for a build of `branch` that is now `status`: an unfinished build is
    /// the `requested` event, a finished one its status.
    pub fn wants(&self, branch: &str, status: BuildStatus) -> bool {
        let event = if status.is_final() {
            status.as_str()
        } else {
            "requested"
        };
        self.covers(branch) && (self.events.is_empty() || self.events.iter().any(|e| e == event))
    }

    /// How a person reads it: `acme/api@master (failed, errored)`.
    pub fn describe(&self) -> String {
        let mut text = self.repo.to_string();
        if let Some(branch) = &self.branch {
            text.push('@');
            text.push_str(branch);
        }
        if !self.events.is_empty() {
            text.push_str(&format!(" ({})", self.events.join(", ")));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription(branch: Option<&str>, events: &[&str]) -> Subscription {
        Subscription::new(
            "discord:1",
            "Acme/API",
            branch.map(str::to_owned),
            events.iter().map(|e| (*e).to_owned()).collect(),
        )
    }

    #[test]
    fn every_event_of_every_branch_by_default() {
        let all = subscription(None, &[]);
        assert_eq!(all.repo, "acme/api");
        assert!(all.wants("feature/x", BuildStatus::Queued));
        assert!(all.wants("master", BuildStatus::Passed));
        assert_eq!(all.describe(), "acme/api");
        assert_eq!(all.field(), "discord:1@*");
    }

    #[test]
    fn a_branch_or_pattern_and_some_events() {
        let failures = subscription(Some("release/*"), &["failed", "errored"]);
        assert!(failures.wants("release/1.2", BuildStatus::Failed));
        assert!(!failures.wants("release/1.2", BuildStatus::Passed));
        assert!(!failures.wants("release/1.2", BuildStatus::Running));
        assert!(!failures.wants("master", BuildStatus::Failed));
        assert_eq!(failures.describe(), "acme/api@release/* (failed, errored)");

        let requests = subscription(Some("master"), &["requested"]);
        assert!(requests.wants("master", BuildStatus::Queued));
        assert!(requests.wants("master", BuildStatus::Running));
        assert!(!requests.wants("master", BuildStatus::Cancelled));
    }
}

//! View models of chat messages: what a message says, before a dialect renders it.

use serde::Serialize;

use crate::wire::BuildFinished;

/// A commit id shortened the way people read it.
pub fn short_commit(commit: &str) -> &str {
    commit.get(..10).unwrap_or(commit)
}

/// The longest commit subject a message shows, in characters; chat has length limits and a
/// subject is a headline.
pub const MAX_SUBJECT_CHARS: usize = 120;

/// `text` cut to `max` characters, with an ellipsis when something was cut.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The message posted when a build reaches its final status.
#[derive(Debug, Clone, Serialize)]
pub struct BuildFinishedMessage {
    pub build_id: u64,
    pub repo: String,
    pub branch: String,
    pub commit: String,
    pub short_commit: String,
    pub status: String,
    /// Whether the build passed: templates pick their wording and emoji from it.
    pub passed: bool,
    pub author: String,
    pub subject: String,
    /// Where a person reads the build's tasks and logs without chat.
    pub url: String,
    pub tasks: Vec<TaskLine>,
    pub error: Option<String>,
}

/// One task in a [`BuildFinishedMessage`].
#[derive(Debug, Clone, Serialize)]
pub struct TaskLine {
    pub name: String,
    pub status: String,
    pub exit_code: Option<i64>,
    /// The task may fail without failing the build.
    pub allow_failure: bool,
}

impl BuildFinishedMessage {
    /// The message for `event`, linking to the build under `base_url`.
    pub fn new(event: &BuildFinished, base_url: &str) -> Self {
        let build = &event.build;
        Self {
            build_id: build.id.0,
            repo: build.repo.clone(),
            branch: build.branch.clone(),
            commit: build.commit.clone(),
            short_commit: short_commit(&build.commit).to_owned(),
            status: event.status.as_str().to_owned(),
            passed: event.status == crate::build::BuildStatus::Passed,
            author: event.author.clone(),
            subject: truncate(
                event.subject.lines().next().unwrap_or_default(),
                MAX_SUBJECT_CHARS,
            ),
            url: format!("{}/builds/{}", base_url.trim_end_matches('/'), build.id),
            tasks: event
                .tasks
                .iter()
                .map(|t| TaskLine {
                    name: t.name.clone(),
                    status: t.status.as_str().to_owned(),
                    exit_code: t.exit_code.filter(|code| *code != 0),
                    allow_failure: t.allow_failure,
                })
                .collect(),
            error: event.error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_characters() {
        assert_eq!(truncate("héllo", 10), "héllo");
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(short_commit("0d1a26e67d8f5eaf"), "0d1a26e67d");
        assert_eq!(short_commit("abc"), "abc");
    }
}

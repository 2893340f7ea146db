//! View models of chat messages: what a message says, before a dialect renders it.

use serde::Serialize;

use crate::build::BuildStatus;
use crate::ident::{BranchName, CommitId, RepoName};
use crate::wire::BuildRef;

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

/// What chat says of a promotion: its card, edited as approvals come and when it ends.
#[derive(Debug, Clone, Serialize)]
pub struct PromotionMessage {
    pub id: u64,
    pub repo: RepoName,
    /// The branch moved, and the commit it is moved to (short).
    pub branch: BranchName,
    pub short_commit: String,
    pub rollback: bool,
    /// The build that passed the commit, and its page.
    pub build_id: u64,
    pub build_url: String,
    pub requester: String,
    /// Who approved so far, and how many approvals it needs.
    pub approvers: Vec<String>,
    pub required: u32,
    /// `awaiting approval`, `promoted`, `rejected`, …
    pub status: String,
    pub icon: &'static str,
    /// Why it was rejected or failed.
    pub detail: Option<String>,
    /// The build the move started.
    pub started: Option<u64>,
}

/// What chat says of a build: its card, edited in place as it runs, and the notification
/// of its failure.
#[derive(Debug, Clone, Serialize)]
pub struct BuildMessage {
    pub build_id: u64,
    pub repo: RepoName,
    /// The branch built, or the tag when `tag`.
    pub branch: BranchName,
    /// Whether the build is of a tag.
    pub tag: bool,
    /// Why it was started, when its trigger has more to say.
    pub note: Option<String>,
    /// The variables it was asked for with, `KEY=VALUE`.
    pub vars: Vec<String>,
    pub commit: CommitId,
    pub short_commit: String,
    pub status: String,
    /// The status at a glance, the same in every dialect.
    pub icon: &'static str,
    /// Whether the build passed: templates pick their wording from it.
    pub passed: bool,
    /// Whether the build has ended.
    pub finished: bool,
    pub author: String,
    pub subject: String,
    /// Where a person reads the build's tasks and logs without chat.
    pub url: String,
    pub tasks: Vec<TaskLine>,
    pub error: Option<String>,
    /// The person to notify, as the dialect writes a mention (Discord's `<@id>`): set on a
    /// failure whose author Kiln's configuration maps to a chat user. Written as is.
    pub mention: Option<String>,
    /// The first task that failed, with the end of its log.
    pub failure: Option<FailureExcerpt>,
    /// What subscribers reported of the build.
    pub reports: Vec<ReportLine>,
}

/// A subscriber's verdict on a build, reported back (`POST /api/reports`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Report {
    /// The reporter's name in Kiln's configuration.
    pub reporter: String,
    pub verdict: Verdict,
    /// One line: what it found.
    pub summary: String,
}

/// What a reporter concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Passed,
    Failed,
    Neutral,
}

/// The longest summary a report keeps, in characters.
pub const MAX_REPORT_SUMMARY_CHARS: usize = 200;

/// One report on a card.
#[derive(Debug, Clone, Serialize)]
pub struct ReportLine {
    pub icon: &'static str,
    pub reporter: String,
    pub summary: String,
}

impl From<&Report> for ReportLine {
    fn from(report: &Report) -> Self {
        Self {
            icon: match report.verdict {
                Verdict::Passed => "✅",
                Verdict::Failed => "❌",
                Verdict::Neutral => "➖",
            },
            reporter: report.reporter.clone(),
            summary: truncate(
                report.summary.lines().next().unwrap_or_default(),
                MAX_REPORT_SUMMARY_CHARS,
            ),
        }
    }
}

/// The end of a failed task's log, ready for a code block.
#[derive(Debug, Clone, Serialize)]
pub struct FailureExcerpt {
    pub task: String,
    /// The last lines, as made by [`log_excerpt`]: safe inside a code block as they are.
    pub lines: String,
}

/// The lines a failure notification shows: the last of `lines` that fit in `max_lines` and
/// `max_chars`, terminal escape sequences removed, and nothing that could close the code
/// block they are shown in.
pub fn log_excerpt(lines: &[String], max_lines: usize, max_chars: usize) -> String {
    let mut kept: Vec<String> = Vec::new();
    let mut used = 0;
    for line in lines.iter().rev().take(max_lines) {
        let clean = strip_ansi(line).replace("```", "'''");
        let clean = truncate(&clean, max_chars.min(200));
        used += clean.chars().count() + 1;
        if used > max_chars {
            break;
        }
        kept.push(clean);
    }
    kept.reverse();
    kept.join("\n")
}

/// `text` without terminal escape sequences (colours, cursor moves) and control characters.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters… final byte in @..~; other escapes: ESC and one char.
            if chars.next_if_eq(&'[').is_some() {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out
}

/// One task in a [`BuildMessage`].
#[derive(Debug, Clone, Serialize)]
pub struct TaskLine {
    pub name: String,
    pub status: String,
    pub exit_code: Option<i64>,
    /// The task may fail without failing the build.
    pub allow_failure: bool,
    /// Its step is run by hand (`when: { manual: true }`): a Run button runs it.
    #[serde(default)]
    pub by_hand: bool,
    /// Its step's name (a step of shards or platforms has several tasks).
    #[serde(default)]
    pub step: String,
}

/// A build's status at a glance.
pub fn status_icon(status: BuildStatus) -> &'static str {
    match status {
        BuildStatus::Queued => "⏳",
        BuildStatus::Running => "🔄",
        BuildStatus::Passed => "✅",
        BuildStatus::Failed => "❌",
        BuildStatus::Errored => "⚠️",
        BuildStatus::Cancelled => "🚫",
    }
}

impl BuildMessage {
    /// The message for a build now `status`, linking to it under `base_url`.
    pub fn new(
        build: &BuildRef,
        status: BuildStatus,
        author: &str,
        subject: &str,
        tasks: Vec<TaskLine>,
        error: Option<String>,
        base_url: &str,
    ) -> Self {
        Self {
            build_id: build.id.0,
            repo: build.repo.clone(),
            branch: build.branch.clone(),
            tag: false,
            note: None,
            vars: Vec::new(),
            commit: build.commit.clone(),
            short_commit: short_commit(&build.commit).to_owned(),
            status: status.as_str().to_owned(),
            icon: status_icon(status),
            passed: status == BuildStatus::Passed,
            finished: status.is_final(),
            author: author.to_owned(),
            subject: truncate(
                subject.lines().next().unwrap_or_default(),
                MAX_SUBJECT_CHARS,
            ),
            url: format!("{}/builds/{}", base_url.trim_end_matches('/'), build.id),
            tasks,
            error,
            mention: None,
            failure: None,
            reports: Vec::new(),
        }
    }

    /// The first task that failed and was not allowed to, if any.
    pub fn failed_task(&self) -> Option<&TaskLine> {
        use crate::build::TaskStatus;
        self.tasks.iter().find(|t| {
            !t.allow_failure
                && [TaskStatus::Failed, TaskStatus::Errored]
                    .iter()
                    .any(|s| s.as_str() == t.status)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_excerpts_keep_the_end_and_cannot_escape_their_block() {
        let lines: Vec<String> = [
            "compiling",
            "\u{1b}[31merror\u{1b}[0m: expected `;`",
            "```@everyone",
            "test result: FAILED\u{7}",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(
            log_excerpt(&lines, 3, 1000),
            "error: expected `;`\n'''@everyone\ntest result: FAILED"
        );
        assert_eq!(log_excerpt(&lines, 10, 25), "test result: FAILED");
        assert_eq!(log_excerpt(&[], 10, 100), "");
    }

    #[test]
    fn truncates_on_characters() {
        assert_eq!(truncate("héllo", 10), "héllo");
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(short_commit("0d1a26e67d8f5eaf"), "0d1a26e67d");
        assert_eq!(short_commit("abc"), "abc");
    }
}

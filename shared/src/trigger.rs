//! What a forge told Kiln, in Kiln's own words: every forge adapter translates its webhooks
//! into a [`ForgeEvent`] at the door, so nothing past the door knows a vendor's payload.

use crate::ident::{BranchName, CommitId, RepoName};

/// A webhook, translated.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForgeEvent {
    /// The forge checking that the hook works.
    Ping,
    /// Commits pushed to a branch: build the newest.
    Push(Push),
    /// A pull or merge request opened, pushed to or reopened: build its head.
    Request(Request),
    /// A command in a comment on a pull or merge request (`/kiln build`).
    Comment(Comment),
    /// A branch went: deleted, or its pull or merge request closed or merged. Its
    /// environments are stopped.
    BranchGone(BranchGone),
    /// Something Kiln does not build (a deleted tag, an event it has no use for).
    Ignored {
        /// Said back to the forge and logged, so people see why nothing happened.
        reason: String,
    },
}

/// Commits pushed to a branch, or a tag pushed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Push {
    /// `owner/name`.
    pub repo: RepoName,
    /// The branch pushed to; for a tag, the tag's name.
    pub branch: BranchName,
    /// Whether a branch or a tag was pushed.
    #[serde(default)]
    pub pushed: Pushed,
    /// The branch's new head, or the commit the tag names: the commit to build.
    pub commit: CommitId,
    /// Where the forge says the repository can be cloned from.
    pub clone_url: String,
    /// The head commit's author, as the forge names them.
    pub author: String,
    /// The head commit's subject line.
    pub subject: String,
    /// Every file the pushed commits added, changed or removed; `None` when the forge's list
    /// may be incomplete (a new or force-pushed branch, a long push).
    pub changed_paths: Option<Vec<String>>,
}

/// What a push moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pushed {
    #[default]
    Branch,
    Tag,
}

impl Pushed {
    /// The kind of build such a push starts.
    pub fn trigger(self) -> TriggerKind {
        match self {
            Self::Branch => TriggerKind::Push,
            Self::Tag => TriggerKind::Tag,
        }
    }
}

/// A pull (GitHub) or merge (GitLab) request whose head is to be built.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Request {
    /// `owner/name`: the repository it asks to merge into.
    pub repo: RepoName,
    /// Its head commit: the commit to build.
    pub head: CommitId,
    /// Where the forge says the repository can be cloned from (the head is fetched from it:
    /// a fork's head too, under the forge's request refs).
    pub clone_url: String,
    /// Who opened (GitHub) or updated (GitLab) it, by login.
    pub author: String,
    /// Whose its head is: the owner (a user's login, or a group's path) of the repository
    /// it comes from, a fork's owner for a fork. Only they can change the head, so a fork's
    /// request is trusted by them, never by whoever opened it.
    #[serde(default)]
    pub head_owner: String,
    /// Its title.
    pub title: String,
    #[serde(flatten)]
    pub about: RequestRef,
}

/// What a build of a request knows of it: on its card, and in its tasks' environment
/// (`KILN_PR`, `KILN_PR_SOURCE_BRANCH`, `KILN_PR_TARGET_BRANCH`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RequestRef {
    /// The request's number (GitLab: its `iid`).
    pub number: u64,
    /// The branch it asks to merge, in its own repository.
    pub source_branch: BranchName,
    /// The branch it asks to merge into.
    pub target_branch: BranchName,
    /// Whether the source branch is in another repository: such a build gets no secrets.
    pub from_fork: bool,
}

impl RequestRef {
    /// The branch a build of the request is of: its source branch, or for a fork's request,
    /// `pr/<number>` (a fork's branch names nothing in the repository).
    pub fn branch(&self) -> BranchName {
        if self.from_fork {
            format!("pr/{}", self.number).into()
        } else {
            self.source_branch.clone()
        }
    }

    /// The variables its tasks see.
    pub fn variables(&self) -> [(&'static str, String); 3] {
        [
            ("KILN_PR", self.number.to_string()),
            ("KILN_PR_SOURCE_BRANCH", self.source_branch.to_string()),
            ("KILN_PR_TARGET_BRANCH", self.target_branch.to_string()),
        ]
    }
}

/// A branch that went, and how.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BranchGone {
    /// `owner/name`.
    pub repo: RepoName,
    pub branch: BranchName,
    /// For people: `deleted`, `pull request #2 closed`, `merge request !1 merged`.
    pub why: String,
}

/// A command someone wrote in a comment on a pull request (GitHub) or merge request (GitLab).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Comment {
    /// `owner/name`.
    pub repo: RepoName,
    /// The pull request's number (GitLab: the merge request's `iid`).
    pub number: u64,
    /// The commenter's login on the forge.
    pub author: String,
    /// The forge's permanent id of the commenter (a number on both forges; a login can be
    /// changed and taken by someone else).
    pub author_id: String,
    /// What followed `/kiln`, e.g. `build` or `logs 12`.
    pub command: String,
}

/// The word a comment starts with to speak to Kiln.
pub const COMMENT_PREFIX: &str = "/kiln";

/// The command in a comment's text, if its first line speaks to Kiln: `/kiln retry 12`
/// gives `retry 12`; `/kiln` alone gives `help`.
pub fn comment_command(text: &str) -> Option<String> {
    let first = text.trim_start().lines().next()?.trim();
    let rest = first.strip_prefix(COMMENT_PREFIX)?;
    if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
        return None; // `/kilnx` is not for Kiln
    }
    let command = rest.trim();
    Some(if command.is_empty() { "help" } else { command }.to_owned())
}

/// What started a build, as `.kiln.yml`'s `when: { event: [...] }` names it.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[schemars(transform = with_pull_request)]
pub enum TriggerKind {
    /// Commits pushed to a branch.
    #[default]
    Push,
    /// A tag pushed.
    Tag,
    /// A merge or pull request opened or updated (`pull_request` is the same).
    #[serde(alias = "pull_request")]
    MergeRequest,
    /// Someone asked in chat or the web console.
    Command,
    /// A schedule of the repository's came due.
    Schedule,
    /// The branch went (deleted, or its pull or merge request closed): its environments'
    /// `on_stop` steps run, and nothing else.
    Stop,
}

/// Adds `pull_request`, which reads as `merge_request`, to the schema's names of triggers.
fn with_pull_request(schema: &mut schemars::Schema) {
    let alias = schemars::json_schema!({
        "description": "The same as `merge_request`, as GitHub names it.",
        "type": "string",
        "const": "pull_request"
    });
    if let Some(kinds) = schema.get_mut("oneOf").and_then(|k| k.as_array_mut()) {
        kinds.push(alias.into());
    }
}

impl TriggerKind {
    /// Every kind of trigger.
    pub const ALL: [Self; 6] = [
        Self::Push,
        Self::Tag,
        Self::MergeRequest,
        Self::Command,
        Self::Schedule,
        Self::Stop,
    ];

    /// Its name in `.kiln.yml` and in `KILN_EVENT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::Tag => "tag",
            Self::MergeRequest => "merge_request",
            Self::Command => "command",
            Self::Schedule => "schedule",
            Self::Stop => "stop",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comment_speaks_to_kiln_on_its_first_line() {
        assert_eq!(comment_command("/kiln build").as_deref(), Some("build"));
        assert_eq!(
            comment_command("  /kiln   logs 12  \nthanks").as_deref(),
            Some("logs 12")
        );
        assert_eq!(comment_command("/kiln").as_deref(), Some("help"));
        assert_eq!(comment_command("/kilnx build"), None);
        assert_eq!(comment_command("please /kiln build"), None);
        assert_eq!(comment_command("LGTM\n/kiln build"), None);
        assert_eq!(comment_command(""), None);
    }
}

//! The few fields of GitHub's payloads that Kiln reads, and their translation.
//!
//! Hand-written and minimal on purpose: every field GitHub adds or changes elsewhere in the
//! payload cannot break us. Parse errors say where the payload was wrong.

use kiln_shared::trigger::{
    BranchGone, Comment, ForgeEvent, Push, Pushed, Request, RequestRef, comment_command,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::vendors::payload::{self, PayloadError};

/// The commit id GitHub sends as `after` when a branch was deleted.
const NULL_COMMIT: &str = "0000000000000000000000000000000000000000";

#[derive(Debug, Deserialize)]
struct Repository {
    full_name: String,
    clone_url: String,
}

/// Just enough of any repository event to find its repository before it is verified.
#[derive(Debug, Deserialize)]
struct AnyRepositoryEvent {
    repository: RepositoryName,
}

#[derive(Debug, Deserialize)]
struct RepositoryName {
    full_name: String,
}

/// <https://docs.github.com/en/webhooks/webhook-events-and-payloads#push>
#[derive(Debug, Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    created: bool,
    #[serde(default)]
    forced: bool,
    repository: Repository,
    head_commit: Option<Commit>,
    #[serde(default)]
    commits: Vec<Commit>,
}

/// GitHub lists at most this many commits in a push payload.
const MAX_LISTED_COMMITS: usize = 20;

#[derive(Debug, Deserialize)]
struct Commit {
    #[serde(default)]
    id: Option<String>,
    message: String,
    author: Person,
    #[serde(default)]
    added: Vec<String>,
    #[serde(default)]
    modified: Vec<String>,
    #[serde(default)]
    removed: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Person {
    name: String,
    #[serde(default)]
    username: Option<String>,
}

/// <https://docs.github.com/en/webhooks/webhook-events-and-payloads#issue_comment>
#[derive(Debug, Deserialize)]
struct IssueCommentPayload {
    action: String,
    issue: Issue,
    comment: IssueComment,
    repository: RepositoryName,
}

#[derive(Debug, Deserialize)]
struct Issue {
    number: u64,
    /// Present when the issue is a pull request.
    #[serde(default)]
    pull_request: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct IssueComment {
    body: String,
    user: User,
}

#[derive(Debug, Deserialize)]
struct User {
    /// Permanent, unlike the login, which its owner can change and someone else then take.
    id: u64,
    login: String,
}

/// <https://docs.github.com/en/webhooks/webhook-events-and-payloads#pull_request>
#[derive(Debug, Deserialize)]
struct PullRequestPayload {
    action: String,
    number: u64,
    pull_request: PullRequest,
    repository: Repository,
}

#[derive(Debug, Deserialize)]
struct PullRequest {
    #[serde(default)]
    merged: bool,
    #[serde(default)]
    title: String,
    user: User,
    head: PullRequestHead,
    base: PullRequestBase,
}

#[derive(Debug, Deserialize)]
struct PullRequestHead {
    #[serde(rename = "ref")]
    branch: String,
    sha: String,
    /// The owner of the repository it comes from.
    #[serde(default)]
    user: Option<User>,
    /// `null` when the fork it came from was deleted.
    repo: Option<RepositoryName>,
}

#[derive(Debug, Deserialize)]
struct PullRequestBase {
    #[serde(rename = "ref")]
    branch: String,
}

fn parse<T: DeserializeOwned>(event: &str, body: &[u8]) -> Result<T, PayloadError> {
    payload::parse("GitHub", event, body)
}

/// The repository a delivery is about, read before the signature is checked because the
/// secret to check it with is the repository's. Nothing else is trusted until then.
pub fn repository_name(event: &str, body: &[u8]) -> Result<String, PayloadError> {
    parse::<AnyRepositoryEvent>(event, body).map(|e| e.repository.full_name)
}

/// Translates a verified delivery of event type `event` (`X-GitHub-Event`).
pub fn translate(event: &str, body: &[u8]) -> Result<ForgeEvent, PayloadError> {
    match event {
        "ping" => Ok(ForgeEvent::Ping),
        "push" => translate_push(parse(event, body)?),
        "issue_comment" => Ok(translate_comment(parse(event, body)?)),
        "pull_request" => Ok(translate_pull_request(parse(event, body)?)),
        other => Ok(ForgeEvent::Ignored {
            reason: format!("Kiln does not act on `{other}` events"),
        }),
    }
}

fn translate_comment(payload: IssueCommentPayload) -> ForgeEvent {
    let ignored = |reason: &str| ForgeEvent::Ignored {
        reason: reason.to_owned(),
    };
    if payload.action != "created" {
        return ignored("only new comments are read");
    }
    if payload.issue.pull_request.is_none() {
        return ignored("a comment on an issue, not a pull request");
    }
    let Some(command) = comment_command(&payload.comment.body) else {
        return ignored("the comment does not start with /kiln");
    };
    ForgeEvent::Comment(Comment {
        repo: payload.repository.full_name.into(),
        number: payload.issue.number,
        author: payload.comment.user.login,
        author_id: payload.comment.user.id.to_string(),
        command,
    })
}

/// An opened, pushed to (`synchronize`) or reopened pull request builds its head; a closed
/// (or merged) one takes its branch's environments with it (a fork's branch is not the
/// repository's and has none).
fn translate_pull_request(payload: PullRequestPayload) -> ForgeEvent {
    let request = payload.pull_request;
    let head = &request.head;
    let own = head.repo.as_ref().is_some_and(|r| {
        r.full_name
            .eq_ignore_ascii_case(&payload.repository.full_name)
    });
    match payload.action.as_str() {
        "opened" | "synchronize" | "reopened" => ForgeEvent::Request(Request {
            repo: payload.repository.full_name.into(),
            head: head.sha.clone().into(),
            clone_url: payload.repository.clone_url,
            author: request.user.login,
            head_owner: head
                .user
                .as_ref()
                .map(|u| u.login.clone())
                .unwrap_or_default(),
            title: request.title,
            about: RequestRef {
                number: payload.number,
                source_branch: head.branch.clone().into(),
                target_branch: request.base.branch.into(),
                from_fork: !own,
            },
        }),
        "closed" if own => ForgeEvent::BranchGone(BranchGone {
            repo: payload.repository.full_name.into(),
            branch: head.branch.clone().into(),
            why: format!(
                "pull request #{} {}",
                payload.number,
                if request.merged { "merged" } else { "closed" }
            ),
        }),
        "closed" => ForgeEvent::Ignored {
            reason: "the closed pull request's branch is a fork's, not the repository's own \
                     branch: it deployed no environment"
                .into(),
        },
        _ => ForgeEvent::Ignored {
            reason: "Kiln builds a pull request when it is opened, pushed to or reopened, and \
                     stops its branch's environments when it closes"
                .into(),
        },
    }
}

fn translate_push(push: PushPayload) -> Result<ForgeEvent, PayloadError> {
    let ignored = |reason: String| Ok(ForgeEvent::Ignored { reason });
    if let Some(tag) = push.git_ref.strip_prefix("refs/tags/") {
        let tag = tag.to_owned();
        return translate_tag(&tag, push);
    }
    let Some(branch) = push.git_ref.strip_prefix("refs/heads/") else {
        return ignored(format!("`{}` is not a branch", push.git_ref));
    };
    if push.deleted || push.after == NULL_COMMIT {
        return Ok(ForgeEvent::BranchGone(BranchGone {
            repo: push.repository.full_name.into(),
            branch: branch.to_owned().into(),
            why: "deleted".into(),
        }));
    }
    let complete = !push.created && !push.forced && push.commits.len() < MAX_LISTED_COMMITS;
    let changed_paths = complete.then(|| {
        let mut paths: Vec<String> = push
            .commits
            .into_iter()
            .flat_map(|c| c.added.into_iter().chain(c.modified).chain(c.removed))
            .collect();
        paths.sort();
        paths.dedup();
        paths
    });
    let (author, subject) = push
        .head_commit
        .map_or_else(Default::default, author_and_subject);
    Ok(ForgeEvent::Push(Push {
        repo: push.repository.full_name.into(),
        branch: branch.to_owned().into(),
        pushed: Pushed::Branch,
        commit: push.after.into(),
        clone_url: push.repository.clone_url,
        author,
        subject,
        changed_paths,
    }))
}

/// A tag pushed builds the commit it names (for an annotated tag, `after` is the tag
/// object's id, `head_commit` the commit's); a deleted one builds nothing.
fn translate_tag(tag: &str, push: PushPayload) -> Result<ForgeEvent, PayloadError> {
    if push.deleted || push.after == NULL_COMMIT {
        return Ok(ForgeEvent::Ignored {
            reason: format!("tag `{tag}` was deleted; nothing to build"),
        });
    }
    let commit = push.head_commit.as_ref().and_then(|c| c.id.clone());
    let commit = commit.unwrap_or(push.after);
    let (author, subject) = push
        .head_commit
        .map_or_else(Default::default, author_and_subject);
    Ok(ForgeEvent::Push(Push {
        repo: push.repository.full_name.into(),
        branch: tag.to_owned().into(),
        pushed: Pushed::Tag,
        commit: commit.into(),
        clone_url: push.repository.clone_url,
        author,
        subject,
        changed_paths: None,
    }))
}

/// A commit's author (their login when GitHub knows it) and subject line.
fn author_and_subject(commit: Commit) -> (String, String) {
    let author = commit.author.username.unwrap_or(commit.author.name);
    let subject = commit.message.lines().next().unwrap_or_default().to_owned();
    (author, subject)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real payloads; see tests/fixtures/SOURCES.md at the repository root.
    const PUSH: &[u8] = include_bytes!("../../../../tests/fixtures/github-push.json");
    const PUSH_TAG: &[u8] = include_bytes!("../../../../tests/fixtures/github-push-tag.json");
    const DELETE: &[u8] =
        include_bytes!("../../../../tests/fixtures/github-push-branch-delete.json");
    const TAG_DELETE: &[u8] =
        include_bytes!("../../../../tests/fixtures/github-push-tag-delete.json");
    const PING: &[u8] = include_bytes!("../../../../tests/fixtures/github-ping.json");
    const PR_CLOSED: &[u8] =
        include_bytes!("../../../../tests/fixtures/github-pull_request-closed.json");
    const PR_COMMENT: &[u8] =
        include_bytes!("../../../../tests/fixtures/github-issue_comment-created-on-pr.json");
    const ISSUE_COMMENT: &[u8] =
        include_bytes!("../../../../tests/fixtures/github-issue_comment-created-on-issue.json");

    #[test]
    fn reads_kiln_commands_in_pull_request_comments_only() {
        let mut payload: serde_json::Value = serde_json::from_slice(PR_COMMENT).expect("JSON");
        // The fixture's comment is not for Kiln: as is, it is ignored.
        assert!(matches!(
            translate("issue_comment", PR_COMMENT).expect("valid"),
            ForgeEvent::Ignored { .. }
        ));
        payload["comment"]["body"] = "/kiln build\r\nplease".into();
        let body = serde_json::to_vec(&payload).expect("JSON");
        assert_eq!(
            translate("issue_comment", &body).expect("valid"),
            ForgeEvent::Comment(Comment {
                repo: "abc/def-ci-webhook-test".into(),
                number: 2,
                author: "lts-def".into(),
                author_id: "10278482".into(),
                command: "build".into(),
            })
        );
        let mut on_issue: serde_json::Value = serde_json::from_slice(ISSUE_COMMENT).expect("JSON");
        on_issue["comment"]["body"] = "/kiln build".into();
        let body = serde_json::to_vec(&on_issue).expect("JSON");
        assert_eq!(
            translate("issue_comment", &body).expect("valid"),
            ForgeEvent::Ignored {
                reason: "a comment on an issue, not a pull request".into()
            }
        );
    }

    #[test]
    fn translates_a_branch_push() {
        assert_eq!(
            translate("push", PUSH).expect("valid"),
            ForgeEvent::Push(Push {
                repo: "baxterthehacker/public-repo".into(),
                branch: "changes".into(),
                pushed: Pushed::Branch,
                commit: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c".into(),
                clone_url: "https://github.com/baxterthehacker/public-repo.git".into(),
                author: "baxterthehacker".into(),
                subject: "Update README.md".into(),
                changed_paths: Some(vec!["README.md".into()]),
            })
        );
        assert_eq!(
            repository_name("push", PUSH).expect("valid"),
            "baxterthehacker/public-repo"
        );
    }

    #[test]
    fn a_deleted_branch_or_closed_pull_request_is_a_branch_gone() {
        assert_eq!(
            translate("push", DELETE).expect("valid"),
            ForgeEvent::BranchGone(BranchGone {
                repo: "bradrydzewski/drone-test-go".into(),
                branch: "feature-branch".into(),
                why: "deleted".into(),
            })
        );
        assert_eq!(
            translate("pull_request", PR_CLOSED).expect("valid"),
            ForgeEvent::BranchGone(BranchGone {
                repo: "Codertocat/Hello-World".into(),
                branch: "changes".into(),
                why: "pull request #2 closed".into(),
            })
        );
        // Edited, or closed from a fork: nothing goes.
        let mut payload: serde_json::Value = serde_json::from_slice(PR_CLOSED).expect("JSON");
        payload["action"] = "edited".into();
        let edited = serde_json::to_vec(&payload).expect("JSON");
        assert!(matches!(
            translate("pull_request", &edited).expect("valid"),
            ForgeEvent::Ignored { .. }
        ));
        payload["action"] = "closed".into();
        payload["pull_request"]["head"]["repo"]["full_name"] = "someone/Hello-World".into();
        let forked = serde_json::to_vec(&payload).expect("JSON");
        assert!(matches!(
            translate("pull_request", &forked).expect("valid"),
            ForgeEvent::Ignored { .. }
        ));
    }

    #[test]
    fn an_opened_or_pushed_pull_request_builds_its_head() {
        for action in ["opened", "synchronize", "reopened"] {
            let mut payload: serde_json::Value = serde_json::from_slice(PR_CLOSED).expect("JSON");
            payload["action"] = action.into();
            let body = serde_json::to_vec(&payload).expect("JSON");
            assert_eq!(
                translate("pull_request", &body).expect("valid"),
                ForgeEvent::Request(Request {
                    repo: "Codertocat/Hello-World".into(),
                    head: "ec26c3e57ca3a959ca5aad62de7213c562f8c821".into(),
                    clone_url: "https://github.com/Codertocat/Hello-World.git".into(),
                    author: "Codertocat".into(),
                    head_owner: "Codertocat".into(),
                    title: "Update the README with new information.".into(),
                    about: RequestRef {
                        number: 2,
                        source_branch: "changes".into(),
                        target_branch: "master".into(),
                        from_fork: false,
                    },
                }),
                "{action}"
            );
        }
        // Someone opening a request from another's fork: the fork's owner is whose it is.
        let mut payload: serde_json::Value = serde_json::from_slice(PR_CLOSED).expect("JSON");
        payload["action"] = "opened".into();
        payload["pull_request"]["head"]["user"]["login"] = "mallory".into();
        let body = serde_json::to_vec(&payload).expect("JSON");
        let ForgeEvent::Request(request) = translate("pull_request", &body).expect("valid") else {
            panic!("a request");
        };
        assert_eq!(
            (request.author.as_str(), request.head_owner.as_str()),
            ("Codertocat", "mallory")
        );
        let mut payload: serde_json::Value = serde_json::from_slice(PR_CLOSED).expect("JSON");
        payload["action"] = "opened".into();
        payload["pull_request"]["head"]["repo"] = serde_json::Value::Null;
        let body = serde_json::to_vec(&payload).expect("JSON");
        let ForgeEvent::Request(request) = translate("pull_request", &body).expect("valid") else {
            panic!("a request from a deleted fork is still built");
        };
        assert!(request.about.from_fork);
        assert_eq!(request.about.branch().as_str(), "pr/2");
    }

    #[test]
    fn a_pushed_tag_builds_its_commit_and_a_deleted_one_nothing() {
        let ForgeEvent::Push(push) = translate("push", PUSH_TAG).expect("valid") else {
            panic!("a tag push is built");
        };
        assert_eq!(push.pushed, Pushed::Tag);
        assert_eq!(push.branch.as_str(), "v0.0.1");
        assert_eq!(
            push.commit.as_str(),
            "d2b75aa7797ec26b088fa2dd527e9d2c052fcedd"
        );
        assert_eq!(push.changed_paths, None);
        // An annotated tag's `after` is the tag object: the commit is the head commit's.
        let mut annotated: serde_json::Value = serde_json::from_slice(PUSH_TAG).expect("JSON");
        annotated["after"] = "f".repeat(40).into();
        let body = serde_json::to_vec(&annotated).expect("JSON");
        let ForgeEvent::Push(push) = translate("push", &body).expect("valid") else {
            panic!("a tag push is built");
        };
        assert_eq!(
            push.commit.as_str(),
            "d2b75aa7797ec26b088fa2dd527e9d2c052fcedd"
        );
        match translate("push", TAG_DELETE).expect("valid") {
            ForgeEvent::Ignored { reason } => {
                assert_eq!(reason, "tag `simple-tag` was deleted; nothing to build");
            }
            other => panic!("expected Ignored, got {other:?}"),
        }
        assert_eq!(translate("ping", PING).expect("valid"), ForgeEvent::Ping);
        assert!(matches!(
            translate("check_suite", b"{}").expect("not parsed"),
            ForgeEvent::Ignored { .. }
        ));
    }

    #[test]
    fn says_where_a_payload_is_wrong() {
        let e = translate("push", br#"{"ref": "refs/heads/x", "after": 7}"#).expect_err("bad");
        assert!(e.to_string().contains("after"), "{e}");
        assert!(repository_name("push", b"[]").is_err());
    }
}

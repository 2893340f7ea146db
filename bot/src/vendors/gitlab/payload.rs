//! GitLab's webhook payloads: verification and translation.
//!
//! GitLab does not sign a webhook's body: it sends the hook's secret token as is in
//! `X-Gitlab-Token`, which [`verify_token`] compares in constant time. A delivery is then
//! translated into a [`ForgeEvent`], reading only the few fields Kiln uses.

use kiln_shared::trigger::{
    BranchGone, Comment, ForgeEvent, Push, Pushed, Request, RequestRef, comment_command,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::vendors::payload::{self, PayloadError};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The commit id GitLab sends as `after` when a branch was deleted, and as `before` when
/// one was created.
const NULL_COMMIT: &str = "0000000000000000000000000000000000000000";

/// GitLab lists at most this many commits in a push payload.
const MAX_LISTED_COMMITS: usize = 20;

/// Whether `token` (`X-Gitlab-Token`) is the hook's `secret`. Both are hashed first, so the
/// comparison takes the same time whatever their lengths and contents.
pub fn verify_token(secret: &[u8], token: &str) -> bool {
    Sha256::digest(secret)
        .ct_eq(&Sha256::digest(token.as_bytes()))
        .into()
}

/// Just enough of any project event to find its project before it is verified.
#[derive(Debug, Deserialize)]
struct AnyProjectEvent {
    project: Project,
}

#[derive(Debug, Deserialize)]
struct Project {
    path_with_namespace: String,
    #[serde(default)]
    git_http_url: String,
}

/// <https://docs.gitlab.com/user/project/integrations/webhook_events/#push-events>
#[derive(Debug, Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    #[serde(default)]
    user_username: String,
    project: Project,
    #[serde(default)]
    commits: Vec<Commit>,
    #[serde(default)]
    total_commits_count: usize,
}

/// <https://docs.gitlab.com/user/project/integrations/webhook_events/#tag-events>
#[derive(Debug, Deserialize)]
struct TagPushPayload {
    #[serde(rename = "ref")]
    git_ref: String,
    /// The commit the tag names; `null` when the tag was deleted.
    #[serde(default)]
    checkout_sha: Option<String>,
    /// Who pushed the tag.
    #[serde(default)]
    user_name: String,
    project: Project,
}

#[derive(Debug, Deserialize)]
struct Commit {
    id: String,
    message: String,
    author: Author,
    #[serde(default)]
    added: Vec<String>,
    #[serde(default)]
    modified: Vec<String>,
    #[serde(default)]
    removed: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Author {
    name: String,
}

/// <https://docs.gitlab.com/user/project/integrations/webhook_events/#comment-events>
#[derive(Debug, Deserialize)]
struct NotePayload {
    user: User,
    project: Project,
    object_attributes: Note,
    #[serde(default)]
    merge_request: Option<MergeRequestRef>,
}

#[derive(Debug, Deserialize)]
struct User {
    id: u64,
    username: String,
}

#[derive(Debug, Deserialize)]
struct Note {
    note: String,
    noteable_type: String,
    /// `create` or `update` (GitLab 15.2 and later); older ones send none.
    #[serde(default)]
    action: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MergeRequestRef {
    iid: u64,
}

/// A merge request event: `object_attributes` of the request.
#[derive(Debug, Deserialize)]
struct MergeRequestPayload {
    project: Project,
    /// Who acted: opened, pushed to, closed.
    #[serde(default)]
    user: Option<Username>,
    object_attributes: MergeRequest,
}

#[derive(Debug, Deserialize)]
struct Username {
    username: String,
}

#[derive(Debug, Deserialize)]
struct MergeRequest {
    iid: u64,
    source_branch: String,
    #[serde(default)]
    target_branch: String,
    source_project_id: u64,
    target_project_id: u64,
    #[serde(default)]
    title: String,
    /// `open`, `update`, `close`, `reopen`, `merge`, …
    #[serde(default)]
    action: Option<String>,
    /// The head before an `update` that pushed commits; absent for other updates.
    #[serde(default)]
    oldrev: Option<String>,
    #[serde(default)]
    last_commit: Option<LastCommit>,
    /// The project it comes from, a fork for a fork's request.
    #[serde(default)]
    source: Option<Project>,
}

#[derive(Debug, Deserialize)]
struct LastCommit {
    id: String,
}

fn parse<T: DeserializeOwned>(event: &str, body: &[u8]) -> Result<T, PayloadError> {
    payload::parse("GitLab", event, body)
}

/// The project a delivery is about (`group/name`), read before the token is checked because
/// the token to check is the project's. Nothing else is trusted until then.
pub fn project_name(event: &str, body: &[u8]) -> Result<String, PayloadError> {
    parse::<AnyProjectEvent>(event, body).map(|e| e.project.path_with_namespace)
}

/// A delivery's identity for deduplication: GitLab's `Idempotency-Key` (17.4 and later, the
/// same across retries), else its `X-Gitlab-Event-UUID`, else what a retry would repeat: a
/// push's project, ref and commits before and after, or a comment's project and id.
pub fn delivery_id(idempotency_key: &str, event_uuid: &str, body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Push {
        project: Project,
        #[serde(rename = "ref")]
        git_ref: String,
        before: String,
        after: String,
    }
    #[derive(Deserialize)]
    struct Note {
        project: Project,
        object_attributes: NoteId,
    }
    #[derive(Deserialize)]
    struct NoteId {
        id: u64,
    }
    if let Some(key) = [idempotency_key, event_uuid]
        .into_iter()
        .find(|id| !id.is_empty())
    {
        return Some(key.to_owned());
    }
    if let Ok(push) = serde_json::from_slice::<Push>(body) {
        let project = push.project.path_with_namespace;
        return Some(format!(
            "{project}:{}:{}:{}",
            push.git_ref, push.before, push.after
        ));
    }
    let note: Note = serde_json::from_slice(body).ok()?;
    Some(format!(
        "{}:note:{}",
        note.project.path_with_namespace, note.object_attributes.id
    ))
}

/// Translates a verified delivery of event type `event` (`X-Gitlab-Event`, e.g. `Push Hook`).
pub fn translate(event: &str, body: &[u8]) -> Result<ForgeEvent, PayloadError> {
    match event {
        "Push Hook" => translate_push(parse(event, body)?),
        "Tag Push Hook" => translate_tag(parse(event, body)?),
        "Note Hook" => Ok(translate_note(parse(event, body)?)),
        "Merge Request Hook" => Ok(translate_merge_request(parse(event, body)?)),
        other => Ok(ForgeEvent::Ignored {
            reason: format!("Kiln does not act on `{other}` events"),
        }),
    }
}

fn translate_note(payload: NotePayload) -> ForgeEvent {
    let ignored = |reason: &str| ForgeEvent::Ignored {
        reason: reason.to_owned(),
    };
    if payload
        .object_attributes
        .action
        .as_deref()
        .is_some_and(|a| a != "create")
    {
        return ignored("only new comments are read");
    }
    let (Some(merge_request), "MergeRequest") = (
        payload.merge_request,
        payload.object_attributes.noteable_type.as_str(),
    ) else {
        return ignored("a comment on something other than a merge request");
    };
    let Some(command) = comment_command(&payload.object_attributes.note) else {
        return ignored("the comment does not start with /kiln");
    };
    ForgeEvent::Comment(Comment {
        repo: payload.project.path_with_namespace.into(),
        number: merge_request.iid,
        author: payload.user.username,
        author_id: payload.user.id.to_string(),
        command,
    })
}

/// A merge request closed or merged takes its source branch's environments with it; a
/// fork's branch is not the project's and has none.
/// An opened or reopened merge request, or one pushed to (an `update` with `oldrev`), builds
/// its head; a closed or merged one takes its branch's environments with it (a fork's branch
/// has none).
fn translate_merge_request(payload: MergeRequestPayload) -> ForgeEvent {
    let request = payload.object_attributes;
    let from_fork = request.source_project_id != request.target_project_id;
    let pushed = request.oldrev.as_deref().is_some_and(|r| !r.is_empty());
    let how = match request.action.as_deref() {
        Some("open" | "reopen") => None,
        Some("update") if pushed => None,
        Some("close") => Some("closed"),
        Some("merge") => Some("merged"),
        _ => {
            return ForgeEvent::Ignored {
                reason: "Kiln builds a merge request when it is opened, pushed to or reopened, \
                         and stops its environments when it is closed or merged"
                    .into(),
            };
        }
    };
    let repo = payload.project.path_with_namespace.into();
    match (how, request.last_commit) {
        (None, Some(head)) => ForgeEvent::Request(Request {
            repo,
            head: head.id.into(),
            clone_url: payload.project.git_http_url,
            author: payload.user.map(|u| u.username).unwrap_or_default(),
            // The namespace (a user's or a group's path) of the project it comes from.
            head_owner: request
                .source
                .as_ref()
                .and_then(|p| p.path_with_namespace.rsplit_once('/'))
                .map(|(owner, _)| owner.to_owned())
                .unwrap_or_default(),
            title: request.title,
            about: RequestRef {
                number: request.iid,
                source_branch: request.source_branch.into(),
                target_branch: request.target_branch.into(),
                from_fork,
            },
        }),
        (None, None) => ForgeEvent::Ignored {
            reason: "the merge request names no last commit".into(),
        },
        (Some(_), _) if from_fork => ForgeEvent::Ignored {
            reason: "the merge request comes from a fork".into(),
        },
        (Some(how), _) => ForgeEvent::BranchGone(BranchGone {
            repo,
            branch: request.source_branch.into(),
            why: format!("merge request !{} {how}", request.iid),
        }),
    }
}

fn translate_push(push: PushPayload) -> Result<ForgeEvent, PayloadError> {
    let ignored = |reason: String| Ok(ForgeEvent::Ignored { reason });
    let Some(branch) = push.git_ref.strip_prefix("refs/heads/") else {
        return ignored(format!("`{}` is not a branch", push.git_ref));
    };
    if push.after == NULL_COMMIT {
        return Ok(ForgeEvent::BranchGone(BranchGone {
            repo: push.project.path_with_namespace.into(),
            branch: branch.to_owned().into(),
            why: "deleted".into(),
        }));
    }
    // A new branch lists only its new commits, a long push only some: then what changed is
    // not known.
    let complete = push.before != NULL_COMMIT
        && push.commits.len() == push.total_commits_count
        && push.total_commits_count < MAX_LISTED_COMMITS;
    let head = push.commits.iter().find(|c| c.id == push.after);
    let (author, subject) = match head {
        Some(c) => (
            c.author.name.clone(),
            c.message.lines().next().unwrap_or_default().to_owned(),
        ),
        None => (push.user_username.clone(), String::new()),
    };
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
    Ok(ForgeEvent::Push(Push {
        repo: push.project.path_with_namespace.into(),
        branch: branch.to_owned().into(),
        pushed: Pushed::Branch,
        commit: push.after.into(),
        clone_url: push.project.git_http_url,
        author,
        subject,
        changed_paths,
    }))
}

/// A tag pushed builds the commit it names (`checkout_sha`; `after` is an annotated tag's
/// own object); a deleted one builds nothing. GitLab lists no commits for a tag, so the
/// pusher stands for the author.
fn translate_tag(push: TagPushPayload) -> Result<ForgeEvent, PayloadError> {
    let tag = push
        .git_ref
        .strip_prefix("refs/tags/")
        .unwrap_or(&push.git_ref);
    let Some(commit) = push.checkout_sha.filter(|c| c != NULL_COMMIT) else {
        return Ok(ForgeEvent::Ignored {
            reason: format!("tag `{tag}` was deleted; nothing to build"),
        });
    };
    Ok(ForgeEvent::Push(Push {
        repo: push.project.path_with_namespace.into(),
        branch: tag.to_owned().into(),
        pushed: Pushed::Tag,
        commit: commit.into(),
        clone_url: push.project.git_http_url,
        author: push.user_name,
        subject: String::new(),
        changed_paths: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real payloads; see tests/fixtures/SOURCES.md at the repository root.
    const PUSH: &[u8] = include_bytes!("../../../../tests/fixtures/gitlab-push-capture.json");
    const DOCS_PUSH: &[u8] = include_bytes!("../../../../tests/fixtures/gitlab-push.json");
    const DELETE: &[u8] =
        include_bytes!("../../../../tests/fixtures/gitlab-push-branch-delete-capture.json");
    const TAG: &[u8] = include_bytes!("../../../../tests/fixtures/gitlab-tag_push.json");
    const MERGE_REQUEST: &[u8] =
        include_bytes!("../../../../tests/fixtures/gitlab-merge_request.json");
    const NOTE: &[u8] = include_bytes!("../../../../tests/fixtures/gitlab-note-merge_request.json");
    const MERGED: &[u8] =
        include_bytes!("../../../../tests/fixtures/gitlab-merge_request-merge-capture.json");

    #[test]
    fn translates_a_branch_push() {
        assert_eq!(
            translate("Push Hook", PUSH).expect("valid"),
            ForgeEvent::Push(Push {
                repo: "gitlab-org/hello-world".into(),
                branch: "master".into(),
                pushed: Pushed::Branch,
                commit: "2adc9465c4edfc33834e173fe89436a7cb899a1d".into(),
                clone_url: "https://gitlab.com/gitlab-org/hello-world.git".into(),
                author: "Sid Sijbrandij".into(),
                subject: "added readme".into(),
                changed_paths: Some(vec!["README.md".into()]),
            })
        );
        assert_eq!(
            project_name("Push Hook", PUSH).expect("valid"),
            "gitlab-org/hello-world"
        );
    }

    #[test]
    fn a_push_listing_some_of_its_commits_has_no_changed_paths() {
        let ForgeEvent::Push(push) = translate("Push Hook", DOCS_PUSH).expect("valid") else {
            panic!("a push");
        };
        assert_eq!(push.repo, "mike/diaspora");
        assert_eq!(push.commit, "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
        assert_eq!(push.author, "GitLab dev user");
        assert_eq!(push.changed_paths, None, "4 commits pushed, 2 listed");
    }

    #[test]
    fn a_deleted_branch_or_merged_request_is_a_branch_gone() {
        assert_eq!(
            translate("Push Hook", DELETE).expect("valid"),
            ForgeEvent::BranchGone(BranchGone {
                repo: "gitlab-org/hello-world".into(),
                branch: "feature".into(),
                why: "deleted".into(),
            })
        );
        assert_eq!(
            translate("Merge Request Hook", MERGED).expect("valid"),
            ForgeEvent::BranchGone(BranchGone {
                repo: "gitlab-org/hello-world".into(),
                branch: "feature".into(),
                why: "merge request !1 merged".into(),
            })
        );
    }

    #[test]
    fn an_opened_or_pushed_merge_request_builds_its_head() {
        let request = |payload: &serde_json::Value| {
            let body = serde_json::to_vec(payload).expect("JSON");
            match translate("Merge Request Hook", &body).expect("valid") {
                ForgeEvent::Request(request) => request,
                other => panic!("expected a request, got {other:?}"),
            }
        };
        let mut payload: serde_json::Value = serde_json::from_slice(MERGE_REQUEST).expect("JSON");
        let opened = request(&payload);
        assert_eq!(
            opened,
            Request {
                repo: "gitlabhq/gitlab-test".into(),
                head: "da1560886d4f094c3e6c9ef40349f7d38b5d27d7".into(),
                clone_url: "http://example.com/gitlabhq/gitlab-test.git".into(),
                author: "root".into(),
                head_owner: "awesome_space".into(),
                title: "MS-Viewport".into(),
                about: RequestRef {
                    number: 1,
                    source_branch: "ms-viewport".into(),
                    target_branch: "master".into(),
                    from_fork: false,
                },
            }
        );
        payload["object_attributes"]["action"] = "update".into();
        payload["object_attributes"]["oldrev"] = "0".repeat(40).into();
        payload["object_attributes"]["source_project_id"] = 99.into();
        assert!(request(&payload).about.from_fork);
    }

    #[test]
    fn a_pushed_tag_builds_the_commit_it_names() {
        let ForgeEvent::Push(push) = translate("Tag Push Hook", TAG).expect("valid") else {
            panic!("a tag push is built");
        };
        assert_eq!(push.pushed, Pushed::Tag);
        assert_eq!(push.branch.as_str(), "v1.0.0");
        assert_eq!(
            push.commit.as_str(),
            "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7"
        );
        assert_eq!(push.author, "John Smith");
    }

    #[test]
    fn ignores_deleted_tags_and_the_rest_with_a_reason() {
        let reason = |event: &str, body: &[u8]| match translate(event, body).expect("valid") {
            ForgeEvent::Ignored { reason } => reason,
            other => panic!("expected Ignored, got {other:?}"),
        };
        let mut deleted: serde_json::Value = serde_json::from_slice(TAG).expect("JSON");
        deleted["after"] = NULL_COMMIT.into();
        deleted["checkout_sha"] = serde_json::Value::Null;
        let deleted = serde_json::to_vec(&deleted).expect("JSON");
        assert_eq!(
            reason("Tag Push Hook", &deleted),
            "tag `v1.0.0` was deleted; nothing to build"
        );
        let mut edited: serde_json::Value = serde_json::from_slice(MERGE_REQUEST).expect("JSON");
        edited["object_attributes"]["action"] = "update".into();
        let edited = serde_json::to_vec(&edited).expect("JSON");
        assert!(reason("Merge Request Hook", &edited).contains("pushed to"));
        assert_eq!(
            reason("Note Hook", NOTE),
            "the comment does not start with /kiln"
        );
        for body in [TAG, MERGE_REQUEST, NOTE] {
            assert!(project_name("any", body).is_ok());
        }
    }

    #[test]
    fn reads_kiln_commands_in_merge_request_notes() {
        let mut payload: serde_json::Value = serde_json::from_slice(NOTE).expect("JSON");
        payload["object_attributes"]["note"] = "/kiln build".into();
        let body = serde_json::to_vec(&payload).expect("JSON");
        assert_eq!(
            translate("Note Hook", &body).expect("valid"),
            ForgeEvent::Comment(Comment {
                repo: "gitlab-org/gitlab-test".into(),
                number: 1,
                author: "root".into(),
                author_id: "1".into(),
                command: "build".into(),
            })
        );
        payload["object_attributes"]["noteable_type"] = "Issue".into();
        let body = serde_json::to_vec(&payload).expect("JSON");
        assert!(matches!(
            translate("Note Hook", &body).expect("valid"),
            ForgeEvent::Ignored { .. }
        ));
    }

    #[test]
    fn the_token_must_match_exactly() {
        assert!(verify_token(b"s3cret", "s3cret"));
        assert!(!verify_token(b"s3cret", "s3cre"));
        assert!(!verify_token(b"s3cret", "s3cret "));
        assert!(!verify_token(b"s3cret", ""));
    }

    #[test]
    fn a_delivery_is_known_by_its_key_else_by_what_a_retry_repeats() {
        assert_eq!(delivery_id("k1", "u1", PUSH).as_deref(), Some("k1"));
        assert_eq!(delivery_id("", "u1", PUSH).as_deref(), Some("u1"));
        assert_eq!(
            delivery_id("", "", PUSH).as_deref(),
            Some(
                "gitlab-org/hello-world:refs/heads/master:\
                 9217710ce8c7e1eae7a5d1c45f6e43e1c769f866:2adc9465c4edfc33834e173fe89436a7cb899a1d"
            )
        );
        assert_eq!(
            delivery_id("", "", NOTE).as_deref(),
            Some("gitlab-org/gitlab-test:note:1244")
        );
        assert_eq!(delivery_id("", "", b"{}"), None);
    }

    #[test]
    fn says_where_a_payload_is_wrong() {
        let e = translate(
            "Push Hook",
            br#"{"ref": "refs/heads/x", "before": "a", "after": 7}"#,
        )
        .expect_err("bad");
        assert!(e.to_string().contains("after"), "{e}");
        assert!(project_name("Push Hook", b"[]").is_err());
    }
}

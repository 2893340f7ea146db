//! A forge on disk: a bare repository the bot and worker clone from, and the GitHub push
//! payload that announces a commit to it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A bare repository (the "remote") and a working clone to commit from.
#[derive(Debug)]
pub struct TestRepo {
    pub bare: PathBuf,
    work: PathBuf,
    _dir: tempfile::TempDir,
}

/// Runs git in `dir` as the tests' committer, fails the test if it fails, and returns what
/// it printed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Octo Cat")
        .env("GIT_AUTHOR_EMAIL", "octocat@example.com")
        .env("GIT_COMMITTER_NAME", "Octo Cat")
        .env("GIT_COMMITTER_EMAIL", "octocat@example.com")
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

impl TestRepo {
    /// An empty bare repository with a working clone.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let bare = dir.path().join("origin.git");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&bare).expect("mkdir");
        git(
            &bare,
            &["init", "--quiet", "--bare", "--initial-branch=master"],
        );
        git(
            dir.path(),
            &[
                "clone",
                "--quiet",
                bare.to_str().expect("utf-8 path"),
                "work",
            ],
        );
        Self {
            bare,
            work,
            _dir: dir,
        }
    }

    /// Commits `files` (path, contents) on `branch`, pushes it, and returns the commit id.
    pub fn commit(&self, branch: &str, message: &str, files: &[(&str, &str)]) -> String {
        let current = git(&self.work, &["symbolic-ref", "--short", "HEAD"]);
        if current != branch {
            git(&self.work, &["checkout", "--quiet", "-B", branch]);
        }
        for (path, contents) in files {
            let file = self.work.join(path);
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir).expect("mkdir");
            }
            std::fs::write(file, contents).expect("write file");
            git(&self.work, &["add", path]);
        }
        git(
            &self.work,
            &["commit", "--quiet", "--allow-empty", "-m", message],
        );
        self.force_push("HEAD", branch);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// Moves `branch` to `commit`, in the working clone and the bare repository (forced):
    /// the next [`TestRepo::commit`] on it builds on `commit`.
    pub fn reset(&self, branch: &str, commit: &str) {
        git(&self.work, &["checkout", "--quiet", "-B", branch, commit]);
        self.force_push(commit, branch);
    }

    /// Sets `branch` of the bare repository to `source`, forced.
    fn force_push(&self, source: &str, branch: &str) {
        let refspec = format!("{source}:refs/heads/{branch}");
        git(
            &self.work,
            &["push", "--quiet", "--force", "origin", &refspec],
        );
    }

    /// Tags `commit` as `tag` (annotated, as releases are) and pushes the tag.
    pub fn tag(&self, tag: &str, commit: &str) {
        git(
            &self.work,
            &["tag", "--annotate", "--message", tag, tag, commit],
        );
        let refspec = format!("refs/tags/{tag}:refs/tags/{tag}");
        git(&self.work, &["push", "--quiet", "origin", &refspec]);
    }

    /// Where `branch` of the bare repository is, if it exists.
    pub fn head(&self, branch: &str) -> Option<String> {
        let output = Command::new("git")
            .arg("--git-dir")
            .arg(&self.bare)
            .args(["rev-parse", "--verify", "--quiet"])
            .arg(format!("refs/heads/{branch}"))
            .output()
            .expect("git runs");
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// The clone URL the payload names: the bare repository's path.
    pub fn clone_url(&self) -> String {
        self.bare.display().to_string()
    }
}

impl Default for TestRepo {
    fn default() -> Self {
        Self::new()
    }
}

/// GitHub's published push payload (tests/fixtures/github-push.json), pointed at `repo`'s
/// `branch` and `commit`.
/// GitHub's push payload of a tag (tests/fixtures/github-push-tag.json), pointed at `repo`'s
/// `tag` of `commit`; `after` is the annotated tag's own object, as GitHub sends it.
pub fn tag_payload(repo_name: &str, tag: &str, commit: &str, clone_url: &str) -> Vec<u8> {
    let mut payload: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/github-push-tag.json"))
            .expect("fixture is JSON");
    payload["ref"] = format!("refs/tags/{tag}").into();
    payload["after"] = "f".repeat(40).into();
    payload["head_commit"]["id"] = commit.into();
    payload["repository"]["full_name"] = repo_name.into();
    payload["repository"]["clone_url"] = clone_url.into();
    serde_json::to_vec(&payload).expect("serialises")
}

/// GitLab's push payload (the captured fixture) rewritten to announce `commit` on `branch` of
/// `repo_name`, cloneable from `clone_url`, by `author`.
pub fn gitlab_push_payload(
    repo_name: &str,
    branch: &str,
    commit: &str,
    clone_url: &str,
    author: &str,
) -> Vec<u8> {
    let mut payload: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/gitlab-push-capture.json"))
            .expect("fixture is JSON");
    payload["ref"] = format!("refs/heads/{branch}").into();
    payload["after"] = commit.into();
    payload["checkout_sha"] = commit.into();
    payload["commits"][0]["id"] = commit.into();
    payload["commits"][0]["author"]["name"] = author.into();
    payload["project"]["path_with_namespace"] = repo_name.into();
    payload["project"]["git_http_url"] = clone_url.into();
    serde_json::to_vec(&payload).expect("serialises")
}

/// GitHub's `issue_comment` payload on a pull request (the captured fixture), rewritten:
/// `login` (user id `user_id`) wrote `body` on pull request `number` of `repo_name`.
pub fn github_comment_payload(
    repo_name: &str,
    number: u64,
    login: &str,
    user_id: u64,
    body: &str,
) -> Vec<u8> {
    let mut payload: serde_json::Value = serde_json::from_str(include_str!(
        "../fixtures/github-issue_comment-created-on-pr.json"
    ))
    .expect("fixture is JSON");
    payload["repository"]["full_name"] = repo_name.into();
    payload["issue"]["number"] = number.into();
    payload["comment"]["user"]["login"] = login.into();
    payload["comment"]["user"]["id"] = user_id.into();
    payload["comment"]["body"] = body.into();
    serde_json::to_vec(&payload).expect("serialises")
}

/// GitHub's `pull_request` payload (the published `closed` example), rewritten: `author`
/// did `action` (`opened`, `synchronize`) to request `number` of `repo_name`, whose head is
/// `head` on `branch`, of a fork when `from_fork`.
pub fn pull_request_payload(
    repo_name: &str,
    action: &str,
    number: u64,
    (branch, head, from_fork): (&str, &str, bool),
    author: &str,
    clone_url: &str,
) -> Vec<u8> {
    let mut payload: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/github-pull_request-closed.json"))
            .expect("fixture is JSON");
    // A fork is its author's; the repository's own branches are its owner's.
    let (head_repo, head_owner) = if from_fork {
        (format!("{author}/fork"), author)
    } else {
        let owner = repo_name.split('/').next().unwrap_or_default();
        (repo_name.to_owned(), owner)
    };
    payload["action"] = action.into();
    payload["number"] = number.into();
    payload["pull_request"]["number"] = number.into();
    payload["pull_request"]["user"]["login"] = author.into();
    payload["pull_request"]["head"]["ref"] = branch.into();
    payload["pull_request"]["head"]["sha"] = head.into();
    payload["pull_request"]["head"]["repo"]["full_name"] = head_repo.into();
    payload["pull_request"]["head"]["user"]["login"] = head_owner.into();
    payload["repository"]["full_name"] = repo_name.into();
    payload["repository"]["clone_url"] = clone_url.into();
    serde_json::to_vec(&payload).expect("serialises")
}

/// GitLab's Note Hook payload on a merge request (the docs' example), rewritten: user
/// `user_id` (`username`) wrote `note` on merge request `iid` of `repo_name`.
pub fn gitlab_note_payload(
    repo_name: &str,
    iid: u64,
    user_id: u64,
    username: &str,
    note: &str,
) -> Vec<u8> {
    let mut payload: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/gitlab-note-merge_request.json"))
            .expect("fixture is JSON");
    payload["project"]["path_with_namespace"] = repo_name.into();
    payload["merge_request"]["iid"] = iid.into();
    payload["user"]["id"] = user_id.into();
    payload["user"]["username"] = username.into();
    payload["object_attributes"]["note"] = note.into();
    serde_json::to_vec(&payload).expect("serialises")
}

pub fn push_payload(
    repo_name: &str,
    branch: &str,
    commit: &str,
    clone_url: &str,
    subject: &str,
) -> Vec<u8> {
    let mut payload: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/github-push.json"))
            .expect("fixture is JSON");
    payload["ref"] = format!("refs/heads/{branch}").into();
    payload["after"] = commit.into();
    payload["head_commit"]["id"] = commit.into();
    payload["head_commit"]["message"] = subject.into();
    payload["repository"]["full_name"] = repo_name.into();
    payload["repository"]["clone_url"] = clone_url.into();
    serde_json::to_vec(&payload).expect("serialises")
}

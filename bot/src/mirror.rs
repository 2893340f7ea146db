//! A bare mirror per repository, so reading `.kiln.yml` at a commit is a local `git show`
//! after an incremental fetch, not a clone per build.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};

use kiln_shared::command::Target;
use sha2::{Digest, Sha256};
use tokio::process::Command;
use tokio::sync::Mutex;

/// Why a file could not be read from a repository.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("git {action} failed: {detail}")]
    Git { action: String, detail: String },
    #[error("cannot run git: {0}")]
    Spawn(#[from] std::io::Error),
}

/// A branch or commit, as it is in a repository now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The full commit id.
    pub commit: String,
    /// The commit's author and subject line.
    pub author: String,
    pub subject: String,
    /// The branch asked for, or for a commit, the branches that contain it.
    pub branches: Vec<String>,
}

/// Bare mirrors under one directory, one per clone URL.
#[derive(Debug, Clone)]
pub struct Mirrors {
    root: PathBuf,
    /// One lock per mirror: two fetches into the same repository would fight over its refs.
    locks: Arc<StdMutex<HashMap<PathBuf, Arc<Mutex<()>>>>>,
}

impl Mirrors {
    /// Mirrors kept under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            locks: Arc::default(),
        }
    }

    /// The contents of `path` at `commit`, or `None` if the commit has no such file.
    pub async fn read_file(
        &self,
        clone_url: &str,
        commit: &str,
        path: &str,
    ) -> Result<Option<Vec<u8>>, MirrorError> {
        let mirror = self.update(clone_url, Some(commit)).await?;
        if !has_commit(&mirror, commit).await? {
            return Err(MirrorError::Git {
                action: "fetch".into(),
                detail: format!("commit {commit} is not in {clone_url}"),
            });
        }
        let output = git(&mirror)
            .args(["cat-file", "blob", &format!("{commit}:{path}")])
            .output()
            .await?;
        Ok(output.status.success().then_some(output.stdout))
    }

    /// What `target` (a branch, or a commit id or its prefix) is in `clone_url` now, after a
    /// fetch: `None` if there is no such branch or commit.
    pub async fn resolve(
        &self,
        clone_url: &str,
        target: &Target,
    ) -> Result<Option<Resolved>, MirrorError> {
        let mirror = self.update(clone_url, None).await?;
        let reference = match target {
            Target::Branch(branch) => format!("refs/heads/{branch}^{{commit}}"),
            Target::Commit(commit) => format!("{commit}^{{commit}}"),
        };
        let output = git(&mirror)
            .args([
                "rev-parse",
                "--verify",
                "--quiet",
                "--end-of-options",
                &reference,
            ])
            .output()
            .await?;
        if !output.status.success() {
            return Ok(None);
        }
        let commit = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        // git prefers a branch named like a short commit id over the commit.
        if let Target::Commit(prefix) = target
            && !commit.starts_with(prefix.as_str())
        {
            return Ok(None);
        }
        let log = git(&mirror)
            .args(["log", "-1", "--format=%an%x00%s", &commit])
            .output()
            .await?;
        let log = String::from_utf8_lossy(&log.stdout);
        let (author, subject) = log.trim_end().split_once('\0').unwrap_or(("", ""));
        let branches = match target {
            Target::Branch(branch) => vec![branch.clone()],
            Target::Commit(_) => {
                let output = git(&mirror)
                    .args(["branch", "--contains", &commit, "--format=%(refname:short)"])
                    .output()
                    .await?;
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .map(str::to_owned)
                    .collect()
            }
        };
        Ok(Some(Resolved {
            commit,
            author: author.to_owned(),
            subject: subject.to_owned(),
            branches,
        }))
    }

    /// Makes sure the mirror of `clone_url` is there and has `commit`, fetching only when it
    /// does not; with no commit, fetches always (branch heads move).
    async fn update(&self, clone_url: &str, commit: Option<&str>) -> Result<PathBuf, MirrorError> {
        let digest = hex::encode(Sha256::digest(clone_url.as_bytes()));
        let mirror = self.root.join(format!("{}.git", &digest[..16]));
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(mirror.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        if !mirror.exists() {
            tokio::fs::create_dir_all(&self.root).await?;
            run(
                "clone",
                Command::new("git")
                    .args(["clone", "--mirror", "--quiet", clone_url])
                    .arg(&mirror),
            )
            .await?;
        } else {
            let present = match commit {
                Some(commit) => has_commit(&mirror, commit).await?,
                None => false,
            };
            if !present {
                run(
                    "fetch",
                    git(&mirror).args(["fetch", "--quiet", "--prune", "origin"]),
                )
                .await?;
            }
        }
        Ok(mirror)
    }
}

fn git(mirror: &Path) -> Command {
    let mut command = Command::new("git");
    command.arg("--git-dir").arg(mirror);
    command
}

async fn has_commit(mirror: &Path, commit: &str) -> Result<bool, MirrorError> {
    let status = git(mirror)
        .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
        .stderr(std::process::Stdio::null())
        .status()
        .await?;
    Ok(status.success())
}

async fn run(action: &str, command: &mut Command) -> Result<(), MirrorError> {
    let output = command.env("GIT_TERMINAL_PROMPT", "0").output().await?;
    if output.status.success() {
        return Ok(());
    }
    Err(MirrorError::Git {
        action: action.to_owned(),
        detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}

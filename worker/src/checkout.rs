//! Checkouts from a per-repository mirror cache: the first task of a repository clones it
//! once; every later one fetches only what is new, then makes a cheap local clone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};

use sha2::{Digest, Sha256};
use tokio::process::Command;
use tokio::sync::Mutex;

/// Why a commit could not be checked out.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("git {action} failed: {detail}")]
    Git {
        action: &'static str,
        detail: String,
    },
    #[error("cannot run git: {0}")]
    Io(#[from] std::io::Error),
}

/// Mirrors and work directories under one root.
#[derive(Debug, Clone)]
pub struct Checkouts {
    root: PathBuf,
    /// One lock per mirror: two fetches into one repository would fight over its refs.
    locks: Arc<StdMutex<HashMap<PathBuf, Arc<Mutex<()>>>>>,
}

impl Checkouts {
    /// Keeps mirrors in `root/mirrors` and work directories in `root/work`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            locks: Arc::default(),
        }
    }

    /// Checks `commit` of `clone_url` out into a fresh directory called `name`.
    pub async fn checkout(
        &self,
        clone_url: &str,
        commit: &str,
        name: &str,
    ) -> Result<PathBuf, CheckoutError> {
        let mirror = self.mirror(clone_url, commit).await?;
        let dir = self.work_dir(name);
        if dir.exists() {
            tokio::fs::remove_dir_all(&dir).await?;
        }
        tokio::fs::create_dir_all(dir.parent().unwrap_or(&self.root)).await?;
        // A self-contained clone, so git works inside a container that sees only the
        // checkout; copied, not hard-linked, so a task (root in its container) that rewrites
        // its objects cannot corrupt the mirror every later checkout comes from. No template:
        // a task needs no sample hooks, and each is a file to write.
        run(
            "clone",
            Command::new("git")
                .args([
                    "clone",
                    "--quiet",
                    "--no-checkout",
                    "--no-hardlinks",
                    "--template=",
                ])
                .arg(&mirror)
                .arg(&dir),
        )
        .await?;
        run(
            "checkout",
            Command::new("git")
                .arg("-C")
                .arg(&dir)
                .args(["checkout", "--quiet", "--detach", commit]),
        )
        .await?;
        Ok(dir)
    }

    /// Where the work directory called `name` is.
    pub fn work_dir(&self, name: &str) -> PathBuf {
        self.root.join("work").join(name)
    }

    /// Removes a work directory; a missing one is fine.
    pub async fn remove(&self, dir: &Path) {
        if let Err(error) = tokio::fs::remove_dir_all(dir).await
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), %error, "cannot remove a work directory");
        }
    }

    /// The mirror of `clone_url`, holding `commit`.
    async fn mirror(&self, clone_url: &str, commit: &str) -> Result<PathBuf, CheckoutError> {
        let digest = hex::encode(Sha256::digest(clone_url.as_bytes()));
        let mirror = self
            .root
            .join("mirrors")
            .join(format!("{}.git", &digest[..16]));
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(mirror.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        if !mirror.exists() {
            tokio::fs::create_dir_all(self.root.join("mirrors")).await?;
            run(
                "clone",
                // Through git's transport even from a local path, so the mirror holds packs,
                // not a file per object: each checkout copies the mirror's objects.
                Command::new("git")
                    .args(["clone", "--mirror", "--no-local", "--quiet", clone_url])
                    .arg(&mirror),
            )
            .await?;
        } else {
            let present = Command::new("git")
                .arg("--git-dir")
                .arg(&mirror)
                .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
                .stderr(std::process::Stdio::null())
                .status()
                .await?;
            if !present.success() {
                run(
                    "fetch",
                    // Kept as a pack however few objects came, for the same reason.
                    Command::new("git")
                        .arg("--git-dir")
                        .arg(&mirror)
                        .args(["-c", "fetch.unpackLimit=1"])
                        .args(["fetch", "--quiet", "--prune", "origin"]),
                )
                .await?;
            }
        }
        Ok(mirror)
    }
}

async fn run(action: &'static str, command: &mut Command) -> Result<(), CheckoutError> {
    let output = command.env("GIT_TERMINAL_PROMPT", "0").output().await?;
    if output.status.success() {
        return Ok(());
    }
    Err(CheckoutError::Git {
        action,
        detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}

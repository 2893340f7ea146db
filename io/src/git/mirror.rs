//! A bare mirror per repository under one directory, cloned once and then only fetched:
//! the bot reads `.kiln.yml` and branch heads from it, the worker checks commits out of it.
//!
//! One set of git flags for both, so the two mirrors of a repository hold the same thing:
//!
//! - `clone --mirror`: every ref as the remote has it; `fetch --prune` drops branches the
//!   remote deleted.
//! - `clone --no-local`: through git's transport even when the clone URL is a path, so the
//!   mirror holds packs, as one cloned from a server does, never a file per object
//!   hard-linked to or copied from the origin's store. The worker copies a mirror's objects
//!   into each checkout it makes (a few packs copy faster than thousands of small files);
//!   a tree of loose objects also slows the bot's reads; and a repository given by path (a
//!   test's, a local run's) is mirrored the way a real remote is, so what is tested is what
//!   runs.
//! - `fetch -c fetch.unpackLimit=1`: a fetch's objects are kept as the pack they came in,
//!   however few, for the same reasons (git's default unpacks fewer than 100 into a file
//!   each). Git's own `gc --auto` after a fetch keeps the count of packs bounded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::process::Command;
use tokio::sync::{Mutex, OnceCell, OwnedMutexGuard};

use super::{GitError, has_commit, in_repository, run};

/// The longest a clone or a fetch may take. A remote that stops answering would otherwise
/// hold its mirror's lock, and the build or task waiting on it, for good.
pub const MIRROR_LIMIT: Duration = Duration::from_secs(10 * 60);

/// What a clone is made in before it is moved into place: `.clone-` and a random name.
const CLONE_ASIDE_PREFIX: &str = ".clone-";

/// Bare mirrors under one directory, one per clone URL. Clones of this share its locks.
///
/// Invariant: one process uses a directory of mirrors at a time. The locks are this
/// process's, and a clone left aside in the directory is taken for one whose process died.
#[derive(Debug, Clone)]
pub struct Mirrors {
    root: PathBuf,
    /// How long a clone or a fetch may take before it is stopped.
    limit: Duration,
    /// One lock per mirror: two fetches into the same repository would fight over its refs.
    locks: Arc<StdMutex<HashMap<PathBuf, Arc<Mutex<()>>>>>,
    /// Clones left aside by a process that was killed while it cloned, removed before the
    /// first mirror is used.
    swept: Arc<OnceCell<()>>,
}

/// A mirror after [`Mirrors::update`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Updated {
    /// Where the mirror is.
    pub path: PathBuf,
    /// Whether it was fetched into. A fetch may repack: whatever kept the mirror's packs
    /// open from before it (a running `git cat-file`) holds replaced files on disk.
    pub fetched: bool,
}

impl Mirrors {
    /// Mirrors kept in `root`, made when the first mirror is.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            limit: MIRROR_LIMIT,
            locks: Arc::default(),
            swept: Arc::default(),
        }
    }

    /// The same mirrors, with clones and fetches stopped after `limit` instead of
    /// [`MIRROR_LIMIT`].
    #[must_use]
    pub fn with_limit(self, limit: Duration) -> Self {
        Self { limit, ..self }
    }

    /// How long a clone or a fetch may take.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Where the mirror of `clone_url` is, made or not: named by a hash of the URL, so any
    /// URL makes a file name, and the bot's and a worker's are named alike.
    pub fn path(&self, clone_url: &str) -> PathBuf {
        let digest = hex::encode(&Sha256::digest(clone_url.as_bytes())[..8]);
        self.root.join(format!("{digest}.git"))
    }

    /// Holds the mirror of `clone_url` until the guard is dropped: no clone or fetch of
    /// this process goes into it meanwhile, and nothing else that holds it runs. A push
    /// from it holds it, so a fetch does not move its refs under the push.
    pub async fn lock(&self, clone_url: &str) -> OwnedMutexGuard<()> {
        let mirror = self.path(clone_url);
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(mirror).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Makes sure the mirror of `clone_url` is there and has `commit`: cloned if it is not
    /// there, fetched into if it lacks `commit`; with no commit, fetched into always (branch
    /// heads move). Whether it has `commit` afterwards is for the caller to ask: a commit
    /// the remote does not have is not an error of git's.
    pub async fn update(&self, clone_url: &str, commit: Option<&str>) -> Result<Updated, GitError> {
        self.sweep().await;
        let path = self.path(clone_url);
        let _held = self.lock(clone_url).await;
        if !path.exists() {
            self.clone_aside(clone_url, &path).await?;
            return Ok(Updated {
                path,
                fetched: false,
            });
        }
        if let Some(commit) = commit
            && has_commit(&path, commit).await?
        {
            return Ok(Updated {
                path,
                fetched: false,
            });
        }
        run(
            "fetch",
            in_repository(&path)
                .args(["-c", "fetch.unpackLimit=1"])
                .args(["fetch", "--quiet", "--prune", "origin"]),
            self.limit,
        )
        .await?;
        Ok(Updated {
            path,
            fetched: true,
        })
    }

    /// Clones `clone_url` into a directory aside and moves the mirror into place whole: a
    /// clone that fails, is stopped, or is given up on leaves nothing a later caller would
    /// take for a mirror; one whose process is killed leaves a directory [`Self::sweep`]
    /// removes.
    async fn clone_aside(&self, clone_url: &str, mirror: &Path) -> Result<(), GitError> {
        tokio::fs::create_dir_all(&self.root).await?;
        let making = tempfile::Builder::new()
            .prefix(CLONE_ASIDE_PREFIX)
            .tempdir_in(&self.root)?;
        let clone = making.path().join("mirror.git");
        run(
            "clone",
            Command::new("git")
                .args([
                    "clone",
                    "--mirror",
                    "--no-local",
                    "--quiet",
                    "--",
                    clone_url,
                ])
                .arg(&clone),
            self.limit,
        )
        .await?;
        tokio::fs::rename(&clone, mirror).await?;
        Ok(())
    }

    /// Removes, once, the clones a killed process left aside. Every caller waits for it, so
    /// none of this process's clones is under way while it runs.
    async fn sweep(&self) {
        self.swept
            .get_or_init(|| async {
                let Ok(mut entries) = tokio::fs::read_dir(&self.root).await else {
                    return; // No directory yet, so nothing left in it.
                };
                while let Ok(Some(entry)) = entries.next_entry().await {
                    if !entry
                        .file_name()
                        .to_string_lossy()
                        .starts_with(CLONE_ASIDE_PREFIX)
                    {
                        continue;
                    }
                    let left = entry.path();
                    match tokio::fs::remove_dir_all(&left).await {
                        Ok(()) => {
                            tracing::info!(dir = %left.display(), "removed a clone left half made")
                        }
                        Err(error) => tracing::warn!(
                            dir = %left.display(), %error, "cannot remove a clone left half made"
                        ),
                    }
                }
            })
            .await;
    }
}

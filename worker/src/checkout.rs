//! Checkouts from a per-repository mirror cache: the first task of a repository clones it
//! once; every later one fetches only what is new. The first task of a commit checks it
//! out once more, into a pristine copy that no task runs in; each task of that commit gets
//! a copy of it, made in-process, with no git to start.
//!
//! The mirrors (clone, fetch, their locks, their time limit) are kiln-io's
//! [`kiln_io::git::Mirrors`], as the bot's are; what is here is the worker's own: pristine
//! checkouts and each task's work directory.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};

use kiln_io::git::{self, GitError, Mirrors};
use sha2::{Digest, Sha256};
use tokio::process::Command;
use tokio::sync::{OnceCell, RwLock};

/// How many pristine checkouts a worker keeps; the least recently used goes first.
const PRISTINES_KEPT: usize = 4;

/// Mirrors, pristine checkouts and work directories under one root.
#[derive(Debug, Clone)]
pub struct Checkouts {
    root: PathBuf,
    /// The mirrors, in `root/mirrors`. Their time limit (10 minutes) is each git command's
    /// of a checkout too: a remote that stops answering would otherwise hold the task's
    /// slot, and its mirror's lock, until the build is cancelled.
    mirrors: Mirrors,
    pristines: Arc<StdMutex<Pristines>>,
    /// Pristine checkouts a previous run of the worker left, removed before the first is made.
    leftovers_removed: Arc<OnceCell<()>>,
}

/// The pristine checkouts by repository and commit, most recently used last.
#[derive(Debug, Default)]
struct Pristines {
    used: VecDeque<(String, Arc<Pristine>)>,
}

/// One commit checked out, never run in.
#[derive(Debug, Default)]
struct Pristine {
    /// Where the checkout is, once it is complete.
    made: OnceCell<PathBuf>,
    /// Whether it was removed: held shared while the checkout is made or copied, and
    /// exclusively to remove it.
    removed: RwLock<bool>,
}

impl Checkouts {
    /// Keeps mirrors in `root/mirrors`, pristine checkouts in `root/pristine` and work
    /// directories in `root/work`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        Self {
            mirrors: Mirrors::new(root.join("mirrors")),
            root,
            pristines: Arc::default(),
            leftovers_removed: Arc::default(),
        }
    }

    /// Checks `commit` of `clone_url` out into a fresh directory called `name`.
    pub async fn checkout(
        &self,
        clone_url: &str,
        commit: &str,
        name: &str,
    ) -> Result<PathBuf, GitError> {
        let dir = self.work_dir(name);
        if dir.exists() {
            tokio::fs::remove_dir_all(&dir).await?;
        }
        tokio::fs::create_dir_all(dir.parent().unwrap_or(&self.root)).await?;
        loop {
            let (pristine, evicted) = self.pristine(clone_url, commit);
            for old in evicted {
                remove_pristine(&old).await;
            }
            let removed = pristine.removed.read().await;
            if *removed {
                // Removed since it was looked up: the next look-up makes it anew.
                continue;
            }
            let source = pristine
                .made
                .get_or_try_init(|| self.make_pristine(clone_url, commit))
                .await?
                .clone();
            let target = dir.clone();
            tokio::task::spawn_blocking(move || copy_tree(&source, &target))
                .await
                .map_err(std::io::Error::other)??;
            return Ok(dir);
        }
    }

    /// Where the work directory called `name` is.
    pub fn work_dir(&self, name: &str) -> PathBuf {
        self.work_root().join(name)
    }

    /// Where the work directories are.
    pub fn work_root(&self) -> PathBuf {
        self.root.join("work")
    }

    /// Removes a work directory; a missing one is fine.
    pub async fn remove(&self, dir: &Path) {
        if let Err(error) = tokio::fs::remove_dir_all(dir).await
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), %error, "cannot remove a work directory");
        }
    }

    /// The pristine checkout of `commit` of `clone_url`, now the most recently used, and the
    /// least recently used beyond [`PRISTINES_KEPT`], no longer kept, for the caller to remove.
    fn pristine(&self, clone_url: &str, commit: &str) -> (Arc<Pristine>, Vec<Arc<Pristine>>) {
        let key = format!("{}-{commit}", repository_key(clone_url));
        let mut pristines = self.pristines.lock().unwrap_or_else(|e| e.into_inner());
        let used = &mut pristines.used;
        let entry = match used.iter().position(|(known, _)| *known == key) {
            Some(at) => used.remove(at).expect("the position is in range"),
            None => (key, Arc::default()),
        };
        let pristine = entry.1.clone();
        used.push_back(entry);
        let beyond = used.len().saturating_sub(PRISTINES_KEPT);
        let evicted = used.drain(..beyond).map(|(_, old)| old).collect();
        (pristine, evicted)
    }

    /// Checks `commit` out into a directory of its own, which is kept.
    async fn make_pristine(&self, clone_url: &str, commit: &str) -> Result<PathBuf, GitError> {
        let parent = self.root.join("pristine");
        self.leftovers_removed
            .get_or_try_init(|| async {
                match tokio::fs::remove_dir_all(&parent).await {
                    Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
                    _ => Ok(()),
                }
            })
            .await?;
        let mirror = self.mirrors.update(clone_url, Some(commit)).await?.path;
        tokio::fs::create_dir_all(&parent).await?;
        // Removed again if the checkout fails.
        let making = tempfile::Builder::new().tempdir_in(&parent)?;
        // A self-contained clone, so git works inside a container that sees only the
        // checkout; copied, not hard-linked, so a task (root in its container) that rewrites
        // its objects cannot corrupt the mirror every later checkout comes from. No template:
        // a task needs no sample hooks, and each is a file to write.
        let clone = making.path().join("checkout");
        git::run(
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
                .arg(&clone),
            self.mirrors.limit(),
        )
        .await?;
        git::run(
            "checkout",
            Command::new("git")
                .arg("-C")
                .arg(&clone)
                .args(["checkout", "--quiet", "--detach", commit]),
            self.mirrors.limit(),
        )
        .await?;
        let _kept = making.keep();
        Ok(clone)
    }
}

/// Removes a pristine checkout no longer kept, once nobody makes or copies it; a task that
/// looked it up before finds it removed and looks again.
async fn remove_pristine(pristine: &Pristine) {
    let mut removed = pristine.removed.write().await;
    *removed = true;
    let Some(dir) = pristine.made.get().and_then(|dir| dir.parent()) else {
        return;
    };
    if let Err(error) = tokio::fs::remove_dir_all(dir).await {
        tracing::warn!(dir = %dir.display(), %error, "cannot remove a pristine checkout");
    }
}

/// A short name for a repository, from its clone URL.
fn repository_key(clone_url: &str) -> String {
    hex::encode(&Sha256::digest(clone_url.as_bytes())[..8])
}

/// Copies the tree at `from` to `to`, which must not exist: directories, files with their
/// permissions, and symbolic links as links.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.map_err(std::io::Error::other)?;
        let relative = entry
            .path()
            .strip_prefix(from)
            .map_err(std::io::Error::other)?;
        let target = to.join(relative);
        let kind = entry.file_type();
        if kind.is_dir() {
            std::fs::create_dir(&target)?;
        } else if kind.is_symlink() {
            symlink(entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Makes `link` a symbolic link to where the link `original` points.
#[cfg(unix)]
fn symlink(original: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(std::fs::read_link(original)?, link)
}

/// Makes `link` a symbolic link to where the link `original` points.
#[cfg(windows)]
fn symlink(original: &Path, link: &Path) -> std::io::Result<()> {
    let points_to = std::fs::read_link(original)?;
    if std::fs::metadata(original).is_ok_and(|target| target.is_dir()) {
        std::os::windows::fs::symlink_dir(points_to, link)
    } else {
        std::os::windows::fs::symlink_file(points_to, link)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command as StdCommand;
    use std::time::Duration;

    /// A repository with one commit per entry of `contents` (the text of `file`); returns
    /// its path and the commits.
    fn repository(dir: &Path, contents: &[&str]) -> Vec<String> {
        let git = |args: &[&str]| git_in(dir, args);
        git(&["init", "--quiet", "--initial-branch=master"]);
        let mut commits = Vec::new();
        for text in contents {
            std::fs::write(dir.join("file"), text).expect("write");
            git(&["add", "file"]);
            git(&["commit", "--quiet", "--message", text]);
            commits.push(git(&["rev-parse", "HEAD"]));
        }
        commits
    }

    /// What git says in `dir`, as someone with a name and an address.
    fn git_in(dir: &Path, args: &[&str]) -> String {
        let output = StdCommand::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=Kiln", "-c", "user.email=kiln@example.com"])
            .args(args)
            .output()
            .expect("git runs");
        assert!(output.status.success(), "git {args:?}: {output:?}");
        String::from_utf8(output.stdout)
            .expect("utf-8")
            .trim()
            .to_owned()
    }

    /// The pristine checkouts on disk.
    fn pristines(root: &Path) -> usize {
        std::fs::read_dir(root.join("pristine")).map_or(0, Iterator::count)
    }

    #[tokio::test]
    async fn a_remote_that_stops_answering_fails_the_checkout_in_time() {
        // A git daemon's port that takes the connection and never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("git://{}/silent.git", listener.local_addr().expect("addr"));
        let root = tempfile::tempdir().expect("tempdir");
        let checkouts = Checkouts {
            mirrors: Mirrors::new(root.path().join("mirrors"))
                .with_limit(Duration::from_millis(500)),
            ..Checkouts::new(root.path())
        };
        let checkout = tokio::time::timeout(
            Duration::from_secs(30),
            checkouts.checkout(&url, &"0".repeat(40), "a"),
        )
        .await
        .expect("given up on within the limit, not hanging");
        let error = checkout.expect_err("nothing to check out").to_string();
        assert!(
            error.contains("git clone failed: stopped after 500ms"),
            "{error}"
        );
        let left: Vec<_> = std::fs::read_dir(root.path().join("mirrors"))
            .expect("the mirrors' directory")
            .collect();
        assert!(left.is_empty(), "nothing half-cloned is left: {left:?}");
        drop(listener);
    }

    #[tokio::test]
    async fn a_mirror_clone_left_by_a_killed_worker_is_removed_at_the_next_checkout() {
        let origin = tempfile::tempdir().expect("tempdir");
        let commit = repository(origin.path(), &["one"]).remove(0);
        let root = tempfile::tempdir().expect("tempdir");
        let left = root.path().join("mirrors/.clone-Xy12Zw/mirror.git");
        std::fs::create_dir_all(left.join("objects")).expect("mkdir");
        let checkouts = Checkouts::new(root.path());
        let url = origin.path().to_str().expect("utf-8");
        checkouts
            .checkout(url, &commit, "a")
            .await
            .expect("checks out");
        let mirrors: Vec<_> = std::fs::read_dir(root.path().join("mirrors"))
            .expect("the mirrors' directory")
            .map(|entry| {
                entry
                    .expect("an entry")
                    .file_name()
                    .into_string()
                    .expect("utf-8")
            })
            .collect();
        assert_eq!(
            mirrors,
            [format!("{}.git", repository_key(url))],
            "the mirror, and nothing half-cloned"
        );
    }

    #[tokio::test]
    async fn each_task_gets_a_checkout_of_its_own_that_git_works_in() {
        let origin = tempfile::tempdir().expect("tempdir");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(origin.path().join("run.sh"), "#!/bin/sh\n").expect("write");
            let executable = std::fs::Permissions::from_mode(0o755);
            std::fs::set_permissions(origin.path().join("run.sh"), executable).expect("chmod");
            std::os::unix::fs::symlink("file", origin.path().join("link")).expect("link");
            git_in(origin.path(), &["init", "--quiet"]);
            git_in(origin.path(), &["add", "run.sh", "link"]);
        }
        let commit = repository(origin.path(), &["one"]).remove(0);
        let root = tempfile::tempdir().expect("tempdir");
        let checkouts = Checkouts::new(root.path());
        let url = origin.path().to_str().expect("utf-8");

        let first = checkouts
            .checkout(url, &commit, "a")
            .await
            .expect("checks out");
        let second = checkouts
            .checkout(url, &commit, "b")
            .await
            .expect("checks out");

        assert_ne!(first, second);
        for dir in [&first, &second] {
            assert_eq!(git_in(dir, &["rev-parse", "HEAD"]), commit);
            assert_eq!(git_in(dir, &["status", "--porcelain"]), "", "clean");
            assert_eq!(
                std::fs::read_to_string(dir.join("file")).expect("read"),
                "one"
            );
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(second.join("run.sh"))
                .expect("stat")
                .permissions();
            assert_eq!(mode.mode() & 0o111, 0o111, "still executable");
            assert_eq!(
                std::fs::read_link(second.join("link")).expect("a link"),
                Path::new("file")
            );
        }
        // What one task does to its checkout, the next does not see.
        std::fs::write(first.join("file"), "changed").expect("write");
        let third = checkouts
            .checkout(url, &commit, "c")
            .await
            .expect("checks out");
        assert_eq!(
            std::fs::read_to_string(third.join("file")).expect("read"),
            "one"
        );
        assert_eq!(pristines(root.path()), 1);
    }

    #[tokio::test]
    async fn a_commit_checked_out_before_is_copied_without_git() {
        let origin = tempfile::tempdir().expect("tempdir");
        let commit = repository(origin.path(), &["one"]).remove(0);
        let root = tempfile::tempdir().expect("tempdir");
        let checkouts = Checkouts::new(root.path());
        let url = origin.path().to_str().expect("utf-8");
        checkouts
            .checkout(url, &commit, "a")
            .await
            .expect("checks out");

        // Neither the repository nor the mirror is there any more.
        std::fs::remove_dir_all(origin.path()).expect("remove");
        std::fs::remove_dir_all(root.path().join("mirrors")).expect("remove");
        let again = checkouts.checkout(url, &commit, "b").await.expect("copied");
        assert_eq!(git_in(&again, &["rev-parse", "HEAD"]), commit);
    }

    #[tokio::test]
    async fn only_the_most_recently_used_pristine_checkouts_are_kept() {
        let origin = tempfile::tempdir().expect("tempdir");
        let texts: Vec<String> = (0..=PRISTINES_KEPT).map(|n| n.to_string()).collect();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let commits = repository(origin.path(), &texts);
        let root = tempfile::tempdir().expect("tempdir");
        // Left by an earlier run of the worker.
        std::fs::create_dir_all(root.path().join("pristine/left-over")).expect("mkdir");
        let checkouts = Checkouts::new(root.path());
        let url = origin.path().to_str().expect("utf-8");

        for (n, commit) in commits.iter().enumerate() {
            let dir = checkouts
                .checkout(url, commit, &format!("t{n}"))
                .await
                .expect("checks out");
            assert_eq!(
                std::fs::read_to_string(dir.join("file")).expect("read"),
                texts[n]
            );
            // The first, used again, is the most recent; the second is the least.
            checkouts
                .checkout(url, &commits[0], "again")
                .await
                .expect("checks out");
        }

        assert_eq!(pristines(root.path()), PRISTINES_KEPT);
        // The one removed was the second commit's: without the repository, it cannot be
        // made again; the first's is still there.
        std::fs::remove_dir_all(origin.path()).expect("remove");
        std::fs::remove_dir_all(root.path().join("mirrors")).expect("remove");
        checkouts
            .checkout(url, &commits[1], "t")
            .await
            .expect_err("removed");
        checkouts
            .checkout(url, &commits[0], "t")
            .await
            .expect("still kept");
    }

    #[tokio::test]
    async fn an_unknown_commit_is_an_error_and_leaves_nothing_behind() {
        let origin = tempfile::tempdir().expect("tempdir");
        let commit = repository(origin.path(), &["one"]).remove(0);
        let root = tempfile::tempdir().expect("tempdir");
        let checkouts = Checkouts::new(root.path());
        let url = origin.path().to_str().expect("utf-8");

        let missing = "0123456789abcdef0123456789abcdef01234567";
        let error = checkouts
            .checkout(url, missing, "a")
            .await
            .expect_err("no such commit");
        assert!(
            matches!(
                error,
                GitError::Git {
                    action: "checkout",
                    ..
                }
            ),
            "{error}"
        );
        assert_eq!(pristines(root.path()), 0);
        checkouts
            .checkout(url, &commit, "a")
            .await
            .expect("checks out");
    }
}

//! Checkouts from a per-repository mirror cache: the first task of a repository clones it
//! once; every later one fetches only what is new. The first task of a commit checks it
//! out once more, into a pristine checkout that no task runs in; each task of that commit
//! gets a work directory made from it with no git to start: an overlay on it where the
//! worker may mount one (Linux, as root), which copies nothing, else a copy.
//!
//! The mirrors (clone, fetch, their locks, their time limit) are kiln-io's
//! [`kiln_io::git::Mirrors`], as the bot's are; what is here is the worker's own: pristine
//! checkouts and each task's work directory.

#[cfg(target_os = "linux")]
mod overlay;
pub mod tree;

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};

use kiln_io::git::{self, GitError, Mirrors};
use sha2::{Digest, Sha256};
use tokio::process::Command;
use tokio::sync::OnceCell;

/// How many pristine checkouts a worker keeps; the least recently used goes first, once
/// no task's work directory is made from it.
const PRISTINES_KEPT: usize = 4;

/// How work directories are made from a pristine checkout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkDirs {
    /// An overlay where the worker may mount one, else a copy.
    #[default]
    Auto,
    /// An overlay: the worker does not start where it cannot mount one.
    Overlay,
    /// A copy of every file. For a Docker engine that does not see the worker's mounts
    /// (one in another mount namespace that shares the work directories' path).
    Copy,
}

/// Where the work directories of the worker whose state is in `state_dir` are.
pub fn work_root(state_dir: &Path) -> PathBuf {
    state_dir.join("work")
}

/// Mirrors, pristine checkouts and work directories under one root, which one worker holds.
#[derive(Debug, Clone)]
pub struct Checkouts {
    root: PathBuf,
    /// The mirrors, in `root/mirrors`. Their time limit (10 minutes) is each git command's
    /// of a checkout too: a remote that stops answering would otherwise hold the task's
    /// slot, and its mirror's lock, until the build is cancelled.
    mirrors: Mirrors,
    pristines: Arc<StdMutex<Pristines>>,
    /// Whether work directories are overlays; copies when not.
    overlay: bool,
    /// Who the checkouts are given to (the task user's ids), when not the worker's user.
    owner: Option<(u32, u32)>,
    /// `root/lock`, locked while the worker runs: a second worker on the same root would
    /// remove the first one's directories.
    _lock: Arc<std::fs::File>,
}

/// The pristine checkouts by repository and commit, most recently used last.
#[derive(Debug, Default)]
struct Pristines {
    used: VecDeque<(String, Arc<Pristine>)>,
}

/// One commit's pristine checkout, made by the first task that needs it.
#[derive(Debug, Default)]
struct Pristine {
    made: OnceCell<Arc<PristineDir>>,
}

/// A pristine checkout on disk, never run in. Removed when the last holder lets it go: the
/// list of those kept, and each work directory made from it (an overlay reads through to
/// it for as long as it is mounted).
#[derive(Debug)]
struct PristineDir {
    checkout: PathBuf,
}

/// A task's work directory. An overlay is unmounted when this is dropped, before the
/// pristine checkout under it may go; [`Checkouts::remove`] removes what is left.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    mounted: bool,
    _pristine: Arc<PristineDir>,
}

impl WorkDir {
    /// Where the task runs.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether it is an overlay on the pristine checkout (else a copy of it).
    pub fn is_overlay(&self) -> bool {
        self.mounted
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if self.mounted
            && let Err(error) = overlay::unmount(&self.path)
        {
            tracing::warn!(dir = %self.path.display(), %error, "cannot unmount a work directory");
        }
    }
}

impl Drop for PristineDir {
    fn drop(&mut self) {
        let Some(dir) = self.checkout.parent().map(Path::to_owned) else {
            return;
        };
        let remove = move || {
            if let Err(error) = std::fs::remove_dir_all(&dir)
                && error.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %dir.display(), %error, "cannot remove a pristine checkout");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

impl Checkouts {
    /// Takes `root` for this worker: locks it, unmounts and removes the work directories
    /// and pristine checkouts a previous run left (one killed leaves its overlays mounted),
    /// and finds out whether work directories can be overlays here. Checkouts are given to
    /// `owner` (uid, gid) when there is one.
    pub async fn open(
        root: impl Into<PathBuf>,
        work_dirs: WorkDirs,
        owner: Option<(u32, u32)>,
    ) -> io::Result<Self> {
        let root = root.into();
        let held = root.clone();
        let (lock, overlay) =
            tokio::task::spawn_blocking(move || -> io::Result<_> {
                let lock = hold(&held)?;
                sweep(&held)?;
                let overlay = match work_dirs {
                    WorkDirs::Copy => false,
                    WorkDirs::Overlay => {
                        probe(&held)?;
                        true
                    }
                    WorkDirs::Auto => match probe(&held) {
                        Ok(()) => true,
                        Err(error) => {
                            tracing::info!(%error, "work directories are copies: no overlay can be mounted here");
                            false
                        }
                    },
                };
                Ok((lock, overlay))
            })
            .await
            .map_err(io::Error::other)??;
        Ok(Self {
            mirrors: Mirrors::new(root.join("mirrors")),
            root,
            pristines: Arc::default(),
            overlay,
            owner,
            _lock: Arc::new(lock),
        })
    }

    /// Whether work directories are overlays (else copies).
    pub fn overlays(&self) -> bool {
        self.overlay
    }

    /// Makes a fresh work directory called `name` with `commit` of `clone_url` checked out,
    /// merged with `merge_with` when given (a request built as its merge result).
    pub async fn checkout(
        &self,
        clone_url: &str,
        commit: &str,
        merge_with: Option<&str>,
        name: &str,
    ) -> Result<WorkDir, CheckoutError> {
        self.remove(name).await;
        let path = self.work_dir(name);
        tokio::fs::create_dir_all(work_root(&self.root)).await?;
        let pristine = self.pristine(clone_url, commit, merge_with);
        let made = pristine
            .made
            .get_or_try_init(|| self.make_pristine(clone_url, commit, merge_with))
            .await?
            .clone();
        let mounted = self.overlay && self.mount_over(&made, name).await;
        if !mounted {
            let (from, to) = (made.checkout.clone(), path.clone());
            tokio::task::spawn_blocking(move || tree::copy(&from, &to))
                .await
                .map_err(io::Error::other)??;
        }
        Ok(WorkDir {
            path,
            mounted,
            _pristine: made,
        })
    }

    /// Where the work directory called `name` is.
    pub fn work_dir(&self, name: &str) -> PathBuf {
        work_root(&self.root).join(name)
    }

    /// Removes the work directory called `name`, unmounting it first if it is an overlay;
    /// a missing one is fine.
    pub async fn remove(&self, name: &str) {
        let dir = self.work_dir(name);
        #[cfg(target_os = "linux")]
        if self.overlay
            && let Err(error) = overlay::unmount(&dir)
        {
            tracing::warn!(dir = %dir.display(), %error, "cannot unmount a work directory");
        }
        for dir in [dir, self.layers(name)] {
            if let Err(error) = tokio::fs::remove_dir_all(&dir).await
                && error.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %dir.display(), %error, "cannot remove a work directory");
            }
        }
    }

    /// Where an overlay work directory's own layers (what its task changed) are.
    fn layers(&self, name: &str) -> PathBuf {
        self.root.join("layers").join(name)
    }

    /// Mounts the work directory called `name` as an overlay on `pristine`; says whether it
    /// did (if not, the caller copies instead).
    #[cfg(target_os = "linux")]
    async fn mount_over(&self, pristine: &PristineDir, name: &str) -> bool {
        let (layers, merged) = (self.layers(name), self.work_dir(name));
        let (upper, scratch) = (layers.join("upper"), layers.join("work"));
        let mounted = async {
            for dir in [&upper, &scratch, &merged] {
                tokio::fs::create_dir_all(dir).await?;
            }
            overlay::mount(&pristine.checkout, &upper, &scratch, &merged)
        };
        match mounted.await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(dir = %merged.display(), %error, "cannot mount the work directory as an overlay; copying");
                self.remove(name).await;
                false
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    async fn mount_over(&self, _: &PristineDir, _: &str) -> bool {
        false
    }

    /// The pristine checkout of `commit` of `clone_url`, now the most recently used; the
    /// least recently used beyond [`PRISTINES_KEPT`] are no longer kept (and go once no
    /// work directory needs them).
    fn pristine(&self, clone_url: &str, commit: &str, merge_with: Option<&str>) -> Arc<Pristine> {
        let mut key = format!("{}-{commit}", repository_key(clone_url));
        if let Some(with) = merge_with {
            key.push_str(&format!("+{with}"));
        }
        let mut pristines = self.pristines.lock().unwrap_or_else(|e| e.into_inner());
        let used = &mut pristines.used;
        let entry = match used.iter().position(|(known, _)| *known == key) {
            Some(at) => used.remove(at).expect("the position is in range"),
            None => (key, Arc::default()),
        };
        let pristine = entry.1.clone();
        used.push_back(entry);
        let beyond = used.len().saturating_sub(PRISTINES_KEPT);
        used.drain(..beyond);
        pristine
    }

    /// Checks `commit` out into a directory of its own (merged with `merge_with`, when
    /// given), given to the owner.
    async fn make_pristine(
        &self,
        clone_url: &str,
        commit: &str,
        merge_with: Option<&str>,
    ) -> Result<Arc<PristineDir>, CheckoutError> {
        if let Some(with) = merge_with {
            self.mirrors.update(clone_url, Some(with)).await?;
        }
        let mirror = self.mirrors.update(clone_url, Some(commit)).await?.path;
        // Removed again if the checkout fails.
        let making = tempfile::Builder::new().tempdir_in(self.root.join("pristine"))?;
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
        if let Some(with) = merge_with {
            merge(&clone, with, self.mirrors.limit()).await?;
        }
        if let Some((uid, gid)) = self.owner {
            let given = clone.clone();
            tokio::task::spawn_blocking(move || tree::chown(&given, uid, gid))
                .await
                .map_err(io::Error::other)??;
        }
        let _kept = making.keep();
        Ok(Arc::new(PristineDir { checkout: clone }))
    }
}

/// Why a work directory could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error(transparent)]
    Git(#[from] GitError),
    /// The request's head and its target do not merge: the request's author must resolve it.
    #[error("the commit does not merge with {with}: {detail}")]
    Conflict { with: String, detail: String },
}

impl From<io::Error> for CheckoutError {
    fn from(error: io::Error) -> Self {
        Self::Git(error.into())
    }
}

/// Merges `with` into the checkout at `clone` (its HEAD), as a merge commit of Kiln's.
async fn merge(clone: &Path, with: &str, limit: std::time::Duration) -> Result<(), CheckoutError> {
    let merged = git::run(
        "merge",
        Command::new("git").arg("-C").arg(clone).args([
            "-c",
            "user.name=Kiln",
            "-c",
            "user.email=kiln@localhost",
            "merge",
            "--quiet",
            "--no-edit",
            "--no-ff",
            "--end-of-options",
            with,
        ]),
        limit,
    )
    .await;
    let Err(error) = merged else {
        return Ok(());
    };
    // A conflict leaves files unmerged; any other failure (a full disk) is Kiln's.
    let unmerged = git::run(
        "diff",
        Command::new("git")
            .arg("-C")
            .arg(clone)
            .args(["diff", "--name-only", "--diff-filter=U"]),
        limit,
    )
    .await
    .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
    .unwrap_or_default();
    let files: Vec<&str> = unmerged.lines().filter(|l| !l.is_empty()).collect();
    if files.is_empty() {
        return Err(error.into());
    }
    Err(CheckoutError::Conflict {
        with: with.to_owned(),
        detail: format!("both change {}", files.join(", ")),
    })
}

/// Locks `root/lock` for this process, or says which directory another worker holds.
fn hold(root: &Path) -> io::Result<std::fs::File> {
    std::fs::create_dir_all(root)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join("lock"))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "another worker uses {}: give each worker a state directory of its own",
                root.display()
            ),
        )),
        Err(std::fs::TryLockError::Error(error)) => Err(error),
    }
}

/// Unmounts and removes what a previous run left under `root` (all but the mirrors), and
/// makes the directories anew: those of pristine checkouts and layers for the worker only
/// (a task running as another user must not reach them), that of work directories for all.
fn sweep(root: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    for point in overlay::mounted_under(root)? {
        overlay::unmount(&point)?;
    }
    for dir in ["work", "layers", "pristine"] {
        match std::fs::remove_dir_all(root.join(dir)) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
    }
    std::fs::create_dir(work_root(root))?;
    for own in ["layers", "pristine"] {
        std::fs::create_dir(root.join(own))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(root.join(own), std::fs::Permissions::from_mode(0o700))?;
        }
    }
    Ok(())
}

/// Mounts and unmounts an overlay under `root`, to learn whether work directories can be
/// overlays here.
#[cfg(target_os = "linux")]
fn probe(root: &Path) -> io::Result<()> {
    let probe = root.join("layers").join(".probe");
    let [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map(|d| probe.join(d));
    for dir in [&lower, &upper, &work, &merged] {
        std::fs::create_dir_all(dir)?;
    }
    let mounted = overlay::mount(&lower, &upper, &work, &merged);
    if mounted.is_ok() {
        overlay::unmount(&merged)?;
    }
    std::fs::remove_dir_all(&probe)?;
    mounted
}

#[cfg(not(target_os = "linux"))]
fn probe(_: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "overlay mounts are Linux's",
    ))
}

/// A short name for a repository, from its clone URL.
fn repository_key(clone_url: &str) -> String {
    hex::encode(&Sha256::digest(clone_url.as_bytes())[..8])
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

    /// How soon a pristine checkout no longer needed is removed (in the background).
    const REMOVED_WITHIN: Duration = Duration::from_secs(5);

    /// The pristine checkouts on disk.
    fn pristines(root: &Path) -> usize {
        std::fs::read_dir(root.join("pristine")).map_or(0, Iterator::count)
    }

    /// The pristine checkouts on disk, once at most `kept` are left.
    async fn pristines_down_to(root: &Path, kept: usize) -> usize {
        let what = format!("at most {kept} pristine checkouts");
        kiln_tests::wait_for(&what, REMOVED_WITHIN, || async {
            let left = pristines(root);
            (left <= kept).then_some(left)
        })
        .await
    }

    /// A repository with one commit more than are kept, each writing its index to `file`.
    fn one_commit_more_than_kept(dir: &Path) -> Vec<String> {
        let texts: Vec<String> = (0..=PRISTINES_KEPT).map(|n| n.to_string()).collect();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        repository(dir, &texts)
    }

    async fn opened(root: &Path, work_dirs: WorkDirs) -> Checkouts {
        Checkouts::open(root, work_dirs, None)
            .await
            .expect("the root is prepared")
    }

    /// The mount points under `root`.
    fn mounts(root: &Path) -> Vec<PathBuf> {
        overlay::mounted_under(root).expect("the mount table")
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
            ..opened(root.path(), WorkDirs::Auto).await
        };
        let checkout = tokio::time::timeout(
            Duration::from_secs(30),
            checkouts.checkout(&url, &"0".repeat(40), None, "a"),
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
        let checkouts = opened(root.path(), WorkDirs::Auto).await;
        let url = origin.path().to_str().expect("utf-8");
        checkouts
            .checkout(url, &commit, None, "a")
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
    async fn each_task_gets_a_copy_of_its_own_that_git_works_in() {
        each_task_gets_a_work_directory_of_its_own(WorkDirs::Copy).await;
    }

    #[tokio::test]
    async fn each_task_gets_an_overlay_of_its_own_that_git_works_in() {
        each_task_gets_a_work_directory_of_its_own(WorkDirs::Overlay).await;
    }

    async fn each_task_gets_a_work_directory_of_its_own(work_dirs: WorkDirs) {
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
        let checkouts = opened(root.path(), work_dirs).await;
        let url = origin.path().to_str().expect("utf-8");

        let first = checkouts
            .checkout(url, &commit, None, "a")
            .await
            .expect("checks out");
        let second = checkouts
            .checkout(url, &commit, None, "b")
            .await
            .expect("checks out");

        assert_eq!(first.is_overlay(), work_dirs == WorkDirs::Overlay);
        assert_ne!(first.path(), second.path());
        for dir in [first.path(), second.path()] {
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
            let mode = std::fs::metadata(second.path().join("run.sh"))
                .expect("stat")
                .permissions();
            assert_eq!(mode.mode() & 0o111, 0o111, "still executable");
            assert_eq!(
                std::fs::read_link(second.path().join("link")).expect("a link"),
                Path::new("file")
            );
        }
        // What one task does to its tree, neither a task beside it nor the next sees, nor
        // the pristine checkout they are made from.
        std::fs::write(first.path().join("file"), "changed").expect("write");
        std::fs::write(first.path().join("new"), "made").expect("write");
        std::fs::remove_file(first.path().join("run.sh")).expect("remove");
        git_in(
            first.path(),
            &["commit", "--quiet", "-am", "a task's commit"],
        );
        let third = checkouts
            .checkout(url, &commit, None, "c")
            .await
            .expect("checks out");
        for other in [second.path(), third.path()] {
            assert_eq!(
                std::fs::read_to_string(other.join("file")).expect("read"),
                "one"
            );
            assert!(!other.join("new").exists());
            assert!(other.join("run.sh").exists(), "deleted in the first only");
            assert_eq!(git_in(other, &["rev-parse", "HEAD"]), commit);
            assert_eq!(git_in(other, &["status", "--porcelain"]), "", "clean");
        }
        assert_eq!(pristines(root.path()), 1);
        let pristine = std::fs::read_dir(root.path().join("pristine"))
            .expect("the pristine checkouts")
            .next()
            .expect("one")
            .expect("an entry")
            .path()
            .join("checkout");
        assert_eq!(
            std::fs::read_to_string(pristine.join("file")).expect("read"),
            "one"
        );
        assert!(pristine.join("run.sh").exists());
        assert!(!pristine.join("new").exists());

        // Removed, each is gone: no mount is left, nor what its task changed.
        let (a, b, c) = (
            first.path().to_owned(),
            second.path().to_owned(),
            third.path().to_owned(),
        );
        drop((first, second, third));
        for name in ["a", "b", "c"] {
            checkouts.remove(name).await;
        }
        for dir in [a, b, c] {
            assert!(!dir.exists(), "{} is removed", dir.display());
        }
        assert_eq!(mounts(root.path()), Vec::<PathBuf>::new());
        let layers = std::fs::read_dir(root.path().join("layers")).expect("the layers");
        assert_eq!(layers.count(), 0, "no task's layers are left");
    }

    #[tokio::test]
    async fn overlays_a_killed_worker_left_mounted_are_removed_when_the_next_one_starts() {
        let origin = tempfile::tempdir().expect("tempdir");
        let commit = repository(origin.path(), &["one"]).remove(0);
        let root = tempfile::tempdir().expect("tempdir");
        let url = origin.path().to_str().expect("utf-8");
        let checkouts = opened(root.path(), WorkDirs::Overlay).await;
        let left = checkouts
            .checkout(url, &commit, None, "left")
            .await
            .expect("checks out");
        std::fs::write(left.path().join("made"), "by the task").expect("write");
        let path = left.path().to_owned();
        // As a killed worker does: nothing unmounted, nothing removed.
        std::mem::forget(left);
        assert_eq!(mounts(root.path()), std::slice::from_ref(&path));
        let second = Checkouts::open(root.path(), WorkDirs::Overlay, None)
            .await
            .expect_err("the root is held while its worker runs");
        assert!(
            second.to_string().contains("another worker uses"),
            "{second}"
        );
        drop(checkouts);

        let next = opened(root.path(), WorkDirs::Overlay).await;
        assert_eq!(mounts(root.path()), Vec::<PathBuf>::new());
        assert!(!path.exists());
        assert_eq!(pristines(root.path()), 0);
        let again = next
            .checkout(url, &commit, None, "left")
            .await
            .expect("checks out again");
        assert!(!again.path().join("made").exists());
    }

    #[tokio::test]
    async fn a_commit_checked_out_before_is_made_again_without_git() {
        for work_dirs in [WorkDirs::Copy, WorkDirs::Overlay] {
            let origin = tempfile::tempdir().expect("tempdir");
            let commit = repository(origin.path(), &["one"]).remove(0);
            let root = tempfile::tempdir().expect("tempdir");
            let checkouts = opened(root.path(), work_dirs).await;
            let url = origin.path().to_str().expect("utf-8");
            checkouts
                .checkout(url, &commit, None, "a")
                .await
                .expect("checks out");

            // Neither the repository nor the mirror is there any more.
            std::fs::remove_dir_all(origin.path()).expect("remove");
            std::fs::remove_dir_all(root.path().join("mirrors")).expect("remove");
            let again = checkouts
                .checkout(url, &commit, None, "b")
                .await
                .expect("made");
            assert_eq!(git_in(again.path(), &["rev-parse", "HEAD"]), commit);
        }
    }

    #[tokio::test]
    async fn a_pristine_checkout_no_longer_kept_stays_while_a_work_directory_reads_it() {
        let origin = tempfile::tempdir().expect("tempdir");
        let commits = one_commit_more_than_kept(origin.path());
        let root = tempfile::tempdir().expect("tempdir");
        let checkouts = opened(root.path(), WorkDirs::Overlay).await;
        let url = origin.path().to_str().expect("utf-8");
        let oldest = checkouts
            .checkout(url, &commits[0], None, "oldest")
            .await
            .expect("checks out");
        for (n, commit) in commits.iter().enumerate().skip(1) {
            checkouts
                .checkout(url, commit, None, &format!("t{n}"))
                .await
                .expect("checks out");
        }
        assert_eq!(
            std::fs::read_to_string(oldest.path().join("file")).expect("read"),
            "0",
            "the overlay still reads its lower layer"
        );
        assert_eq!(pristines(root.path()), PRISTINES_KEPT + 1);
        drop(oldest);
        assert_eq!(
            pristines_down_to(root.path(), PRISTINES_KEPT).await,
            PRISTINES_KEPT
        );
    }

    #[tokio::test]
    async fn only_the_most_recently_used_pristine_checkouts_are_kept() {
        let origin = tempfile::tempdir().expect("tempdir");
        let commits = one_commit_more_than_kept(origin.path());
        let root = tempfile::tempdir().expect("tempdir");
        // Left by an earlier run of the worker.
        std::fs::create_dir_all(root.path().join("pristine/left-over")).expect("mkdir");
        let checkouts = opened(root.path(), WorkDirs::Auto).await;
        let url = origin.path().to_str().expect("utf-8");

        for (n, commit) in commits.iter().enumerate() {
            let dir = checkouts
                .checkout(url, commit, None, &format!("t{n}"))
                .await
                .expect("checks out");
            assert_eq!(
                std::fs::read_to_string(dir.path().join("file")).expect("read"),
                n.to_string()
            );
            // The first, used again, is the most recent; the second is the least.
            checkouts
                .checkout(url, &commits[0], None, "again")
                .await
                .expect("checks out");
        }

        assert_eq!(
            pristines_down_to(root.path(), PRISTINES_KEPT).await,
            PRISTINES_KEPT
        );
        // The one removed was the second commit's: without the repository, it cannot be
        // made again; the first's is still there.
        std::fs::remove_dir_all(origin.path()).expect("remove");
        std::fs::remove_dir_all(root.path().join("mirrors")).expect("remove");
        checkouts
            .checkout(url, &commits[1], None, "t")
            .await
            .expect_err("removed");
        checkouts
            .checkout(url, &commits[0], None, "t")
            .await
            .expect("still kept");
    }

    #[tokio::test]
    async fn an_unknown_commit_is_an_error_and_leaves_nothing_behind() {
        let origin = tempfile::tempdir().expect("tempdir");
        let commit = repository(origin.path(), &["one"]).remove(0);
        let root = tempfile::tempdir().expect("tempdir");
        let checkouts = opened(root.path(), WorkDirs::Auto).await;
        let url = origin.path().to_str().expect("utf-8");

        let missing = "0123456789abcdef0123456789abcdef01234567";
        let error = checkouts
            .checkout(url, missing, None, "a")
            .await
            .expect_err("no such commit");
        assert!(
            matches!(
                error,
                CheckoutError::Git(GitError::Git {
                    action: "checkout",
                    ..
                })
            ),
            "{error}"
        );
        assert_eq!(pristines(root.path()), 0);
        checkouts
            .checkout(url, &commit, None, "a")
            .await
            .expect("checks out");
    }

    #[tokio::test]
    async fn a_request_s_merge_result_has_both_sides_and_a_conflict_is_said() {
        let (origin, root) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let dir = origin.path();
        let base = repository(dir, &["base"]);
        let git = |args: &[&str]| git_in(dir, args);
        git(&["checkout", "--quiet", "-b", "feature", &base[0]]);
        std::fs::write(dir.join("feature"), "mine").expect("write");
        git(&["add", "feature"]);
        git(&["commit", "--quiet", "--message", "feature"]);
        let head = git(&["rev-parse", "HEAD"]);
        git(&["checkout", "--quiet", "master"]);
        std::fs::write(dir.join("target"), "theirs").expect("write");
        git(&["add", "target"]);
        git(&["commit", "--quiet", "--message", "target"]);
        let target = git(&["rev-parse", "HEAD"]);
        let checkouts = opened(root.path(), WorkDirs::Copy).await;
        let url = dir.to_str().expect("utf-8");

        let merged = checkouts
            .checkout(url, &head, Some(&target), "merged")
            .await
            .expect("merges");
        for file in ["file", "feature", "target"] {
            assert!(merged.path().join(file).exists(), "{file}");
        }
        let alone = checkouts
            .checkout(url, &head, None, "alone")
            .await
            .expect("checks out");
        assert!(!alone.path().join("target").exists(), "the head alone");

        // Both sides change `file`: no merge result, and it says with what.
        git(&["checkout", "--quiet", "feature"]);
        std::fs::write(dir.join("file"), "mine too").expect("write");
        git(&["commit", "--quiet", "--all", "--message", "mine"]);
        let clashing = git(&["rev-parse", "HEAD"]);
        git(&["checkout", "--quiet", "master"]);
        std::fs::write(dir.join("file"), "theirs too").expect("write");
        git(&["commit", "--quiet", "--all", "--message", "theirs"]);
        let moved = git(&["rev-parse", "HEAD"]);
        let error = checkouts
            .checkout(url, &clashing, Some(&moved), "clash")
            .await
            .expect_err("a conflict");
        assert!(
            matches!(&error, CheckoutError::Conflict { with, detail } if *with == moved && detail == "both change file"),
            "{error}"
        );
    }
}

//! A bare mirror per repository, so reading `.kiln.yml` at a commit is a local read after
//! an incremental fetch, not a clone per build; a `git cat-file --batch` kept running beside
//! each mirror ([`reader`]) answers it without starting a process.
//!
//! The mirrors themselves (clone, fetch, their locks, their time limit) are kiln-io's
//! [`kiln_io::git::Mirrors`], as the worker's are; what is here is the bot's use of them:
//! files at a commit, branch heads, ancestry, and the push of a promotion.

mod reader;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};

use kiln_io::git::{GitError, has_commit, in_repository as git};
use kiln_shared::command::Target;
use kiln_shared::ident::{BranchName, CommitId};
use reader::Reader;
use tokio::sync::Mutex;

use crate::kept::Kept;

/// What the files read at a commit and kept may weigh together. Most reads are of
/// `.kiln.yml`, a few KiB, and a commit is often built more than once (its push, its pull
/// request, a retry, a promotion).
const KEPT_FILES_BYTES: u64 = 4 * 1024 * 1024;

/// The largest file kept.
const KEPT_FILE_BYTES: usize = 64 * 1024;

/// A branch or commit, as it is in a repository now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The full commit id.
    pub commit: CommitId,
    /// The commit's author and subject line.
    pub author: String,
    pub subject: String,
    /// The branch asked for, or for a commit, the branches that contain it.
    pub branches: Vec<BranchName>,
}

/// A branch and the commit at its head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub branch: BranchName,
    pub commit: CommitId,
    /// The commit's author and subject line.
    pub author: String,
    pub subject: String,
}

/// What came of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// The branch moved.
    Moved,
    /// The remote refused: not a fast-forward, or the branch was not where it was expected.
    Rejected(String),
}

/// Bare mirrors under one directory, one per clone URL.
#[derive(Debug, Clone)]
pub struct Mirrors {
    /// The mirrors: made, fetched into and locked there. A clone or a fetch is stopped after
    /// 10 minutes: a remote that stops answering would otherwise hold one of the few builds
    /// planned at once for good.
    mirrors: kiln_io::git::Mirrors,
    /// Each mirror's running reader, started on first use, again after it failed.
    readers: Arc<StdMutex<HashMap<PathBuf, ReaderSlot>>>,
    /// Files read lately at a full commit id, by clone URL, commit and path: what a commit
    /// holds never changes, so reading it again needs neither the mirror nor its reader.
    kept: Kept<FileAt, Arc<[u8]>>,
}

/// A file at a commit of a repository: clone URL, commit id, path.
type FileAt = (String, String, String);

/// A mirror's reader, if it is running; locked for the length of one read.
type ReaderSlot = Arc<Mutex<Option<Reader>>>;

impl Mirrors {
    /// Mirrors kept under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            mirrors: kiln_io::git::Mirrors::new(root),
            readers: Arc::default(),
            kept: Kept::new(KEPT_FILES_BYTES, 4 * 1024),
        }
    }

    /// What the files kept weigh.
    pub fn kept(&self) -> u64 {
        self.kept.bytes()
    }

    /// The contents of `path` at `commit`, or `None` if the commit has no such file. A file
    /// read lately at the same full commit id is not read again; a mirror that has the file
    /// answers through its reader; only a commit it lacks costs a fetch.
    pub async fn read_file(
        &self,
        clone_url: &str,
        commit: &str,
        path: &str,
    ) -> Result<Option<Vec<u8>>, GitError> {
        let key = (clone_url.to_owned(), commit.to_owned(), path.to_owned());
        if let Some(content) = self.kept.get(&key) {
            return Ok(Some(content.to_vec()));
        }
        let content = self.read_file_from_mirror(clone_url, commit, path).await?;
        if let Some(content) = &content
            && content.len() <= KEPT_FILE_BYTES
            && is_object_id(commit)
        {
            let bytes = content.len() + key.0.len() + key.1.len() + key.2.len();
            self.kept.insert(key, Arc::from(content.as_slice()), bytes);
        }
        Ok(content)
    }

    async fn read_file_from_mirror(
        &self,
        clone_url: &str,
        commit: &str,
        path: &str,
    ) -> Result<Option<Vec<u8>>, GitError> {
        let mirror = self.path(clone_url);
        if mirror.exists()
            && let Some(content) = self.read_blob(&mirror, commit, path).await
        {
            return Ok(Some(content));
        }
        let mirror = self.update(clone_url, Some(commit)).await?;
        if !has_commit(&mirror, commit).await? {
            return Err(GitError::Git {
                action: "fetch",
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
    ) -> Result<Option<Resolved>, GitError> {
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
                    .map(BranchName::from)
                    .collect()
            }
        };
        Ok(Some(Resolved {
            commit: commit.into(),
            author: author.to_owned(),
            subject: subject.to_owned(),
            branches,
        }))
    }

    /// Where each of `branches` is in `clone_url` now, after a fetch (`None`: no such
    /// branch).
    pub async fn heads(
        &self,
        clone_url: &str,
        branches: &[&BranchName],
    ) -> Result<Vec<Option<CommitId>>, GitError> {
        let mirror = self.update(clone_url, None).await?;
        let mut heads = Vec::with_capacity(branches.len());
        for branch in branches {
            let output = git(&mirror)
                .args(["rev-parse", "--verify", "--quiet", "--end-of-options"])
                .arg(format!("refs/heads/{branch}^{{commit}}"))
                .output()
                .await?;
            heads.push(
                output
                    .status
                    .success()
                    .then(|| String::from_utf8_lossy(&output.stdout).trim().into()),
            );
        }
        Ok(heads)
    }

    /// Every branch of `clone_url` now, after a fetch.
    pub async fn branches(&self, clone_url: &str) -> Result<Vec<BranchName>, GitError> {
        let heads = self.branch_heads(clone_url).await?;
        Ok(heads.into_iter().map(|head| head.branch).collect())
    }

    /// Every branch of `clone_url` now and the commit at its head, after a fetch.
    pub async fn branch_heads(&self, clone_url: &str) -> Result<Vec<Head>, GitError> {
        let mirror = self.update(clone_url, None).await?;
        let output = git(&mirror)
            .args([
                "for-each-ref",
                "--format=%(refname:lstrip=2)%00%(objectname)%00%(authorname)%00%(contents:subject)",
                "refs/heads/",
            ])
            .output()
            .await?;
        if !output.status.success() {
            // Never an empty list: that would say every branch is gone.
            return Err(GitError::Git {
                action: "for-each-ref",
                detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| {
                let mut fields = line.split('\0');
                Some(Head {
                    branch: fields.next()?.into(),
                    commit: fields.next()?.into(),
                    author: fields.next().unwrap_or_default().to_owned(),
                    subject: fields.next().unwrap_or_default().to_owned(),
                })
            })
            .collect())
    }

    /// Whether `ancestor` is `descendant` or one of its ancestors, in the mirror of
    /// `clone_url` as last fetched; a commit the mirror lacks (gone in a force push) is no
    /// one's ancestor.
    pub async fn is_ancestor(
        &self,
        clone_url: &str,
        ancestor: &CommitId,
        descendant: &CommitId,
    ) -> Result<bool, GitError> {
        let mirror = self.path(clone_url);
        if !has_commit(&mirror, ancestor).await? || !has_commit(&mirror, descendant).await? {
            return Ok(false);
        }
        let output = git(&mirror)
            .args(["merge-base", "--is-ancestor", ancestor, descendant])
            .output()
            .await?;
        match output.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(GitError::Git {
                action: "merge-base",
                detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            }),
        }
    }

    /// Sets `branch` of `push_url` to `commit`, which the mirror of `clone_url` holds: a
    /// plain push, so the remote refuses anything but a fast-forward; or, with `lease`, a
    /// push that may move the branch back but only from exactly `lease`. Fetches afterwards.
    pub async fn push(
        &self,
        clone_url: &str,
        push_url: &str,
        commit: &CommitId,
        branch: &BranchName,
        lease: Option<&CommitId>,
    ) -> Result<Pushed, GitError> {
        let mirror = self.path(clone_url);
        let refname = format!("refs/heads/{branch}");
        let output = {
            // No fetch moves the mirror's refs while they are pushed from.
            let _held = self.mirrors.lock(clone_url).await;
            let mut push = git(&mirror);
            push.args(["push", "--porcelain"]);
            if let Some(lease) = lease {
                push.arg(format!("--force-with-lease={refname}:{lease}"));
            }
            push.args(["--end-of-options", push_url, &format!("{commit}:{refname}")]);
            kiln_io::git::output("push", &mut push, self.mirrors.limit()).await?
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        // `--porcelain`: a line `!<tab><from>:<to><tab>[rejected] (why)` per refused ref.
        let refused = stdout
            .lines()
            .find_map(|line| line.strip_prefix('!'))
            .map(|line| line.rsplit('\t').next().unwrap_or(line).trim().to_owned());
        if let Some(why) = refused {
            return Ok(Pushed::Rejected(why));
        }
        if !output.status.success() {
            return Err(GitError::Git {
                action: "push",
                detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        // The push happened; a mirror behind it is brought up to date by the next fetch.
        if let Err(error) = self.update(clone_url, None).await {
            tracing::warn!(%error, "cannot fetch after a push");
        }
        Ok(Pushed::Moved)
    }

    /// `path` at `commit` from the mirror's reader; `None` when it has no such file, and when
    /// the reader failed (it is started again next time).
    async fn read_blob(&self, mirror: &Path, commit: &str, path: &str) -> Option<Vec<u8>> {
        let slot = {
            let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
            readers.entry(mirror.to_owned()).or_default().clone()
        };
        let mut slot = slot.lock().await;
        // Out of its slot while it reads: a read given up half way (its caller dropped)
        // leaves an answer unread, and that reader must not answer the next question.
        let taken = slot.take().map_or_else(|| Reader::start(mirror), Ok);
        let mut reader = taken
            .inspect_err(|error| tracing::warn!(%error, "cannot start git cat-file"))
            .ok()?;
        match reader.read(commit, path).await {
            Ok(content) => {
                *slot = Some(reader);
                content
            }
            Err(error) => {
                tracing::warn!(%error, "git cat-file failed; starting another next time");
                None
            }
        }
    }

    /// Where the mirror of `clone_url` lives.
    fn path(&self, clone_url: &str) -> PathBuf {
        self.mirrors.path(clone_url)
    }

    /// Makes sure the mirror of `clone_url` is there and has `commit`, fetching only when it
    /// does not; with no commit, fetches always (branch heads move).
    async fn update(&self, clone_url: &str, commit: Option<&str>) -> Result<PathBuf, GitError> {
        let updated = self.mirrors.update(clone_url, commit).await?;
        if updated.fetched {
            // A fetch may repack: a reader started before it would keep the packs it
            // replaced open, on disk, for as long as it runs. The next read starts another.
            let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
            readers.remove(&updated.path);
        }
        Ok(updated.path)
    }
}

/// Whether `commit` is a full object id (SHA-1 or SHA-256, in hex), which names one
/// commit for good, not a branch or an abbreviation that may come to name another.
fn is_object_id(commit: &str) -> bool {
    matches!(commit.len(), 40 | 64) && commit.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::reader::tests::git;
    use super::*;
    use std::time::Duration;

    fn commit(repo: &Path, text: &str) -> String {
        std::fs::write(repo.join(".kiln.yml"), text).expect("write");
        git(repo, &["add", "."]);
        git(repo, &["commit", "-qm", text]);
        git(repo, &["rev-parse", "HEAD"])
    }

    #[tokio::test]
    async fn a_remote_that_stops_answering_fails_the_read_in_time() {
        // A git daemon's port that takes the connection and never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("git://{}/silent.git", listener.local_addr().expect("addr"));
        let root = tempfile::tempdir().expect("temp dir");
        let mirrors = Mirrors {
            mirrors: kiln_io::git::Mirrors::new(root.path()).with_limit(Duration::from_millis(500)),
            ..Mirrors::new(root.path())
        };
        let read = tokio::time::timeout(
            Duration::from_secs(30),
            mirrors.read_file(&url, &"0".repeat(40), ".kiln.yml"),
        )
        .await
        .expect("given up on within the limit, not hanging");
        let error = read.expect_err("nothing to read").to_string();
        assert!(
            error.contains("git clone failed: stopped after 500ms"),
            "{error}"
        );
        assert!(!mirrors.path(&url).exists(), "no mirror is made");
        let left: Vec<_> = std::fs::read_dir(root.path())
            .expect("the mirrors' directory")
            .collect();
        assert!(left.is_empty(), "nothing half-cloned is left: {left:?}");
        drop(listener);
    }

    #[tokio::test]
    async fn a_fetch_retires_the_reader_started_before_it() {
        let origin = tempfile::tempdir().expect("temp dir");
        git(origin.path(), &["init", "-q"]);
        let first = commit(origin.path(), "one");
        let root = tempfile::tempdir().expect("temp dir");
        let mirrors = Mirrors::new(root.path());
        let url = origin.path().to_str().expect("utf-8");
        let mirror = mirrors.path(url);
        let running = || {
            let readers = mirrors.readers.lock().expect("not poisoned");
            readers.contains_key(&mirror)
        };

        // From the mirror itself, past the files kept.
        let read = |commit: String| {
            let mirrors = &mirrors;
            async move {
                mirrors
                    .read_file_from_mirror(url, &commit, ".kiln.yml")
                    .await
            }
        };
        assert_eq!(
            read(first.clone()).await.expect("read"),
            Some(b"one".to_vec())
        );
        // Cloned, then read through git's own command; the next read starts the reader.
        assert_eq!(
            read(first.clone()).await.expect("read"),
            Some(b"one".to_vec())
        );
        assert!(running());

        let second = commit(origin.path(), "two");
        assert_eq!(read(second).await.expect("read"), Some(b"two".to_vec()));
        assert!(!running(), "the reader is retired after the fetch");
        assert_eq!(read(first).await.expect("read"), Some(b"one".to_vec()));
        assert!(running(), "and another started at the next read");
    }

    #[tokio::test]
    async fn a_small_file_read_at_a_commit_id_is_kept_and_not_one_read_at_a_branch() {
        let origin = tempfile::tempdir().expect("temp dir");
        git(origin.path(), &["init", "-q", "-b", "main"]);
        let large = "x".repeat(KEPT_FILE_BYTES + 1);
        std::fs::write(origin.path().join("large"), &large).expect("write");
        let first = commit(origin.path(), "one");
        let root = tempfile::tempdir().expect("temp dir");
        let mirrors = Mirrors::new(root.path());
        let url = origin.path().to_str().expect("utf-8");
        for at in [first.as_str(), "main"] {
            let read = mirrors.read_file(url, at, ".kiln.yml").await;
            assert_eq!(read.expect("read"), Some(b"one".to_vec()), "at {at}");
        }
        let read = mirrors.read_file(url, &first, "large").await;
        assert_eq!(read.expect("read"), Some(large.into_bytes()));
        commit(origin.path(), "two");
        // The mirror is gone: only what was kept can be read, and a branch may have moved.
        std::fs::remove_dir_all(mirrors.path(url)).expect("remove the mirror");
        std::fs::remove_dir_all(origin.path().join(".git")).expect("remove the origin");
        let read = mirrors.read_file(url, &first, ".kiln.yml").await;
        assert_eq!(read.expect("kept"), Some(b"one".to_vec()));
        mirrors
            .read_file(url, "main", ".kiln.yml")
            .await
            .expect_err("not kept: read again, from a repository that is gone");
        mirrors
            .read_file(url, &first, "large")
            .await
            .expect_err("too large to be kept");
    }

    #[test]
    fn only_a_full_object_id_names_a_commit_for_good() {
        assert!(is_object_id(&"a1".repeat(20)));
        assert!(is_object_id(&"0f".repeat(32)));
        for name in ["main", "a1b2c3d", &"g".repeat(40), &"a".repeat(41)] {
            assert!(!is_object_id(name), "{name}");
        }
    }
}

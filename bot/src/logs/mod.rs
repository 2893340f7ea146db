//! Tasks' logs as readers see them: from Redis while their streams are there, from the
//! archive once their build ended and the streams expired ([`keeper`]). The text log, its
//! follow, `logs` and chat cards all read through here.

pub mod archive;
pub mod format;
pub mod keeper;

use anyhow::Context as _;
use kiln_shared::build::BuildId;
use kiln_shared::ident::RepoName;
use kiln_shared::log_line::shown;

use crate::store::{RawLine, Store};
pub use archive::Archive;

/// The readers' view of logs.
#[derive(Debug, Clone)]
pub struct Logs {
    store: Store,
    /// Where ended builds' logs go; none keeps them in Redis.
    pub archive: Option<Archive>,
}

impl Logs {
    pub fn new(store: Store, archive: Option<Archive>) -> Self {
        Self { store, archive }
    }

    /// The last `count` lines of a task's log, in order, and how many lines it has.
    pub async fn tail(
        &self,
        repo: &RepoName,
        id: BuildId,
        task: &str,
        count: usize,
    ) -> anyhow::Result<(Vec<String>, usize)> {
        let (lines, total) = self.store.log_tail(id, task, count).await?;
        if total > 0 {
            return Ok((lines, total));
        }
        let Some(mut all) = self.archived(repo, id, task).await? else {
            return Ok((lines, total));
        };
        let total = all.len();
        Ok((all.split_off(total.saturating_sub(count)), total))
    }

    /// Every line of a task's log, in order.
    pub async fn all(
        &self,
        repo: &RepoName,
        id: BuildId,
        task: &str,
    ) -> anyhow::Result<Vec<String>> {
        let lines = self.store.log_lines(id, task).await?;
        if !lines.is_empty() {
            return Ok(lines);
        }
        Ok(self.archived(repo, id, task).await?.unwrap_or(lines))
    }

    /// A task's log from the archive when its stream is gone from Redis; `None` while the
    /// stream is there (or the log was never archived).
    pub async fn instead_of_stream(
        &self,
        repo: &RepoName,
        id: BuildId,
        task: &str,
    ) -> anyhow::Result<Option<Vec<String>>> {
        if self.store.log_length(id, task).await? > 0 {
            return Ok(None);
        }
        self.archived(repo, id, task).await
    }

    /// A task's log from the archive, shown, if it was archived.
    pub async fn archived(
        &self,
        repo: &RepoName,
        id: BuildId,
        task: &str,
    ) -> anyhow::Result<Option<Vec<String>>> {
        let Some(archive) = &self.archive else {
            return Ok(None);
        };
        let Some(log) = self.store.task(id, task).await?.and_then(|t| t.log_archive) else {
            return Ok(None);
        };
        let bytes = archive
            .get(repo.as_str(), &log)
            .await
            .with_context(|| format!("the archived log of task `{task}` of build {id}"))?;
        let lines = tokio::task::spawn_blocking(move || format::decode(&bytes))
            .await?
            .with_context(|| format!("the archived log of task `{task}` of build {id}"))?;
        Ok(Some(lines.iter().map(shown_raw).collect()))
    }
}

/// A stored line as it is shown ([`kiln_shared::log_line`]).
fn shown_raw(raw: &RawLine) -> String {
    shown(&raw.fd, &raw.line)
}

//! The forges Kiln builds for, as the rest of the bot sees them: commit statuses, and for
//! commands in pull request comments the request's branch, the commenter's permission and
//! the answering comment. Each forge's client (`crate::vendors::github`,
//! `crate::vendors::gitlab`) implements [`ForgeClient`]; nothing here knows how a forge
//! spells any of it.

pub mod comments;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use async_trait::async_trait;
use kiln_shared::commit_status::CommitStatus;
use kiln_shared::ident::{BranchName, ChannelName, CommitId, RepoName};
use kiln_shared::trigger::Comment;

use crate::config::Forge;
use crate::metrics::Metrics;

/// The longest Kiln waits for a forge to answer one call.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A pull request's (or merge request's) source, as Kiln builds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    /// The branch it asks to merge.
    pub branch: BranchName,
    /// Whether that branch is in another repository (a fork).
    pub from_fork: bool,
    /// Its head commit.
    pub head: CommitId,
    /// The branch it asks to merge into.
    pub target: BranchName,
    /// Its title, and its author's login.
    pub title: String,
    pub author: String,
}

/// One forge's REST API. Repositories are named `owner/name` (GitLab: the project's path).
#[async_trait]
pub trait ForgeClient: Send + Sync + std::fmt::Debug {
    /// The mark between a repository and a request's number in the request's channel name
    /// (`github:owner/name#7`, `gitlab:group/name!7`): how the forge writes a reference.
    fn request_mark(&self) -> char;

    /// Sets `status` on `commit` of `repo`, linking to `url`.
    async fn set_status(
        &self,
        repo: &RepoName,
        commit: &CommitId,
        status: &CommitStatus,
        url: &str,
    ) -> anyhow::Result<()>;

    /// The source of pull request `number` of `repo`.
    async fn pull_request(&self, repo: &RepoName, number: u64) -> anyhow::Result<PullRequest>;

    /// Whether the author of `comment` may push to its repository.
    async fn may_write(&self, comment: &Comment) -> anyhow::Result<bool>;

    /// Comments `text` on request `number` of `repo`; returns the comment's id.
    async fn comment(&self, repo: &RepoName, number: u64, text: &str) -> anyhow::Result<String>;

    /// Replaces the text of comment `comment` on request `number` of `repo`.
    async fn edit_comment(
        &self,
        repo: &RepoName,
        number: u64,
        comment: &str,
        text: &str,
    ) -> anyhow::Result<()>;
}

/// The configured forges' clients; each call is given at most [`REQUEST_TIMEOUT`].
#[derive(Debug, Default)]
pub struct Forges {
    clients: BTreeMap<Forge, Arc<dyn ForgeClient>>,
    /// Where each call is counted, by forge and result.
    metrics: Arc<Metrics>,
}

impl Forges {
    /// The registry of `clients`, counting calls in `metrics`.
    pub fn new(
        clients: impl IntoIterator<Item = (Forge, Arc<dyn ForgeClient>)>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            clients: clients.into_iter().collect(),
            metrics,
        }
    }

    /// Whether `forge` is configured: statuses and comments can go to it.
    pub fn serves(&self, forge: Forge) -> bool {
        self.clients.contains_key(&forge)
    }

    /// `forge`'s client.
    fn client(&self, forge: Forge) -> anyhow::Result<&dyn ForgeClient> {
        self.clients
            .get(&forge)
            .map(AsRef::as_ref)
            .ok_or_else(|| anyhow!("[{}] is not configured", forge.as_str()))
    }

    /// Sets `status` on `commit` of `repo` on `forge`, linking to `url`.
    pub async fn set(
        &self,
        forge: Forge,
        repo: &RepoName,
        commit: &CommitId,
        status: &CommitStatus,
        url: &str,
    ) -> anyhow::Result<()> {
        let client = self.client(forge)?;
        self.counted(forge, client.set_status(repo, commit, status, url))
            .await
    }

    /// The source of pull request `number` of `repo` on `forge`.
    pub async fn pull_request(
        &self,
        forge: Forge,
        repo: &RepoName,
        number: u64,
    ) -> anyhow::Result<PullRequest> {
        let client = self.client(forge)?;
        self.counted(forge, client.pull_request(repo, number)).await
    }

    /// Whether the author of `comment` on `forge` may push to its repository.
    pub async fn may_write(&self, forge: Forge, comment: &Comment) -> anyhow::Result<bool> {
        let client = self.client(forge)?;
        self.counted(forge, client.may_write(comment)).await
    }

    /// Comments `text` on request `number` of `repo`; returns the comment's id.
    pub async fn comment(
        &self,
        forge: Forge,
        repo: &RepoName,
        number: u64,
        text: &str,
    ) -> anyhow::Result<String> {
        let client = self.client(forge)?;
        self.counted(forge, client.comment(repo, number, text))
            .await
    }

    /// The channel of request `number` of `repo` on `forge`: its comments.
    pub fn request_channel(&self, forge: Forge, repo: &RepoName, number: u64) -> ChannelName {
        let mark = self.client(forge).map_or('#', |c| c.request_mark());
        format!("{}:{repo}{mark}{number}", forge.as_str()).into()
    }

    /// `forge`'s client, when it is configured.
    pub fn get(&self, forge: Forge) -> Option<Arc<dyn ForgeClient>> {
        self.clients.get(&forge).cloned()
    }

    /// `call` to `forge`, given at most [`REQUEST_TIMEOUT`], and counted.
    async fn counted<T>(
        &self,
        forge: Forge,
        call: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        let answer = within(forge, call).await;
        self.metrics.called(forge.as_str(), answer.is_ok());
        answer
    }
}

/// `call` to `forge`, given at most [`REQUEST_TIMEOUT`] (comments, which the chat registry
/// counts as its own calls, go through here directly).
async fn within<T>(
    forge: Forge,
    call: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(REQUEST_TIMEOUT, call)
        .await
        .map_err(|_| anyhow!("{forge:?} took longer than {REQUEST_TIMEOUT:?}"))?
}

/// The `id` of something a forge made.
pub fn made_id(made: &serde_json::Value) -> anyhow::Result<String> {
    use anyhow::Context as _;
    made["id"]
        .as_u64()
        .map(|id| id.to_string())
        .context("the forge's answer has no `id`")
}

/// A JSON string a forge must have given.
pub fn text(value: &serde_json::Value, field: &str) -> anyhow::Result<String> {
    use anyhow::Context as _;
    value
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("the forge's answer has no `{field}`"))
}

//! GitLab's REST API through the `gitlab` crate: commit statuses, merge requests, project
//! members and merge request notes.
//!
//! Reads take the few fields Kiln needs from the plain JSON answer, as webhook payloads do.

use anyhow::{Context as _, anyhow};
use async_trait::async_trait;
use gitlab::api::projects::members::AllProjectMember;
use gitlab::api::projects::merge_requests::MergeRequest;
use gitlab::api::projects::merge_requests::notes::{CreateMergeRequestNote, EditMergeRequestNote};
use gitlab::api::projects::repository::commits::{CommitStatusState, CreateCommitStatus};
use gitlab::api::{ApiError, AsyncQuery};
use kiln_shared::commit_status::{CommitState, CommitStatus};
use kiln_shared::ident::{CommitId, RepoName};
use kiln_shared::trigger::Comment;
use secrecy::ExposeSecret;
use tokio::sync::OnceCell;

use super::REQUEST_MARK;
use crate::config;
use crate::forge::{ForgeClient, PullRequest, made_id, text};

/// GitLab's access level of a developer, who may push.
const DEVELOPER: u64 = 30;

/// GitLab's client, connected on first use: it checks its token as it connects, and a forge
/// that is down when the bot starts must not stop the bot.
#[derive(Debug)]
pub struct GitLab {
    config: config::GitLab,
    client: OnceCell<gitlab::AsyncGitlab>,
}

impl GitLab {
    /// A client for `config`, not yet connected.
    pub fn new(config: &config::GitLab) -> Self {
        Self {
            config: config.clone(),
            client: OnceCell::new(),
        }
    }

    /// The client, connected now if it was not yet.
    async fn client(&self) -> anyhow::Result<&gitlab::AsyncGitlab> {
        self.client.get_or_try_init(|| self.connect()).await
    }

    async fn connect(&self) -> anyhow::Result<gitlab::AsyncGitlab> {
        let url = &self.config.url;
        let (insecure, host) = match url.split_once("://") {
            Some(("https", host)) => (false, host),
            Some(("http", host)) => (true, host),
            _ => anyhow::bail!("[gitlab] url `{url}` is not an http(s) URL"),
        };
        let mut builder = gitlab::GitlabBuilder::new(
            host.trim_end_matches('/'),
            self.config.token.expose_secret(),
        );
        if insecure {
            builder.insecure();
        }
        builder
            .build_async()
            .await
            .with_context(|| format!("cannot reach GitLab at {url}"))
    }
}

#[async_trait]
impl ForgeClient for GitLab {
    fn request_mark(&self) -> char {
        REQUEST_MARK
    }

    async fn set_status(
        &self,
        repo: &RepoName,
        commit: &CommitId,
        status: &CommitStatus,
        url: &str,
    ) -> anyhow::Result<()> {
        let client = self.client().await?;
        let state = match status.state {
            CommitState::Pending => CommitStatusState::Pending,
            CommitState::Running => CommitStatusState::Running,
            CommitState::Success => CommitStatusState::Success,
            CommitState::Failure | CommitState::Error => CommitStatusState::Failed,
            CommitState::Cancelled => CommitStatusState::Canceled,
            CommitState::Skipped => CommitStatusState::Skipped,
        };
        let endpoint = CreateCommitStatus::builder()
            .project(repo.as_str())
            .commit(commit.as_str())
            .state(state)
            .name(status.context.as_str())
            .description(status.description.as_str())
            .target_url(url)
            .build()
            .map_err(|e| anyhow!("{e}"))?;
        match gitlab::api::ignore(endpoint).query_async(client).await {
            Ok(()) => Ok(()),
            // The status already has this state (set by an earlier pass, or another bot):
            // GitLab answers 400 "Cannot transition status via :run from :running".
            Err(ApiError::GitlabWithStatus { status: code, msg })
                if code.as_u16() == 400 && msg.contains("Cannot transition status") =>
            {
                Ok(())
            }
            Err(e) => Err(anyhow::Error::new(e).context(format!(
                "GitLab refused the status {} of {repo}",
                status.context
            ))),
        }
    }

    async fn pull_request(&self, repo: &RepoName, iid: u64) -> anyhow::Result<PullRequest> {
        let endpoint = MergeRequest::builder()
            .project(repo.as_str())
            .merge_request(iid)
            .build()
            .map_err(|e| anyhow!("{e}"))?;
        let merge_request: serde_json::Value = endpoint
            .query_async(self.client().await?)
            .await
            .with_context(|| format!("cannot read merge request !{iid} of {repo}"))?;
        let field = |name: &str| merge_request[name].as_str().unwrap_or_default().to_owned();
        Ok(PullRequest {
            branch: text(&merge_request["source_branch"], "source_branch")?.into(),
            from_fork: merge_request["source_project_id"] != merge_request["target_project_id"],
            head: text(&merge_request["sha"], "sha")?.into(),
            target: text(&merge_request["target_branch"], "target_branch")?.into(),
            title: field("title"),
            author: merge_request["author"]["username"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        })
    }

    /// Developer or more: GitLab looks members up by user id.
    async fn may_write(&self, comment: &Comment) -> anyhow::Result<bool> {
        let (repo, user) = (&comment.repo, &comment.author_id);
        let user: u64 = user
            .parse()
            .with_context(|| format!("`{user}` is not a GitLab user id"))?;
        let endpoint = AllProjectMember::builder()
            .project(repo.as_str())
            .user(user)
            .build()
            .map_err(|e| anyhow!("{e}"))?;
        let member: Result<serde_json::Value, _> = endpoint.query_async(self.client().await?).await;
        match member {
            Ok(member) => Ok(member["access_level"].as_u64().unwrap_or(0) >= DEVELOPER),
            Err(ApiError::GitlabWithStatus { status, .. }) if status.as_u16() == 404 => Ok(false),
            Err(e) => Err(anyhow::Error::new(e)
                .context(format!("cannot read user {user}'s access to {repo}"))),
        }
    }

    async fn comment(&self, repo: &RepoName, iid: u64, text: &str) -> anyhow::Result<String> {
        let endpoint = CreateMergeRequestNote::builder()
            .project(repo.as_str())
            .merge_request(iid)
            .body(text)
            .build()
            .map_err(|e| anyhow!("{e}"))?;
        let note: serde_json::Value = endpoint
            .query_async(self.client().await?)
            .await
            .with_context(|| format!("cannot comment on !{iid} of {repo}"))?;
        made_id(&note)
    }

    async fn edit_comment(
        &self,
        repo: &RepoName,
        iid: u64,
        comment: &str,
        text: &str,
    ) -> anyhow::Result<()> {
        let endpoint = EditMergeRequestNote::builder()
            .project(repo.as_str())
            .merge_request(iid)
            .note(comment.parse::<u64>().context("a GitLab note id")?)
            .body(text)
            .build()
            .map_err(|e| anyhow!("{e}"))?;
        gitlab::api::ignore(endpoint)
            .query_async(self.client().await?)
            .await
            .with_context(|| format!("cannot edit a note on !{iid} of {repo}"))?;
        Ok(())
    }
}

//! Commit statuses on the forges, through their REST clients: octocrab for GitHub, the
//! `gitlab` crate for GitLab. Only this module knows how each spells a status.

use std::time::Duration;

use anyhow::{Context, anyhow};
use gitlab::api::AsyncQuery;
use gitlab::api::projects::repository::commits::{CommitStatusState, CreateCommitStatus};
use kiln_shared::commit_status::{CommitState, CommitStatus};
use octocrab::Octocrab;
use octocrab::models::StatusState;
use secrecy::ExposeSecret;
use tokio::sync::OnceCell;

use crate::config::{self, Forge};

/// The longest Kiln waits for a forge to take one status.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// The forges Kiln reports commit statuses to, as configured.
pub struct Forges {
    github: Option<Octocrab>,
    gitlab: Option<GitLab>,
}

impl std::fmt::Debug for Forges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forges")
            .field("github", &self.github.is_some())
            .field("gitlab", &self.gitlab.is_some())
            .finish()
    }
}

/// GitLab's client, connected on first use: it checks its token as it connects, and a forge
/// that is down when the bot starts must not stop the bot.
struct GitLab {
    config: config::GitLab,
    client: OnceCell<gitlab::AsyncGitlab>,
}

impl Forges {
    /// The configured forges' clients.
    pub fn new(
        github: Option<&config::GitHub>,
        gitlab: Option<&config::GitLab>,
    ) -> anyhow::Result<Self> {
        let github = match github {
            None => None,
            Some(config) => {
                let mut builder = Octocrab::builder()
                    .personal_token(config.token.expose_secret().to_owned())
                    .set_connect_timeout(Some(REQUEST_TIMEOUT))
                    .set_read_timeout(Some(REQUEST_TIMEOUT));
                if let Some(url) = &config.api_url {
                    builder = builder
                        .base_uri(url.as_str())
                        .with_context(|| format!("[github] api_url `{url}` is not a URL"))?;
                }
                Some(builder.build().context("cannot set GitHub's client up")?)
            }
        };
        Ok(Self {
            github,
            gitlab: gitlab.map(|config| GitLab {
                config: config.clone(),
                client: OnceCell::new(),
            }),
        })
    }

    /// Whether statuses can go to `forge`.
    pub fn serves(&self, forge: Forge) -> bool {
        match forge {
            Forge::GitHub => self.github.is_some(),
            Forge::GitLab => self.gitlab.is_some(),
        }
    }

    /// Sets `status` on `commit` of `repo` (`owner/name`), linking to `url`.
    pub async fn set(
        &self,
        forge: Forge,
        repo: &str,
        commit: &str,
        status: &CommitStatus,
        url: &str,
    ) -> anyhow::Result<()> {
        let set = async {
            match forge {
                Forge::GitHub => self.set_on_github(repo, commit, status, url).await,
                Forge::GitLab => self.set_on_gitlab(repo, commit, status, url).await,
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, set)
            .await
            .map_err(|_| anyhow!("{forge:?} took longer than {REQUEST_TIMEOUT:?}"))?
    }

    async fn set_on_github(
        &self,
        repo: &str,
        commit: &str,
        status: &CommitStatus,
        url: &str,
    ) -> anyhow::Result<()> {
        let github = self.github.as_ref().context("[github] is not configured")?;
        let (owner, name) = repo
            .split_once('/')
            .with_context(|| format!("`{repo}` is not owner/name"))?;
        // GitHub has no running, cancelled or skipped: pending, error, and a success that
        // says it was skipped (as GitHub's own checks count a skipped one).
        let state = match status.state {
            CommitState::Pending | CommitState::Running => StatusState::Pending,
            CommitState::Success | CommitState::Skipped => StatusState::Success,
            CommitState::Failure => StatusState::Failure,
            CommitState::Error | CommitState::Cancelled => StatusState::Error,
        };
        github
            .repos(owner, name)
            .create_status(commit.to_owned(), state)
            .context(status.context.clone())
            .description(status.description.clone())
            .target(url.to_owned())
            .send()
            .await
            .with_context(|| format!("GitHub refused the status {} of {repo}", status.context))?;
        Ok(())
    }

    async fn set_on_gitlab(
        &self,
        repo: &str,
        commit: &str,
        status: &CommitStatus,
        url: &str,
    ) -> anyhow::Result<()> {
        let gitlab = self.gitlab.as_ref().context("[gitlab] is not configured")?;
        let client = gitlab.client.get_or_try_init(|| gitlab.connect()).await?;
        let state = match status.state {
            CommitState::Pending => CommitStatusState::Pending,
            CommitState::Running => CommitStatusState::Running,
            CommitState::Success => CommitStatusState::Success,
            CommitState::Failure | CommitState::Error => CommitStatusState::Failed,
            CommitState::Cancelled => CommitStatusState::Canceled,
            CommitState::Skipped => CommitStatusState::Skipped,
        };
        let endpoint = CreateCommitStatus::builder()
            .project(repo)
            .commit(commit)
            .state(state)
            .name(status.context.as_str())
            .description(status.description.as_str())
            .target_url(url)
            .build()
            .map_err(|e| anyhow!("{e}"))?;
        gitlab::api::ignore(endpoint)
            .query_async(client)
            .await
            .with_context(|| format!("GitLab refused the status {} of {repo}", status.context))?;
        Ok(())
    }
}

impl GitLab {
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

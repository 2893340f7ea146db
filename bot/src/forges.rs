//! The forges' REST APIs, through their clients (octocrab for GitHub, the `gitlab` crate for
//! GitLab): commit statuses, and for commands in pull request comments the pull request's
//! branch, the commenter's permission and the answering comment. Only this module knows how
//! each forge spells them.
//!
//! Reads use the clients' plain JSON calls and take the few fields Kiln needs, as webhook
//! payloads do: the clients' full models break on fields a forge leaves out.

use std::time::Duration;

use anyhow::{Context, anyhow};
use gitlab::api::projects::members::AllProjectMember;
use gitlab::api::projects::merge_requests::MergeRequest;
use gitlab::api::projects::merge_requests::notes::{CreateMergeRequestNote, EditMergeRequestNote};
use gitlab::api::projects::repository::commits::{CommitStatusState, CreateCommitStatus};
use gitlab::api::{ApiError, AsyncQuery};
use kiln_shared::commit_status::{CommitState, CommitStatus};
use octocrab::Octocrab;
use octocrab::models::StatusState;
use secrecy::ExposeSecret;
use tokio::sync::OnceCell;

use crate::config::{self, Forge};

/// The longest Kiln waits for a forge to take one status.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A pull request's (or merge request's) source, as Kiln builds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    /// The branch it asks to merge.
    pub branch: String,
    /// Whether that branch is in another repository (a fork).
    pub from_fork: bool,
}

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
        within(forge, set).await
    }

    /// The source of pull request `number` of `repo`.
    pub async fn pull_request(
        &self,
        forge: Forge,
        repo: &str,
        number: u64,
    ) -> anyhow::Result<PullRequest> {
        let read = async {
            match forge {
                Forge::GitHub => {
                    let pull: serde_json::Value = self
                        .github()?
                        .get(format!("/repos/{repo}/pulls/{number}"), None::<&()>)
                        .await
                        .with_context(|| format!("cannot read pull request #{number} of {repo}"))?;
                    let head = &pull["head"];
                    Ok(PullRequest {
                        branch: text(&head["ref"], "head.ref")?,
                        from_fork: !head["repo"]["full_name"]
                            .as_str()
                            .is_some_and(|r| r.eq_ignore_ascii_case(repo)),
                    })
                }
                Forge::GitLab => self.merge_request_on_gitlab(repo, number).await,
            }
        };
        within(forge, read).await
    }

    /// Whether the forge's user `user` may push to `repo` (GitHub: write, maintain or admin;
    /// GitLab: developer or more).
    pub async fn may_write(&self, forge: Forge, repo: &str, user: &str) -> anyhow::Result<bool> {
        let read = async {
            match forge {
                Forge::GitHub => {
                    let answer: Result<serde_json::Value, _> = self
                        .github()?
                        .get(
                            format!("/repos/{repo}/collaborators/{user}/permission"),
                            None::<&()>,
                        )
                        .await;
                    match answer {
                        Ok(permission) => Ok(matches!(
                            permission["permission"].as_str(),
                            Some("admin" | "maintain" | "write")
                        )),
                        // Not a collaborator at all.
                        Err(octocrab::Error::GitHub { source, .. })
                            if source.status_code.as_u16() == 404 =>
                        {
                            Ok(false)
                        }
                        Err(e) => Err(anyhow::Error::new(e)
                            .context(format!("cannot read {user}'s permission on {repo}"))),
                    }
                }
                Forge::GitLab => self.may_write_on_gitlab(repo, user).await,
            }
        };
        within(forge, read).await
    }

    /// Comments `text` (markdown) on pull request `number` of `repo`; returns the comment's
    /// id.
    pub async fn comment(
        &self,
        forge: Forge,
        repo: &str,
        number: u64,
        text: &str,
    ) -> anyhow::Result<String> {
        let post = async {
            match forge {
                Forge::GitHub => {
                    let comment: serde_json::Value = self
                        .github()?
                        .post(
                            format!("/repos/{repo}/issues/{number}/comments"),
                            Some(&serde_json::json!({ "body": text })),
                        )
                        .await
                        .with_context(|| format!("cannot comment on #{number} of {repo}"))?;
                    id(&comment)
                }
                Forge::GitLab => self.comment_on_gitlab(repo, number, text).await,
            }
        };
        within(forge, post).await
    }

    /// Replaces the text of comment `comment` on pull request `number` of `repo`.
    pub async fn edit_comment(
        &self,
        forge: Forge,
        repo: &str,
        number: u64,
        comment: &str,
        text: &str,
    ) -> anyhow::Result<()> {
        let edit = async {
            match forge {
                Forge::GitHub => {
                    let _: serde_json::Value = self
                        .github()?
                        .patch(
                            format!("/repos/{repo}/issues/comments/{comment}"),
                            Some(&serde_json::json!({ "body": text })),
                        )
                        .await
                        .with_context(|| format!("cannot edit a comment on #{number} of {repo}"))?;
                    Ok(())
                }
                Forge::GitLab => {
                    let endpoint = EditMergeRequestNote::builder()
                        .project(repo)
                        .merge_request(number)
                        .note(comment.parse::<u64>().context("a GitLab note id")?)
                        .body(text)
                        .build()
                        .map_err(|e| anyhow!("{e}"))?;
                    gitlab::api::ignore(endpoint)
                        .query_async(self.gitlab()?.client().await?)
                        .await
                        .with_context(|| format!("cannot edit a note on !{number} of {repo}"))?;
                    Ok(())
                }
            }
        };
        within(forge, edit).await
    }

    fn github(&self) -> anyhow::Result<&Octocrab> {
        self.github.as_ref().context("[github] is not configured")
    }

    async fn set_on_github(
        &self,
        repo: &str,
        commit: &str,
        status: &CommitStatus,
        url: &str,
    ) -> anyhow::Result<()> {
        let github = self.github()?;
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
        let client = self.gitlab()?.client().await?;
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
}

impl Forges {
    fn gitlab(&self) -> anyhow::Result<&GitLab> {
        self.gitlab.as_ref().context("[gitlab] is not configured")
    }

    async fn merge_request_on_gitlab(&self, repo: &str, iid: u64) -> anyhow::Result<PullRequest> {
        let gitlab = self.gitlab()?;
        let endpoint = MergeRequest::builder()
            .project(repo)
            .merge_request(iid)
            .build()
            .map_err(|e| anyhow!("{e}"))?;
        let merge_request: serde_json::Value =
            endpoint
                .query_async(gitlab.client().await?)
                .await
                .with_context(|| format!("cannot read merge request !{iid} of {repo}"))?;
        Ok(PullRequest {
            branch: text(&merge_request["source_branch"], "source_branch")?,
            from_fork: merge_request["source_project_id"] != merge_request["target_project_id"],
        })
    }

    async fn may_write_on_gitlab(&self, repo: &str, user: &str) -> anyhow::Result<bool> {
        /// GitLab's access level of a developer, who may push.
        const DEVELOPER: u64 = 30;
        let gitlab = self.gitlab()?;
        let user: u64 = user
            .parse()
            .with_context(|| format!("`{user}` is not a GitLab user id"))?;
        let endpoint = AllProjectMember::builder()
            .project(repo)
            .user(user)
            .build()
            .map_err(|e| anyhow!("{e}"))?;
        let member: Result<serde_json::Value, _> =
            endpoint.query_async(gitlab.client().await?).await;
        match member {
            Ok(member) => Ok(member["access_level"].as_u64().unwrap_or(0) >= DEVELOPER),
            Err(ApiError::GitlabWithStatus { status, .. }) if status.as_u16() == 404 => Ok(false),
            Err(e) => Err(anyhow::Error::new(e)
                .context(format!("cannot read user {user}'s access to {repo}"))),
        }
    }

    async fn comment_on_gitlab(&self, repo: &str, iid: u64, text: &str) -> anyhow::Result<String> {
        let gitlab = self.gitlab()?;
        let endpoint = CreateMergeRequestNote::builder()
            .project(repo)
            .merge_request(iid)
            .body(text)
            .build()
            .map_err(|e| anyhow!("{e}"))?;
        let note: serde_json::Value = endpoint
            .query_async(gitlab.client().await?)
            .await
            .with_context(|| format!("cannot comment on !{iid} of {repo}"))?;
        id(&note)
    }
}

/// `call`, given at most [`REQUEST_TIMEOUT`].
async fn within<T>(
    forge: Forge,
    call: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(REQUEST_TIMEOUT, call)
        .await
        .map_err(|_| anyhow!("{forge:?} took longer than {REQUEST_TIMEOUT:?}"))?
}

/// The `id` of something the forge made.
fn id(made: &serde_json::Value) -> anyhow::Result<String> {
    made["id"]
        .as_u64()
        .map(|id| id.to_string())
        .context("the forge's answer has no `id`")
}

/// A JSON string the forge must have given.
fn text(value: &serde_json::Value, field: &str) -> anyhow::Result<String> {
    value
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("the forge's answer has no `{field}`"))
}

impl GitLab {
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

//! GitHub's REST API through octocrab: commit statuses, pull requests, collaborators'
//! permissions and issue comments.
//!
//! Reads use the client's plain JSON calls and take the few fields Kiln needs, as webhook
//! payloads do: the client's full models break on fields GitHub leaves out.

use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use kiln_shared::commit_status::{CommitState, CommitStatus};
use kiln_shared::ident::{CommitId, RepoName};
use kiln_shared::trigger::Comment;
use octocrab::Octocrab;
use octocrab::models::StatusState;
use secrecy::ExposeSecret;

use super::REQUEST_MARK;
use crate::config;
use crate::forge::{ForgeClient, PullRequest, made_id, text};

/// How long octocrab waits to connect, and for an answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// GitHub, with the configured token.
#[derive(Debug)]
pub struct GitHub {
    octocrab: Octocrab,
}

impl GitHub {
    /// A client for `config`.
    pub fn new(config: &config::GitHub) -> anyhow::Result<Self> {
        let mut builder = Octocrab::builder()
            .personal_token(config.token.expose_secret().to_owned())
            .set_connect_timeout(Some(REQUEST_TIMEOUT))
            .set_read_timeout(Some(REQUEST_TIMEOUT));
        if let Some(url) = &config.api_url {
            builder = builder
                .base_uri(url.as_str())
                .with_context(|| format!("[github] api_url `{url}` is not a URL"))?;
        }
        Ok(Self {
            octocrab: builder.build().context("cannot set GitHub's client up")?,
        })
    }
}

#[async_trait]
impl ForgeClient for GitHub {
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
        self.octocrab
            .repos(owner, name)
            .create_status(commit.to_string(), state)
            .context(status.context.clone())
            .description(status.description.clone())
            .target(url.to_owned())
            .send()
            .await
            .with_context(|| format!("GitHub refused the status {} of {repo}", status.context))?;
        Ok(())
    }

    async fn pull_request(&self, repo: &RepoName, number: u64) -> anyhow::Result<PullRequest> {
        let pull: serde_json::Value = self
            .octocrab
            .get(format!("/repos/{repo}/pulls/{number}"), None::<&()>)
            .await
            .with_context(|| format!("cannot read pull request #{number} of {repo}"))?;
        let head = &pull["head"];
        Ok(PullRequest {
            branch: text(&head["ref"], "head.ref")?.into(),
            from_fork: !head["repo"]["full_name"]
                .as_str()
                .is_some_and(|r| r.eq_ignore_ascii_case(repo)),
            head: text(&head["sha"], "head.sha")?.into(),
            target: text(&pull["base"]["ref"], "base.ref")?.into(),
            title: pull["title"].as_str().unwrap_or_default().to_owned(),
            author: pull["user"]["login"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        })
    }

    /// Write, maintain or admin: GitHub looks permissions up by login.
    async fn may_write(&self, comment: &Comment) -> anyhow::Result<bool> {
        let (repo, user) = (&comment.repo, &comment.author);
        let answer: Result<serde_json::Value, _> = self
            .octocrab
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
            Err(octocrab::Error::GitHub { source, .. }) if source.status_code.as_u16() == 404 => {
                Ok(false)
            }
            Err(e) => {
                Err(anyhow::Error::new(e)
                    .context(format!("cannot read {user}'s permission on {repo}")))
            }
        }
    }

    async fn comment(&self, repo: &RepoName, number: u64, text: &str) -> anyhow::Result<String> {
        let comment: serde_json::Value = self
            .octocrab
            .post(
                format!("/repos/{repo}/issues/{number}/comments"),
                Some(&serde_json::json!({ "body": text })),
            )
            .await
            .with_context(|| format!("cannot comment on #{number} of {repo}"))?;
        made_id(&comment)
    }

    async fn edit_comment(
        &self,
        repo: &RepoName,
        number: u64,
        comment: &str,
        text: &str,
    ) -> anyhow::Result<()> {
        let _: serde_json::Value = self
            .octocrab
            .patch(
                format!("/repos/{repo}/issues/comments/{comment}"),
                Some(&serde_json::json!({ "body": text })),
            )
            .await
            .with_context(|| format!("cannot edit a comment on #{number} of {repo}"))?;
        Ok(())
    }
}

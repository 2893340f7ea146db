//! `build <repo> [branch | commit]`.

use kiln_shared::build::BuildId;
use kiln_shared::command::Target;
use kiln_shared::trigger::TriggerKind;
use kiln_shared::wire::{BuildRef, BuildRequested};

use super::actor::Actor;
use super::reply::Reply;
use crate::app::App;
use crate::{ingress, repositories};

/// `build <repo> [branch | commit]`: the branch's head, or the commit on a branch that holds
/// it (the default branch first): a build always has a branch, which decides its caches,
/// images and secrets.
pub async fn build(
    app: &App,
    actor: Actor<'_>,
    repo: &str,
    target: &Target,
) -> anyhow::Result<Reply> {
    let Some(repository) = app.config.repository(repo) else {
        return Ok(Reply::invalid(format!("Kiln does not build {repo}.")));
    };
    let Some(clone_url) = repositories::clone_url(app, repository).await? else {
        return Ok(Reply::invalid(format!(
            "Kiln does not know where to fetch {repo} from yet: push to it once, or set its \
             `clone_url` in Kiln's configuration."
        )));
    };
    let Some(resolved) = app.mirrors.resolve(&clone_url, target).await? else {
        return Ok(Reply::invalid(match target {
            Target::Branch(branch) => format!("{repo} has no branch `{branch}`."),
            Target::Commit(commit) => format!("{repo} has no commit `{commit}`."),
        }));
    };
    let branch = ["master", "main"]
        .into_iter()
        .find(|default| resolved.branches.iter().any(|b| b == default))
        .map(str::to_owned)
        .or_else(|| resolved.branches.first().cloned());
    let Some(branch) = branch else {
        return Ok(Reply::invalid(format!(
            "Commit {} is on no branch of {repo}; Kiln builds branches.",
            resolved.commit
        )));
    };
    let name = repository.name.clone();
    let commit = resolved.commit.clone();
    let id = ingress::accept_command(
        app,
        actor.channel,
        BuildRequested {
            build: BuildRef {
                id: BuildId(0),
                repo: name,
                branch: branch.clone(),
                commit: commit.clone(),
            },
            clone_url,
            author: resolved.author,
            subject: resolved.subject,
            kind: TriggerKind::Command,
            changed_paths: None,
            reuse: None,
        },
    )
    .await?;
    let short: String = commit.chars().take(8).collect();
    Ok(Reply::done(format!(
        "Build #{id} of {repo} {branch} ({short}) is queued, for {}.",
        actor.name
    )))
}

//! `build <repo> [branch | commit] [KEY=VALUE …] [--priority high|normal]`.

use std::collections::BTreeMap;

use kiln_shared::build::BuildId;
use kiln_shared::command::Target;
use kiln_shared::ident::{BranchName, RepoName};
use kiln_shared::priority::Priority;
use kiln_shared::trigger::TriggerKind;
use kiln_shared::wire::NewBuild;

use super::actor::Actor;
use super::reply::{self, Reply};
use crate::app::App;
use crate::{ingress, repositories};

/// `build <repo> [branch | commit] [KEY=VALUE …]`: the branch's head, or the commit on a
/// branch that holds it (the default branch first): a build always has a branch, which
/// decides its caches, images and secrets. Its tasks see `vars`.
pub async fn build(
    app: &App,
    actor: Actor<'_>,
    repo: &RepoName,
    target: &Target,
    vars: &BTreeMap<String, String>,
    priority: Option<Priority>,
) -> anyhow::Result<Reply> {
    let Some(repository) = app.config.repository(repo) else {
        return Ok(reply::not_built(repo));
    };
    let Some(clone_url) = repositories::clone_url(app, repository).await? else {
        return Ok(unknown_source(repo));
    };
    let Some(resolved) = app.mirrors.resolve(&clone_url, target).await? else {
        return Ok(no_such_target(repo, target));
    };
    let branch = ["master", "main"]
        .into_iter()
        .find(|default| resolved.branches.iter().any(|b| b == default))
        .map(BranchName::from)
        .or_else(|| resolved.branches.first().cloned());
    let Some(branch) = branch else {
        return Ok(on_no_branch(repo, &resolved.commit));
    };
    let name = repository.name.clone();
    let commit = resolved.commit.clone();
    let id = ingress::accept_command(
        app,
        actor.channel,
        NewBuild {
            repo: name,
            branch: branch.clone(),
            commit: commit.clone(),
            clone_url,
            author: resolved.author,
            subject: resolved.subject,
            kind: TriggerKind::Command,
            changed_paths: None,
            reuse: None,
            note: None,
            vars: vars.clone(),
            request: None,
            rerun: None,
            priority: priority
                .unwrap_or_else(|| repository.priority_of(TriggerKind::Command, &branch)),
        },
    )
    .await?;
    Ok(queued(id, repo, &branch, &commit, actor.name))
}

fn unknown_source(repo: &str) -> Reply {
    Reply::invalid(format!(
        "Kiln does not know where to fetch {repo} from yet: push to it once, or set its \
         `clone_url` in Kiln's configuration."
    ))
}

fn no_such_target(repo: &str, target: &Target) -> Reply {
    Reply::invalid(match target {
        Target::Branch(branch) => format!("{repo} has no branch `{branch}`."),
        Target::Commit(commit) => format!("{repo} has no commit `{commit}`."),
    })
}

fn on_no_branch(repo: &str, commit: &str) -> Reply {
    Reply::invalid(format!(
        "Commit {commit} is on no branch of {repo}; Kiln builds branches."
    ))
}

fn queued(id: BuildId, repo: &str, branch: &str, commit: &str, by: &str) -> Reply {
    let short: String = commit.chars().take(8).collect();
    Reply::started(
        id,
        format!("Build #{id} of {repo} {branch} ({short}) is queued, for {by}."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        insta::assert_snapshot!(unknown_source("acme/app").text, @"Kiln does not know where to fetch acme/app from yet: push to it once, or set its `clone_url` in Kiln's configuration.");
        insta::assert_snapshot!(no_such_target("acme/app", &Target::Branch("`@everyone`".into())).text, @"acme/app has no branch ``@everyone``.");
        insta::assert_snapshot!(no_such_target("acme/app", &Target::Commit("abc123".into())).text, @"acme/app has no commit `abc123`.");
        insta::assert_snapshot!(on_no_branch("acme/app", "abc123").text, @"Commit abc123 is on no branch of acme/app; Kiln builds branches.");
        insta::assert_snapshot!(queued(BuildId(12), "acme/app", "main", "0123456789abcdef", "<script>").text, @"Build #12 of acme/app main (01234567) is queued, for <script>.");
    }
}

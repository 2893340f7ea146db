//! `retry <build> [--failed]`.

use kiln_shared::build::{BuildId, TaskStatus};
use kiln_shared::wire::{BuildRef, BuildRequested};

use super::actor::Actor;
use super::reply::Reply;
use crate::app::App;
use crate::ingress;

/// `retry <build> [--failed]`: the same commit of the same branch, built again from the
/// start, or (`--failed`) with the tasks that passed taken as they are.
pub async fn retry(
    app: &App,
    actor: Actor<'_>,
    build: BuildId,
    failed_only: bool,
) -> anyhow::Result<Reply> {
    let Some(record) = app.store.build(build).await? else {
        return Ok(Reply::invalid(format!("There is no build #{build}.")));
    };
    if failed_only {
        if !record.status.is_final() {
            return Ok(Reply::invalid(format!(
                "Build #{build} is still {}: `retry --failed` re-runs what an ended build did \
                 not pass.",
                record.status
            )));
        }
        let tasks = match &record.plan {
            Some(plan) => app.store.tasks(build, plan).await?,
            None => Vec::new(),
        };
        if tasks.is_empty() || tasks.iter().all(|t| t.status == TaskStatus::Passed) {
            return Ok(Reply::invalid(format!(
                "Build #{build} has no task that did not pass; `retry {build}` builds it \
                 again from the start."
            )));
        }
    }
    let id = ingress::accept_command(
        app,
        actor.channel,
        BuildRequested {
            build: BuildRef {
                id: BuildId(0),
                ..record.build.clone()
            },
            clone_url: record.clone_url.clone(),
            author: record.author.clone(),
            subject: record.subject.clone(),
            // As the build it repeats: the same steps apply (`when: { event: … }`).
            kind: record.kind,
            changed_paths: record.changed_paths.clone(),
            reuse: failed_only.then_some(build),
        },
    )
    .await?;
    let what = if failed_only {
        format!("what did not pass in build #{build}")
    } else {
        format!("build #{build}")
    };
    Ok(Reply::done(format!(
        "Build #{id} runs {what} again ({} {}), for {}.",
        record.build.repo, record.build.branch, actor.name
    )))
}

//! `retry <build> [--failed]`.

use kiln_shared::build::{BuildId, BuildStatus, TaskStatus};
use kiln_shared::wire::{BuildRef, NewBuild};

use super::actor::Actor;
use super::reply::{self, Reply};
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
        return Ok(reply::no_such_build(build));
    };
    if failed_only {
        if !record.status.is_final() {
            return Ok(still_running(build, record.status));
        }
        let tasks = match &record.plan {
            Some(plan) => app.store.tasks(build, plan).await?,
            None => Vec::new(),
        };
        if tasks.is_empty() || tasks.iter().all(|t| t.status == TaskStatus::Passed) {
            return Ok(nothing_failed(build));
        }
    }
    let id = ingress::accept_command(
        app,
        actor.channel,
        // As the build it repeats (the same steps apply: `when: { event: … }`), taking
        // what passed in it when only what did not is to run again.
        NewBuild {
            reuse: failed_only.then_some(build),
            note: Some(format!("retry of #{build}")),
            ..record.asked()
        },
    )
    .await?;
    Ok(retried(id, build, failed_only, &record.build, actor.name))
}

fn still_running(build: BuildId, status: BuildStatus) -> Reply {
    Reply::invalid(format!(
        "Build #{build} is still {status}: `retry --failed` re-runs what an ended build did \
         not pass."
    ))
}

fn nothing_failed(build: BuildId) -> Reply {
    Reply::invalid(format!(
        "Build #{build} has no task that did not pass; `retry {build}` builds it again from \
         the start."
    ))
}

fn retried(id: BuildId, of: BuildId, failed_only: bool, build: &BuildRef, by: &str) -> Reply {
    let what = if failed_only {
        format!("what did not pass in build #{of}")
    } else {
        format!("build #{of}")
    };
    Reply::done(format!(
        "Build #{id} runs {what} again ({} {}), for {by}.",
        build.repo, build.branch
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        let build = BuildRef {
            id: BuildId(3),
            repo: "acme/app".into(),
            branch: "main".into(),
            commit: "abc".into(),
        };
        insta::assert_snapshot!(still_running(BuildId(3), BuildStatus::Running).text, @"Build #3 is still running: `retry --failed` re-runs what an ended build did not pass.");
        insta::assert_snapshot!(nothing_failed(BuildId(3)).text, @"Build #3 has no task that did not pass; `retry 3` builds it again from the start.");
        insta::assert_snapshot!(retried(BuildId(4), BuildId(3), true, &build, "ada").text, @"Build #4 runs what did not pass in build #3 again (acme/app main), for ada.");
        insta::assert_snapshot!(retried(BuildId(4), BuildId(3), false, &build, "@here").text, @"Build #4 runs build #3 again (acme/app main), for @here.");
    }
}

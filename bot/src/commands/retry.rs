//! `retry <build> [task] [--failed]` and `run <build> <step>`.

use kiln_shared::build::{BuildId, BuildStatus, TaskStatus};
use kiln_shared::wire::{BuildRef, NewBuild};

use super::actor::Actor;
use super::reply::{self, Reply};
use crate::app::App;
use crate::ingress;
use crate::store::BuildRecord;

/// `retry <build> [task] [--failed]`: the same commit of the same branch, built again from the
/// start; with a task (or a step), a new build that runs it and what needs it and takes the
/// rest as it passed; with `--failed`, one that takes the tasks that passed as they are.
pub async fn retry(
    app: &App,
    actor: Actor<'_>,
    build: BuildId,
    failed_only: bool,
    task: Option<&str>,
) -> anyhow::Result<Reply> {
    let Some(record) = app.store.build(build).await? else {
        return Ok(reply::no_such_build(build));
    };
    if let Some(task) = task {
        return again(app, actor, &record, task, false).await;
    }
    if failed_only {
        if !record.status.is_final() {
            return Ok(still_running(build, record.status));
        }
        let tasks = match &record.plan {
            Some(plan) => app.store.tasks(build, plan).await?,
            None => Vec::new(),
        };
        let done = |s: TaskStatus| matches!(s, TaskStatus::Passed | TaskStatus::Manual);
        if tasks.is_empty() || tasks.iter().all(|t| done(t.status)) {
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
            rerun: None,
            note: Some(format!("retry of #{build}")),
            ..record.asked()
        },
    )
    .await?;
    Ok(retried(id, build, failed_only, &record.build, actor.name))
}

/// `run <build> <step>`: a step run by hand (`when: { manual: true }`) of `build`, run in a
/// new build with what needs it, the rest taken as it passed.
pub async fn run(app: &App, actor: Actor<'_>, build: BuildId, step: &str) -> anyhow::Result<Reply> {
    let Some(record) = app.store.build(build).await? else {
        return Ok(reply::no_such_build(build));
    };
    again(app, actor, &record, step, true).await
}

/// A new build of `record`'s commit that runs `name` (a task or a step) and what needs it,
/// and takes the rest as it passed in `record`; `by_hand` when only a step run by hand may be
/// named.
async fn again(
    app: &App,
    actor: Actor<'_>,
    record: &BuildRecord,
    name: &str,
    by_hand: bool,
) -> anyhow::Result<Reply> {
    let build = record.build.id;
    let what = if by_hand { "run" } else { "retry" };
    if !record.status.is_final() {
        // What has not passed yet would be run again beside the build still running it.
        return Ok(Reply::invalid(format!(
            "Build #{build} is still {}: `{what} {build} {name}` takes the rest of an ended \
             build as it passed; cancel it, or wait for its end.",
            record.status
        )));
    }
    let Some(plan) = &record.plan else {
        return Ok(Reply::invalid(format!("Build #{build} has no plan.")));
    };
    let named: Vec<_> = plan.tasks.iter().filter(|t| t.is_named(name)).collect();
    if named.is_empty() {
        return Ok(Reply::invalid(format!(
            "Build #{build} has no task or step `{name}`."
        )));
    }
    if by_hand && !named.iter().all(|t| t.manual) {
        return Ok(Reply::invalid(format!(
            "`{name}` of build #{build} is not run by hand; `retry {build} {name}` runs it again."
        )));
    }
    let held = plan.held();
    let waits = named
        .iter()
        .any(|t| !t.manual && held.contains(t.name.as_str()));
    if waits {
        return Ok(Reply::invalid(format!(
            "`{name}` of build #{build} waits for a step run by hand: `run {build} <step>` runs \
             that step and it."
        )));
    }
    let id = ingress::accept_command(
        app,
        actor.channel,
        NewBuild {
            reuse: Some(build),
            rerun: Some(name.to_owned()),
            note: Some(format!("{what} of `{name}` of #{build}")),
            ..record.asked()
        },
    )
    .await?;
    Ok(Reply::started(
        id,
        format!(
            "Build #{id} runs `{name}` of build #{build} and what needs it ({} {}), for {}.",
            record.build.repo, record.build.branch, actor.name
        ),
    ))
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
    Reply::started(
        id,
        format!(
            "Build #{id} runs {what} again ({} {}), for {by}.",
            build.repo, build.branch
        ),
    )
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

//! Planning: a requested build's `.kiln.yml` is read at its commit, planned into tasks, and
//! the tasks that need nothing are published to their platforms' queues.
//!
//! A spec that cannot be used ends the build as failed with the reason, line and column; a
//! repository that cannot be fetched ends it as errored. Neither is an error of the bot's.

use std::collections::BTreeSet;

use kiln_shared::build::{BuildId, BuildStatus, TaskStatus};
use kiln_shared::command::Target;
use kiln_shared::ident::CommitId;
use kiln_shared::plan::Plan;
use kiln_shared::spec::{SPEC_FILE, Trigger};
use kiln_shared::trigger::TriggerKind;
use kiln_shared::wire::BuildRequested;

use crate::app::App;
use crate::store::{BuildRecord, TaskRecord};
use crate::{lifecycle, resources, supersede};

/// Plans a requested build and starts it. Idempotent: a redelivered request finds the plan
/// stored and publishes only jobs still queued, which workers take at most once.
pub async fn handle_build_requested(app: &App, request: &BuildRequested) -> anyhow::Result<()> {
    let began = std::time::Instant::now();
    let id = request.build.id;
    // The commit's spec is read while the record is: the request says all it takes.
    let (record, read) = tokio::join!(app.store.build(id), read_plan(app, request));
    let Some(record) = record? else {
        tracing::warn!(build_id = %id, "build requested but not recorded; dropped");
        return Ok(());
    };
    if record.status.is_final() {
        return Ok(());
    }
    let first = record.plan.is_none();
    let plan = match record.plan.clone() {
        Some(plan) => plan,
        None => match read {
            Ok(plan) => std::sync::Arc::new(plan),
            Err((status, reason)) => return end_unrun(app, &record, status, reason).await,
        },
    };
    let (status, mut tasks) = app.store.store_plan(id, &plan).await?;
    // Its jobs are made from the record, plan included (a merge result's commit).
    let record = BuildRecord {
        plan: Some(plan.clone()),
        ..record
    };
    if status.is_some_and(BuildStatus::is_final)
        && let Some(now) = app.store.build(id).await?
    {
        // Cancelled while being planned: what was just stored is cancelled too.
        lifecycle::cancel_tasks(app, &now).await?;
        return Ok(());
    }
    if let Some(from) = record.reuse {
        if reuse_passed(app, &record, &plan, from).await? {
            return Ok(());
        }
        tasks = app.store.tasks(id, &plan).await?;
    }
    let queued = plan
        .tasks
        .iter()
        .zip(&tasks)
        .filter(|(_, stored)| stored.status == TaskStatus::Queued)
        .map(|(task, stored)| (task, stored.attempt));
    resources::dispatch_all(app, &record, queued).await?;
    if first {
        app.metrics
            .planning_seconds
            .observe(began.elapsed().as_secs_f64());
        if let Err(error) = supersede::cancel_older(app, &record).await {
            tracing::warn!(build_id = %id, error = format!("{error:#}"),
                "cannot cancel the builds this one supersedes");
        }
    }
    if plan.held().len() == plan.tasks.len() {
        // Every task is run by hand: there is nothing to wait for.
        let record = app.store.build(id).await?.unwrap_or(record);
        lifecycle::finish_build(app, &record).await?;
    }
    tracing::info!(build_id = %id, tasks = plan.tasks.len(), "build planned");
    Ok(())
}

/// Takes the tasks that passed in build `from` (the same commit) as passed in this one, and
/// accounts for them in the graph as if they had just passed, so only the others run; the
/// tasks all of whose needs were taken are queued. Returns true if nothing is left to run
/// and the build has ended. Idempotent, as planning must be.
async fn reuse_passed(
    app: &App,
    record: &BuildRecord,
    plan: &Plan,
    from: BuildId,
) -> anyhow::Result<bool> {
    let id = record.build.id;
    let names: Vec<&str> = plan.tasks.iter().map(|t| t.name.as_str()).collect();
    let earlier = app.store.task_records(from, &names).await?;
    // What the build was asked to run again runs, with what needs it, though it passed.
    let mut again = BTreeSet::new();
    for task in plan.tasks.iter().filter(|t| {
        record
            .rerun
            .as_ref()
            .is_some_and(|n| *n == t.name || *n == t.step)
    }) {
        again.insert(task.name.as_str());
        again.extend(plan.downstream_of(&task.name));
    }
    let taken =
        |t: &&TaskRecord| t.status == TaskStatus::Passed && !again.contains(t.name.as_str());
    let passed: Vec<&str> = earlier
        .iter()
        .filter(taken)
        .map(|t| t.name.as_str())
        .collect();
    let mut remaining = (plan.tasks.len() - plan.held().len()) as i64;
    for task in earlier.iter().filter(taken) {
        app.store.reuse_task(id, from, task).await?;
        let dependents: Vec<&str> = plan
            .dependents(&task.name)
            .map(|t| t.name.as_str())
            .collect();
        remaining = app
            .store
            .settle(id, &task.name, true, &dependents)
            .await?
            .remaining;
    }
    for task in &plan.tasks {
        if !passed.contains(&task.name.as_str())
            && !task.needs.is_empty()
            && task
                .needs
                .iter()
                .all(|need| passed.contains(&need.as_str()))
        {
            app.store
                .transition_task(id, &task.name, TaskStatus::Queued, &[])
                .await?;
        }
    }
    tracing::info!(build_id = %id, %from, reused = passed.len(), "passed tasks taken from an earlier build");
    if remaining <= 0 {
        let record = app.store.build(id).await?.unwrap_or_else(|| record.clone());
        lifecycle::finish_build(app, &record).await?;
        return Ok(true);
    }
    Ok(false)
}

/// For a request of a repository that builds merge results: the commit its target branch is
/// at now, which the workers merge the head with. Its `.kiln.yml` is the head's.
async fn merged_with(
    app: &App,
    request: &BuildRequested,
) -> Result<Option<CommitId>, (BuildStatus, String)> {
    let merges = app
        .config
        .repository(&request.build.repo)
        .is_some_and(|r| r.build_merge_result);
    let Some(about) = request.request.as_ref().filter(|_| merges) else {
        return Ok(None);
    };
    let target = Target::Branch(about.target_branch.clone());
    let found = app
        .mirrors
        .resolve(&request.clone_url, &target)
        .await
        .map_err(|e| {
            (
                BuildStatus::Errored,
                format!("cannot fetch the repository: {e}"),
            )
        })?;
    match found {
        Some(head) => Ok(Some(head.commit)),
        None => Err((
            BuildStatus::Failed,
            format!(
                "the request's target branch `{}` is gone: there is nothing to merge with",
                about.target_branch
            ),
        )),
    }
}

/// Reads and plans `.kiln.yml` at the build's commit; on failure, the status the build ends
/// with and why.
async fn read_plan(app: &App, request: &BuildRequested) -> Result<Plan, (BuildStatus, String)> {
    let commit = &request.build.commit;
    let bytes = app
        .mirrors
        .read_file(&request.clone_url, commit, SPEC_FILE)
        .await
        .map_err(|e| {
            (
                BuildStatus::Errored,
                format!("cannot fetch the repository: {e}"),
            )
        })?
        .ok_or_else(|| {
            (
                BuildStatus::Failed,
                format!("commit {commit} has no {SPEC_FILE} at its root"),
            )
        })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        (
            BuildStatus::Failed,
            format!("{SPEC_FILE} is not UTF-8 text"),
        )
    })?;
    let trigger = Trigger {
        branch: &request.build.branch,
        kind: request.kind,
        changed_paths: request.changed_paths.as_deref(),
        vars: &request.vars,
    };
    let mut plan = app
        .specs
        .parse(text)
        .and_then(|spec| Plan::from_spec(&spec, &trigger))
        .map_err(|e| (BuildStatus::Failed, e.to_string()))?;
    if let Some(task) = plan.tasks.iter().find(|t| !app.broker.serves(t.platform)) {
        return Err((
            BuildStatus::Failed,
            format!(
                "step `{}` runs on {}, which this Kiln does not serve (see kiln-bot --platforms)",
                task.step, task.platform
            ),
        ));
    }
    plan.merged_with = merged_with(app, request).await?;
    // A step run by hand runs in the build that was asked to run it, and is taken as it
    // passed in the build this one takes from.
    if let Some(name) = &request.rerun {
        plan.run_by_hand(name);
    }
    if let Some(from) = request.reuse {
        let manual: Vec<&str> = plan.held().into_iter().collect();
        let earlier = app.store.task_records(from, &manual).await.map_err(|e| {
            (
                BuildStatus::Errored,
                format!("cannot read build #{from}: {e}"),
            )
        })?;
        // Held there or not, what ran there is taken (it passed) or runs again (it did not).
        let ran: Vec<String> = earlier
            .into_iter()
            .filter(|t| t.status != TaskStatus::Manual)
            .map(|t| t.name)
            .collect();
        for name in &ran {
            plan.run_by_hand(name);
        }
    }
    // A fork's code never sees the repository's secrets: its steps run without them.
    if request.request.as_ref().is_some_and(|r| r.from_fork) {
        // Nor does it deploy an environment: a fork's branch is not the repository's, and
        // nothing would stop it.
        for task in &mut plan.tasks {
            task.secrets.clear();
            task.environment = None;
        }
    }
    // Policy comes from Kiln's configuration, never from the commit. A tag's build is
    // matched as `tags/<name>`: a tag named like a branch gets none of its secrets; and a
    // branch named like that (`tags/v1`) as `refs/heads/tags/v1`, which no tag's pattern
    // meant for.
    let branch = &request.build.branch;
    let policy_ref = match request.kind {
        TriggerKind::Tag => format!("tags/{branch}"),
        _ if branch.starts_with("tags/") => format!("refs/heads/{branch}"),
        _ => branch.to_string(),
    };
    let refused = match app.config.repository(&request.build.repo) {
        Some(repository) => repository
            .refuse_secrets(&plan, &policy_ref)
            .or_else(|| repository.refuse_capabilities(&plan)),
        None => plan
            .tasks
            .iter()
            .find(|t| !t.secrets.is_empty())
            .map(|t| format!("step `{}` uses secrets; this repository has none", t.step))
            .or_else(|| {
                crate::config::refuse_capabilities(&plan, &[], request.build.repo.as_str())
            }),
    };
    if let Some(reason) = refused {
        return Err((BuildStatus::Failed, reason));
    }
    let unknown_pool = plan.tasks.iter().find_map(|t| {
        let pool = t.resources.iter().find(|name| {
            app.config
                .pool(name)
                .is_none_or(|p| p.kind != crate::config::PoolKind::Static)
        })?;
        Some((t, pool))
    });
    if let Some((task, pool)) = unknown_pool {
        return Err((
            BuildStatus::Failed,
            format!(
                "step `{}` needs a slot of pool `{pool}`, which is not a static pool in Kiln's \
                 configuration",
                task.step
            ),
        ));
    }
    if plan.tasks.is_empty() {
        return Err((
            BuildStatus::Passed,
            format!("no step of {SPEC_FILE} applies to this build (see their `when`)"),
        ));
    }
    Ok(plan)
}

/// Ends a build that never ran a task, and tells everyone why.
async fn end_unrun(
    app: &App,
    record: &BuildRecord,
    status: BuildStatus,
    reason: String,
) -> anyhow::Result<()> {
    tracing::info!(build_id = %record.build.id, %status, %reason, "build ends before running");
    lifecycle::end_build(app, record, status, Vec::new(), Some(reason)).await
}

//! The scheduler: as tasks start and finish, it moves the build along its task graph.
//!
//! A task that errored (or failed with an exit code its step retries on) is queued again as
//! its next attempt while it has retries left. Otherwise, when a task passes (or may fail),
//! the tasks whose needs are now all met are queued; when it does not, everything downstream
//! of it is skipped, later stages included. When every task is accounted for, the build gets
//! its final status and a `build.<status>` event. Each step is a compare-and-set in Redis, so
//! a duplicate or replayed event changes nothing.
//!
//! A cancelled build ends at once: its unfinished tasks are marked cancelled, queued jobs are
//! dropped by the worker that takes them, and a worker running one sees the mark and stops it.

use kiln_shared::build::{BuildId, BuildStatus, TaskOutcome, TaskStatus};
use kiln_shared::plan::{Plan, PlannedTask};
use kiln_shared::record;
use kiln_shared::routing::JOB_DELIVERY_LIMIT;
use kiln_shared::wire::{
    Artifact, BuildFinished, Event, ImageUse, JobRequested, TaskFinished, TaskStarted, TaskSummary,
};

use crate::app::App;
use crate::store::{BuildRecord, now_ms};
use crate::{resources, review};

/// A task started: its build is running.
pub async fn handle_task_started(app: &App, event: &TaskStarted) -> anyhow::Result<()> {
    app.store
        .transition_build(event.build.id, BuildStatus::Running, &[])
        .await?;
    // Its slots are held from now for as long as it may run, however long it waited (only
    // an installation with pools reads the plan to see whether it holds any).
    if !app.config.pools.is_empty()
        && let Some(record) = app.store.build(event.build.id).await?
        && let Some(task) = record.plan.as_ref().and_then(|p| p.task(&event.task))
        && !task.resources.is_empty()
    {
        resources::started(app, &record, task, event.attempt).await?;
    }
    Ok(())
}

/// A task finished: queue what it unblocked, skip what it doomed, end the build if done.
pub async fn handle_task_finished(app: &App, event: &TaskFinished) -> anyhow::Result<()> {
    let id = event.build.id;
    let Some(record) = app.store.build(id).await? else {
        tracing::warn!(build = %id, "task finished for an unknown build; dropped");
        return Ok(());
    };
    let Some(plan) = record.plan.clone() else {
        tracing::warn!(build = %id, "task finished for an unplanned build; dropped");
        return Ok(());
    };
    let Some(task) = plan.task(&event.task) else {
        tracing::warn!(build = %id, task = %event.task, "finished task is not in the plan; dropped");
        return Ok(());
    };
    // Its slots go back whatever happens next, a cancelled build's too.
    if !task.resources.is_empty() {
        resources::release(app, &record, task, event.attempt).await?;
    }
    if record.status.is_final() {
        // Ended meanwhile (cancelled): nothing more may start. (The one to finish it
        // announced it.)
        return Ok(());
    }
    if task.retries(&event.outcome, event.attempt) {
        return retry(app, &record, task, event.attempt).await;
    }
    if event.outcome == TaskOutcome::Passed
        && let (Some(environment), Some(_)) = (&task.environment, &task.on_stop)
    {
        review::deployed(app, &record, environment).await?;
    }
    let settled = if task.unblocks(&event.outcome) {
        let dependents: Vec<&PlannedTask> = plan.dependents(&event.task).collect();
        let names: Vec<&str> = dependents.iter().map(|t| t.name.as_str()).collect();
        let settled = app.store.settle(id, &event.task, true, &names).await?;
        for name in &settled.ready {
            app.store
                .transition_task(id, name, TaskStatus::Queued, &[])
                .await?;
        }
        // Publish every dependent that is queued, not only those queued just now: if an
        // earlier delivery of this event queued one and died before publishing it, this
        // redelivery publishes it. A worker takes a job at most once.
        let stored = app.store.task_records(id, &names).await?;
        let queued = dependents
            .iter()
            .zip(&stored)
            .filter(|(_, stored)| stored.status == TaskStatus::Queued)
            .map(|(planned, stored)| (*planned, stored.attempt));
        resources::dispatch_all(app, &record, queued).await?;
        settled
    } else {
        let downstream: Vec<&str> = plan.downstream_of(&event.task).into_iter().collect();
        let settled = app
            .store
            .settle(id, &event.task, false, &downstream)
            .await?;
        for name in &downstream {
            app.store
                .transition_task(id, name, TaskStatus::Skipped, &[])
                .await?;
        }
        settled
    };
    if settled.remaining <= 0 {
        finish_build(app, &record).await?;
    }
    Ok(())
}

/// A job RabbitMQ dead-lettered: it was delivered [`JOB_DELIVERY_LIMIT`] times and never
/// finished (its workers kept dying or could not reach Redis). Its attempt ends errored and
/// the build moves on as after any errored task: a retry if it has one left.
pub async fn handle_dead_job(app: &App, job: &JobRequested) -> anyhow::Result<()> {
    let reason = format!(
        "no worker finished it in {JOB_DELIVERY_LIMIT} deliveries; it is kept in the \
         dead-letter queue"
    );
    let outcome = TaskOutcome::Errored { reason };
    let fields = record::task::ended(&outcome, now_ms());
    let errored = app
        .store
        .transition_attempt(
            job.build.id,
            &job.task,
            job.attempt,
            TaskStatus::Errored,
            &fields,
        )
        .await?;
    if !errored {
        // It finished after all, or a later attempt exists, or the build was cancelled. If
        // this attempt finished, its end may never have been announced: its worker lost the
        // broker before it could, and RabbitMQ's copies of the job ran out meanwhile.
        // Announcing it again changes nothing if it was.
        let task = app.store.task(job.build.id, &job.task).await?;
        if let Some(task) = task.filter(|t| t.attempt == job.attempt)
            && let Some(outcome) = task.ended
        {
            tracing::info!(%outcome, "dead-lettered job's task had finished; its end is announced again");
            announce_end(app, job, outcome, task.artifacts, task.images).await?;
        } else {
            tracing::info!("dead-lettered job's task has moved on; nothing to do");
        }
        return Ok(());
    }
    tracing::warn!(%outcome, "dead-lettered job errored");
    announce_end(app, job, outcome, Vec::new(), Vec::new()).await
}

/// Announces how `job`'s attempt ended like a worker's result, so the scheduler and
/// subscribers see the same thing.
async fn announce_end(
    app: &App,
    job: &JobRequested,
    outcome: TaskOutcome,
    artifacts: Vec<Artifact>,
    images: Vec<ImageUse>,
) -> anyhow::Result<()> {
    app.broker
        .publish_event(&Event::TaskFinished(TaskFinished {
            build: job.build.clone(),
            task: job.task.clone(),
            attempt: job.attempt,
            outcome,
            artifacts,
            images,
        }))
        .await?;
    Ok(())
}

/// Queues the next attempt of a task whose attempt `attempt` earned a retry.
async fn retry(
    app: &App,
    record: &BuildRecord,
    task: &PlannedTask,
    attempt: u32,
) -> anyhow::Result<()> {
    let id = record.build.id;
    let next = attempt + 1;
    if app.store.retry_task(id, &task.name, attempt).await? {
        tracing::info!(build = %id, task = %task.name, attempt = next, "task retried");
    }
    // Publish when the next attempt is queued, not only when it was queued just now: an
    // earlier delivery of this event may have died between the two.
    let stored = app.store.task(id, &task.name).await?;
    if stored.is_some_and(|t| t.status == TaskStatus::Queued && t.attempt == next) {
        resources::dispatch(app, record, task, next).await?;
    }
    Ok(())
}

/// Gives a build whose tasks are all accounted for its final status and announces it.
pub async fn finish_build(app: &App, record: &BuildRecord) -> anyhow::Result<()> {
    let id = record.build.id;
    let Some(plan) = record.plan.as_ref().filter(|_| !record.status.is_final()) else {
        return Ok(());
    };
    let summaries = summaries(app, id, plan).await?;
    let status =
        BuildStatus::from_finished_tasks(summaries.iter().map(TaskSummary::counted_status));
    end_build(app, record, status, summaries, None).await?;
    tracing::info!(build = %id, %status, "build finished");
    Ok(())
}

/// Every task of a build as it stands.
async fn summaries(app: &App, id: BuildId, plan: &Plan) -> anyhow::Result<Vec<TaskSummary>> {
    let tasks = app.store.tasks(id, plan).await?;
    Ok(plan
        .tasks
        .iter()
        .zip(&tasks)
        .map(|(planned, t)| TaskSummary {
            name: t.name.clone(),
            status: t.status,
            exit_code: t.exit_code,
            allow_failure: planned.allow_failure,
        })
        .collect())
}

/// What a request to cancel a build found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancel {
    /// The build is cancelled now, and these tasks with it.
    Cancelled {
        tasks: Vec<String>,
    },
    /// It had ended already, with this status.
    AlreadyEnded(BuildStatus),
    NoSuchBuild,
}

/// Cancels build `id` on behalf of `by` and announces it (`build.cancelled`).
///
/// The build's compare-and-set decides: of a cancel and the build's natural end, the first
/// wins, and a second cancel finds the build ended.
pub async fn cancel_build(app: &App, id: BuildId, by: &str) -> anyhow::Result<Cancel> {
    let Some(record) = app.store.build(id).await? else {
        return Ok(Cancel::NoSuchBuild);
    };
    let reason = format!("cancelled by {by}");
    let fields = record::build::ended(now_ms(), Some(reason.clone()));
    // The build's cards are to show the cancel; noted first, so that a bot stopped half-way
    // brings them up to date when it starts again.
    app.store.cards_due(id).await?;
    if !app
        .store
        .transition_build(id, BuildStatus::Cancelled, &fields)
        .await?
    {
        let now = app.store.build(id).await?.unwrap_or(record);
        if now.status == BuildStatus::Cancelled {
            // A cancel that stopped half-way (Redis or RabbitMQ gone) is finished by the
            // next: marking tasks cancelled again changes nothing.
            cancel_tasks(app, &now).await?;
        }
        app.cards.refresh(app, id);
        return Ok(Cancel::AlreadyEnded(now.status));
    }
    // Read again: the plan may have been stored since.
    let record = app.store.build(id).await?.unwrap_or(record);
    let tasks = cancel_tasks(app, &record).await?;
    let summaries = match &record.plan {
        Some(plan) => summaries(app, id, plan).await?,
        None => Vec::new(),
    };
    app.broker
        .publish_event(&Event::BuildFinished(BuildFinished {
            build: record.build.clone(),
            status: BuildStatus::Cancelled,
            author: record.author.clone(),
            subject: record.subject.clone(),
            tasks: summaries,
            error: Some(reason),
        }))
        .await?;
    app.cards.refresh(app, id);
    tracing::info!(build = %id, by, cancelled = tasks.len(), "build cancelled");
    Ok(Cancel::Cancelled { tasks })
}

/// Marks every task of a build that has not ended as cancelled; returns their names.
pub async fn cancel_tasks(app: &App, record: &BuildRecord) -> anyhow::Result<Vec<String>> {
    let Some(plan) = &record.plan else {
        return Ok(Vec::new());
    };
    let mut cancelled = Vec::new();
    for task in app.store.tasks(record.build.id, plan).await? {
        if !task.status.is_final()
            && app
                .store
                .transition_task(record.build.id, &task.name, TaskStatus::Cancelled, &[])
                .await?
        {
            // A cancelled task may never be heard of again: its slots go back now.
            if let Some(planned) = plan.task(&task.name).filter(|p| !p.resources.is_empty()) {
                resources::release(app, record, planned, task.attempt).await?;
            }
            cancelled.push(task.name);
        }
    }
    Ok(cancelled)
}

/// Announces a build's end (`build.<status>`), then stores its final status and `error`.
///
/// The event goes first: if the bot dies in between, the redelivered event that led here
/// announces it again (at least once) instead of never; the notifier posts once regardless.
pub async fn end_build(
    app: &App,
    record: &BuildRecord,
    status: BuildStatus,
    tasks: Vec<TaskSummary>,
    error: Option<String>,
) -> anyhow::Result<()> {
    app.broker
        .publish_event(&Event::BuildFinished(BuildFinished {
            build: record.build.clone(),
            status,
            author: record.author.clone(),
            subject: record.subject.clone(),
            tasks,
            error: error.clone(),
        }))
        .await?;
    let fields = record::build::ended(now_ms(), error);
    app.store
        .transition_build(record.build.id, status, &fields)
        .await?;
    Ok(())
}

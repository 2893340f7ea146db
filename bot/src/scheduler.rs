//! The scheduler: as tasks start and finish, it moves the build along its task graph.
//!
//! A task that errored (or failed with an exit code its step retries on) is queued again as
//! its next attempt while it has retries left. Otherwise, when a task passes (or may fail),
//! the tasks whose needs are now all met are queued; when it does not, everything downstream
//! of it is skipped, later stages included. When every task is accounted for, the build gets
//! its final status and a `build.<status>` event. Each step is a compare-and-set in Redis, so
//! a duplicate or replayed event changes nothing.
//! How a build ends, by its tasks or by a cancel, is [`crate::lifecycle`]'s.

use kiln_shared::build::{BuildId, BuildStatus, TaskOutcome, TaskStatus};
use kiln_shared::plan::PlannedTask;
use kiln_shared::record;
use kiln_shared::routing::JOB_DELIVERY_LIMIT;
use kiln_shared::wire::{
    Artifact, BuildRef, Event, ImageUse, JobRequested, TaskFinished, TaskStarted,
};

use crate::app::App;
use crate::store::{BuildRecord, StoreError, TaskRecord, now_ms};
use crate::{lifecycle, resources, review};

/// A task started: its build is running.
pub async fn handle_task_started(app: &App, event: &TaskStarted) -> anyhow::Result<()> {
    let stored = stored_task(app, event.build.id, &event.task).await?;
    if !stored.is_some_and(|t| {
        t.attempt == event.attempt && t.worker.as_deref() == Some(event.worker.as_str())
    }) {
        tracing::warn!(
            build_id = %event.build.id, task = %event.task, attempt = event.attempt,
            worker = %event.worker, "a task's start its record does not hold; dropped"
        );
        return Ok(());
    }
    app.store
        .transition_build(event.build.id, BuildStatus::Running, &[])
        .await?;
    // Its slots (a pool's, a concurrency group's) are held from now for as long as it may
    // run, however long it waited.
    if let Some(record) = app.store.build(event.build.id).await?
        && let Some(task) = record.plan.as_ref().and_then(|p| p.task(&event.task))
        && task.holds_slots()
    {
        resources::started(app, &record, task, event.attempt).await?;
    }
    Ok(())
}

/// A task finished: queue what it unblocked, skip what it doomed, end the build if done.
pub async fn handle_task_finished(app: &App, event: &TaskFinished) -> anyhow::Result<()> {
    let id = event.build.id;
    let Some(record) = app.store.build(id).await? else {
        tracing::warn!(build_id = %id, "task finished for an unknown build; dropped");
        return Ok(());
    };
    let Some(plan) = record.plan.clone() else {
        tracing::warn!(build_id = %id, "task finished for an unplanned build; dropped");
        return Ok(());
    };
    let Some(task) = plan.task(&event.task) else {
        tracing::warn!(build_id = %id, task = %event.task, "finished task is not in the plan; dropped");
        return Ok(());
    };
    if !holds_end(app, event, task).await? {
        tracing::warn!(
            build_id = %id, task = %event.task, attempt = event.attempt,
            outcome = %event.outcome, "a task's end its record does not hold; dropped"
        );
        return Ok(());
    }
    if let Some(ran) = event.ran_ms {
        let took = std::time::Duration::from_millis(ran);
        app.metrics
            .task_ended(event.outcome.status().as_str(), took);
    }
    // Its slots go back whatever happens next, a cancelled build's too.
    if task.holds_slots() {
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
        lifecycle::finish_build(app, &record).await?;
    }
    Ok(())
}

/// Whether the task's record holds the end `event` announces: its attempt ended so, or (a
/// redelivery) a later attempt exists and the end is one the scheduler retries after, so
/// that the retry's job is published if an earlier delivery died before publishing it.
///
/// Events are checked against records because a worker's credentials may publish any
/// task's event, but can name only its own task's record (`kiln_shared::keys::TaskNames`):
/// a forged end moves nothing.
async fn holds_end(
    app: &App,
    event: &TaskFinished,
    task: &PlannedTask,
) -> Result<bool, redis::RedisError> {
    let stored = stored_task(app, event.build.id, &event.task).await?;
    Ok(stored.is_some_and(|t| {
        (t.attempt == event.attempt && t.ended.as_ref() == Some(&event.outcome))
            || (t.attempt > event.attempt && task.retries(&event.outcome, event.attempt))
    }))
}

/// The task's record to check an event against; none if it does not decode (the store has
/// said why), since an event that cannot be checked is not acted on, and trying it again
/// would find the same record.
async fn stored_task(
    app: &App,
    id: BuildId,
    task: &str,
) -> Result<Option<TaskRecord>, redis::RedisError> {
    match app.store.task(id, task).await {
        Ok(stored) => Ok(stored),
        Err(StoreError::Unreadable { .. }) => Ok(None),
        Err(StoreError::Redis(error)) => Err(error),
    }
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
            let ended = Ended {
                outcome,
                artifacts: task.artifacts,
                images: task.images,
            };
            announce_end(app, &job.build, &job.task, job.attempt, ended).await?;
        } else {
            tracing::info!("dead-lettered job's task has moved on; nothing to do");
        }
        return Ok(());
    }
    tracing::warn!(%outcome, "dead-lettered job errored");
    announce_end(
        app,
        &job.build,
        &job.task,
        job.attempt,
        Ended::bare(outcome),
    )
    .await
}

/// How an attempt ended, as the bot announces it for a worker that could not.
#[derive(Debug)]
pub struct Ended {
    pub outcome: TaskOutcome,
    pub artifacts: Vec<Artifact>,
    pub images: Vec<ImageUse>,
}

impl Ended {
    /// An end that left nothing behind.
    pub fn bare(outcome: TaskOutcome) -> Self {
        Self {
            outcome,
            artifacts: Vec::new(),
            images: Vec::new(),
        }
    }
}

/// Announces how attempt `attempt` of `build`'s `task` ended like a worker's result, so the
/// scheduler and subscribers see the same thing.
pub async fn announce_end(
    app: &App,
    build: &BuildRef,
    task: &str,
    attempt: u32,
    ended: Ended,
) -> anyhow::Result<()> {
    app.broker
        .publish_event(&Event::TaskFinished(TaskFinished {
            build: build.clone(),
            task: task.to_owned(),
            attempt,
            outcome: ended.outcome,
            artifacts: ended.artifacts,
            images: ended.images,
            ran_ms: None,
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
        tracing::info!(build_id = %id, task = %task.name, attempt = next, "task retried");
    }
    // Publish when the next attempt is queued, not only when it was queued just now: an
    // earlier delivery of this event may have died between the two.
    let stored = app.store.task(id, &task.name).await?;
    if stored.is_some_and(|t| t.status == TaskStatus::Queued && t.attempt == next) {
        resources::dispatch(app, record, task, next).await?;
    }
    Ok(())
}

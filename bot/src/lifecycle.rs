//! How a build ends: when its tasks are all accounted for, when it is cancelled, or when it
//! cannot run at all. Every end is announced (`build.<status>`) and stored by one
//! compare-and-set, so of two ways to end a build the first wins.
//!
//! A cancelled build ends at once: its unfinished tasks are marked cancelled, queued jobs are
//! dropped by the worker that takes them, and a worker running one sees the mark and stops it.

use kiln_shared::build::{BuildId, BuildStatus, TaskStatus};
use kiln_shared::plan::Plan;
use kiln_shared::record;
use kiln_shared::wire::{BuildFinished, Event, TaskSummary};

use crate::app::App;
use crate::logs::keeper::ARCHIVE_AFTER;
use crate::notify::cards;
use crate::resources;
use crate::store::{BuildRecord, now_ms};

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
    tracing::info!(build_id = %id, %status, "build finished");
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
    // brings them up to date when it starts again. A build that has ended is noted for
    // retention already: noting it again would put its expiry off.
    app.store.cards_due(id).await?;
    if !record.status.is_final() {
        app.store.retention_due(id, ARCHIVE_AFTER).await?;
    }
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
        cards::refresh(app, id);
        return Ok(Cancel::AlreadyEnded(now.status));
    }
    // Read again: the plan may have been stored since.
    let record = app.store.build(id).await?.unwrap_or(record);
    app.store.forget_plan(&record);
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
    cards::refresh(app, id);
    tracing::info!(build_id = %id, by, cancelled = tasks.len(), "build cancelled");
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
            if let Some(planned) = plan.task(&task.name).filter(|p| p.holds_slots()) {
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
    let ended_ms = now_ms();
    let fields = record::build::ended(ended_ms, error);
    // Noted first: a bot stopped before the end is stored leaves it noted, not forgotten.
    app.store
        .retention_due(record.build.id, ARCHIVE_AFTER)
        .await?;
    if app
        .store
        .transition_build(record.build.id, status, &fields)
        .await?
    {
        let took = ended_ms.checked_sub(record.created_ms);
        let took = took.map(std::time::Duration::from_millis);
        app.metrics.build_ended(status.as_str(), took);
    }
    app.store.forget_plan(record);
    Ok(())
}

//! Resources: a task whose step names pools (`resources: [device-lab]`) holds a slot of each
//! while it runs. Its job is published only once it has them all; until then it waits in
//! line, and is tried again whenever a slot of the pool it waits for may have come free (a
//! task ended, and every pass of the leases' reaper, which also catches slots freed by
//! `env release` or an expiry).
//!
//! A step's concurrency group (`concurrency: deploy-production`) is a pool of one slot of its
//! repository's, made here and in no configuration: its tasks of every build take turns.
//!
//! A task's slots are leases like people's, held by `build #N task T`, lasting its timeout
//! and a margin, so a lost task cannot hold them for ever.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};

use kiln_shared::build::TaskStatus;
use kiln_shared::lease::{LeaseId, resource_variable};
use kiln_shared::plan::{PlannedTask, group_pool};
use kiln_shared::wire::JobRequested;

use crate::app::App;
use crate::config::{Pool, PoolKind};
use crate::store::{BuildRecord, LeaseRecord, Waiting, now_ms};

/// How long past its timeout a task's slot is held: time to check out, build its image, and
/// for its end to be heard.
const SLOT_MARGIN: Duration = Duration::from_secs(30 * 60);

/// Jobs [`dispatch_all`] has published and not yet seen confirmed, at most.
const PUBLISHES_IN_FLIGHT: usize = 64;

/// Dispatches each of `tasks` (a task and its attempt). Those that need no pool go out
/// together, their confirms in flight at once; those that do, one after the other, so two
/// never each take part of what the other needs.
pub async fn dispatch_all<'a>(
    app: &App,
    record: &BuildRecord,
    tasks: impl IntoIterator<Item = (&'a PlannedTask, u32)>,
) -> anyhow::Result<()> {
    let (pooled, free): (Vec<_>, Vec<_>) =
        tasks.into_iter().partition(|(task, _)| task.holds_slots());
    let jobs: Vec<_> = free
        .into_iter()
        .map(|(task, attempt)| dispatch(app, record, task, attempt))
        .collect();
    futures_util::stream::iter(jobs)
        .buffered(PUBLISHES_IN_FLIGHT)
        .try_collect::<()>()
        .await?;
    for (task, attempt) in pooled {
        dispatch(app, record, task, attempt).await?;
    }
    Ok(())
}

/// Publishes the job of `task`'s attempt `attempt`, once it holds a slot of each of its
/// resources; otherwise puts it in line for the first pool that has none free.
pub async fn dispatch(
    app: &App,
    record: &BuildRecord,
    task: &PlannedTask,
    attempt: u32,
) -> anyhow::Result<()> {
    let mut job = job(app, record, task, attempt).await?;
    let attempt = Waiting::of(record, task, attempt);
    let mut held = Vec::new();
    for name in task.pools(&record.build.repo) {
        let Some(pool) = pool(app, record, task, &name) else {
            // The planner refuses such a plan; a pool gone from the configuration since
            // then cannot be waited for.
            anyhow::bail!("pool `{name}` of task `{}` is not a static pool", task.name);
        };
        match slot(app, &pool, &attempt, task.timeout_secs).await? {
            Some(lease) => held.push((pool, lease)),
            None => {
                // All or none: what was taken goes back, so two tasks never hold half each.
                for (pool, lease) in &held {
                    app.store.end_lease(lease, None).await?;
                    app.store.drop_task_lease(&attempt, &pool.name).await?;
                }
                app.store.wait_for_slot(&name, &attempt).await?;
                tracing::info!(build_id = %record.build.id, task = %task.name, pool = %name,
                    "task waits for a slot");
                return Ok(());
            }
        }
    }
    if !held.is_empty() && !still_queued(app, &attempt).await? {
        // Cancelled while its slots were being taken (a cancel and a wake at once): the
        // cancel may have looked for them before they were held, so they go back here.
        for (pool, lease) in &held {
            app.store.end_lease(lease, None).await?;
            app.store.drop_task_lease(&attempt, &pool.name).await?;
        }
        return Ok(());
    }
    // A group's slot is no host: only pools' slots are named to the task.
    for (pool, lease) in held
        .iter()
        .filter(|(p, _)| task.resources.contains(&p.name))
    {
        let host = pool
            .hosts
            .get(lease.slot as usize)
            .cloned()
            .unwrap_or_default();
        job.env.insert(resource_variable(&pool.name), host);
    }
    app.broker.publish_job(&job).await?;
    Ok(())
}

/// The pool named `name` of `task`'s: a static pool of the configuration, or the one slot of
/// its concurrency group.
fn pool(app: &App, record: &BuildRecord, task: &PlannedTask, name: &str) -> Option<Pool> {
    let group = task.concurrency.as_ref();
    if group.is_some_and(|g| group_pool(&record.build.repo, g) == name) {
        return Some(Pool::one_at_a_time(name));
    }
    app.config
        .pool(name)
        .filter(|p| p.kind == PoolKind::Static)
        .cloned()
}

/// Whether `attempt` is still to run: its task queued at that attempt, its build not ended.
async fn still_queued(app: &App, attempt: &Waiting) -> anyhow::Result<bool> {
    let task = app.store.task(attempt.build, &attempt.task).await?;
    let queued =
        task.is_some_and(|t| t.status == TaskStatus::Queued && t.attempt == attempt.attempt);
    let build = app.store.build(attempt.build).await?;
    Ok(queued && build.is_some_and(|b| !b.status.is_final()))
}

/// The slot `attempt` holds in `pool`, taking one if it holds none; `None` when every slot
/// is taken.
async fn slot(
    app: &App,
    pool: &Pool,
    attempt: &Waiting,
    timeout_secs: u64,
) -> anyhow::Result<Option<LeaseRecord>> {
    let now = now_ms();
    let expires_ms = now + held_for(timeout_secs);
    let asked = LeaseRecord {
        id: LeaseId(0),
        pool: pool.name.clone(),
        slot: 0,
        holder: format!("build:{}", attempt.build),
        holder_name: format!("build #{} task {}", attempt.build, attempt.task),
        channel: None,
        branch: None,
        started_ms: now,
        expires_ms,
        remind_ms: 0,
        details: String::new(),
        container: false,
        failure: None,
    };
    // The slot this attempt holds already, if it holds one (a redelivered event, two
    // wakes at once), else a new one.
    let Some(mut lease) = app
        .store
        .take_slot(&asked, pool.capacity(), Some(attempt))
        .await?
    else {
        return Ok(None);
    };
    if lease.details.is_empty() {
        lease.details = pool
            .hosts
            .get(lease.slot as usize)
            .cloned()
            .unwrap_or_default();
        app.store.lease_details(lease.id, &lease.details).await?;
    }
    Ok(Some(lease))
}

/// Gives back the slots attempt `attempt` of `task` held, and lets the tasks waiting for
/// those pools try again.
pub async fn release(
    app: &App,
    record: &BuildRecord,
    task: &PlannedTask,
    attempt: u32,
) -> anyhow::Result<()> {
    let attempt = Waiting::of(record, task, attempt);
    let pools = task.pools(&record.build.repo);
    for pool in &pools {
        if let Some(lease) = app.store.task_lease(&attempt, pool).await? {
            app.store.end_lease(&lease, None).await?;
        }
        app.store.drop_task_lease(&attempt, pool).await?;
    }
    for pool in &pools {
        if let Err(error) = wake(app, pool).await {
            tracing::warn!(pool, error = format!("{error:#}"), "cannot hand out slots");
        }
    }
    Ok(())
}

/// Holds the slots of a task that has just started for as long as it may run from now.
pub async fn started(
    app: &App,
    record: &BuildRecord,
    task: &PlannedTask,
    attempt: u32,
) -> anyhow::Result<()> {
    let attempt = Waiting::of(record, task, attempt);
    let until = now_ms() + held_for(task.timeout_secs);
    for pool in &task.pools(&record.build.repo) {
        if let Some(lease) = app.store.task_lease(&attempt, pool).await? {
            let until = until.max(lease.expires_ms);
            app.store.extend_lease(lease.id, until, 0).await?;
            app.store.hold_task_lease(&attempt, &lease, until).await?;
        }
    }
    Ok(())
}

/// How long a task's slot is held, in milliseconds: its timeout and the margin.
fn held_for(timeout_secs: u64) -> u64 {
    let length = Duration::from_secs(timeout_secs) + SLOT_MARGIN;
    u64::try_from(length.as_millis()).unwrap_or(u64::MAX / 2)
}

/// Tries again every task waiting for a slot of `pool`; those that still find none go back
/// in line. A task no longer queued (its build cancelled, say) leaves the line.
pub async fn wake(app: &App, pool: &str) -> anyhow::Result<()> {
    // Each stays in line until it has been tried: a bot that dies meanwhile loses none.
    for waiting in app.store.waiting(pool).await? {
        match try_again(app, &waiting).await {
            Ok(()) => app.store.done_waiting(pool, &waiting).await?,
            // One that cannot be tried holds up no other; it is tried again next time.
            Err(error) => tracing::warn!(pool, build_id = %waiting.build, task = %waiting.task,
                error = format!("{error:#}"), "cannot hand a slot to a waiting task"),
        }
    }
    Ok(())
}

async fn try_again(app: &App, waiting: &Waiting) -> anyhow::Result<()> {
    let Some(record) = app.store.build(waiting.build).await? else {
        return Ok(());
    };
    let Some(task) = record.plan.as_ref().and_then(|p| p.task(&waiting.task)) else {
        return Ok(());
    };
    let queued = app
        .store
        .task(waiting.build, &waiting.task)
        .await?
        .is_some_and(|t| t.status == TaskStatus::Queued && t.attempt == waiting.attempt);
    if queued && !record.status.is_final() {
        dispatch(app, &record, task, waiting.attempt).await?;
    }
    Ok(())
}

/// The job that runs attempt `attempt` of `task`, with the artifacts of the tasks it needs
/// and the build's variables.
async fn job(
    app: &App,
    record: &BuildRecord,
    task: &PlannedTask,
    attempt: u32,
) -> Result<JobRequested, crate::store::StoreError> {
    let needs: Vec<&str> = task.needs.iter().map(String::as_str).collect();
    let inputs = app
        .store
        .task_records(record.build.id, &needs)
        .await?
        .into_iter()
        .flat_map(|t| t.artifacts)
        .collect();
    let mut job = JobRequested::for_task(
        &record.build,
        record.kind,
        &record.clone_url,
        task,
        attempt,
        inputs,
    );
    // The build's variables above the step's own `env`; Kiln's own are above both.
    job.env.extend(record.vars.clone());
    job.request.clone_from(&record.request);
    job.priority = record.priority;
    job.merge_with = record.plan.as_ref().and_then(|p| p.merged_with.clone());
    job.key_tag = app.store.keys().key_tag(record.build.id, &task.name);
    Ok(job)
}

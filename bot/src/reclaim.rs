//! Taking back the jobs of workers that went silent, as a claim that was not renewed expires.
//!
//! A worker says every 10 s that it is there, with the attempts it holds (its presence). One
//! the bot has not heard from for `[workers] reclaim_after` (frozen, cut off, its machine
//! gone, while its broker connection may still look open) loses them: each attempt still
//! running on it ends errored, by a compare-and-set on the attempt and the worker (a worker
//! that took it over meanwhile keeps it), and the end is announced like any result, so the
//! scheduler queues the next attempt if the step's retries allow. If the silent worker comes
//! back, it finds the attempt no longer its: it stops running it, and its late result
//! changes nothing.
//!
//! Silence is measured on the bot's own clock, from when it last saw a worker's presence
//! change, so workers whose clocks disagree with the bot's are judged alike; a bot that
//! starts, or could not read the presences for a while, times silence afresh. Several bots
//! may look at once: one compare-and-set wins; an end that may not have been announced (by
//! a bot that stopped in between, or by the silent worker itself) is announced again, which
//! changes nothing if it was.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use kiln_shared::build::TaskOutcome;
use kiln_shared::presence::{HeldJob, Presence};
use kiln_shared::record;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::scheduler::{self, Ended};
use crate::store::now_ms;

/// How often the workers' presences are looked at.
const LOOK_EVERY: Duration = Duration::from_secs(5);

/// What the bot knows of the workers between looks.
#[derive(Default)]
struct Watch {
    /// Per worker: the last heartbeat time it wrote, and when the bot saw it change.
    heard: HashMap<String, (u64, Instant)>,
    /// When the presences were last read.
    read_at: Option<Instant>,
    /// Attempts taken back whose end has been announced.
    announced: HashSet<(String, HeldJob)>,
}

/// Takes back silent workers' jobs until `shutdown`. A Redis or broker outage only delays it.
pub async fn watch(app: App, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut watch = Watch::default();
    let mut every = tokio::time::interval(LOOK_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = every.tick() => {}
        }
        if let Err(error) = look(&app, &mut watch).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "cannot look after the workers"
            );
        }
    }
}

async fn look(app: &App, watch: &mut Watch) -> anyhow::Result<()> {
    let workers = app.store.workers().await?;
    let now = Instant::now();
    if watch
        .read_at
        .is_none_or(|at| now.duration_since(at) > 3 * LOOK_EVERY)
    {
        // The bot could not look for a while (Redis or the broker away, or a look that took
        // long): it did not see the heartbeats of meanwhile, so silence is timed afresh.
        for heard in watch.heard.values_mut() {
            heard.1 = now;
        }
    }
    watch.read_at = Some(now);
    watch
        .heard
        .retain(|name, _| workers.iter().any(|w| &w.name == name));
    watch.announced.retain(|(name, job)| {
        workers
            .iter()
            .any(|w| &w.name == name && w.held.contains(job))
    });
    for presence in &workers {
        let heard = watch
            .heard
            .entry(presence.name.clone())
            .or_insert((presence.seen_ms, now));
        if heard.0 != presence.seen_ms {
            *heard = (presence.seen_ms, now);
        }
        let silent = now.duration_since(heard.1);
        if silent < app.config.workers.reclaim_after {
            continue;
        }
        for job in &presence.held {
            let key = (presence.name.clone(), job.clone());
            if !watch.announced.contains(&key) && take_back(app, presence, job, silent).await? {
                watch.announced.insert(key);
            }
        }
    }
    Ok(())
}

/// Ends `job`'s attempt errored if it still runs on the silent worker, and announces it.
/// Returns whether there is nothing more to do for it.
async fn take_back(
    app: &App,
    presence: &Presence,
    job: &HeldJob,
    silent: Duration,
) -> anyhow::Result<bool> {
    let reason = format!(
        "worker {} was not heard from for {} s; this attempt was taken back from it",
        presence.name,
        silent.as_secs()
    );
    let outcome = TaskOutcome::Errored { reason };
    let fields = record::task::ended(&outcome, now_ms());
    let (id, worker) = (job.build, presence.name.as_str());
    let ended = if app
        .store
        .take_back(id, &job.task, job.attempt, worker, &fields)
        .await?
    {
        tracing::warn!(build_id = %id, task = %job.task, attempt = job.attempt, %worker,
            silent_s = silent.as_secs(), "attempt taken back from a silent worker");
        Ended::bare(outcome)
    } else {
        // Not running there any more. If it ended there (taken back by an earlier look or
        // another bot, or recorded by the worker before it went silent) its end may never
        // have been announced: it is announced now. Announcing twice changes nothing.
        let task = app.store.task(id, &job.task).await?;
        match task {
            Some(task)
                if task.attempt == job.attempt
                    && task.status.is_final()
                    && task.worker.as_deref() == Some(worker) =>
            {
                let Some(outcome) = task.ended else {
                    return Ok(true);
                };
                Ended {
                    outcome,
                    artifacts: task.artifacts,
                    images: task.images,
                }
            }
            _ => return Ok(true),
        }
    };
    let Some(record) = app.store.build(id).await? else {
        return Ok(true);
    };
    scheduler::announce_end(app, &record.build, &job.task, job.attempt, ended).await?;
    Ok(true)
}

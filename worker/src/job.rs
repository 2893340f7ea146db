//! One job's lifecycle on a worker: claim → announce → check out → run → record → announce →
//! acknowledge. The acknowledgement comes last: a worker that dies anywhere before it leaves
//! the job to RabbitMQ, which gives it to another worker.

use std::time::Duration;

use kiln_shared::build::TaskOutcome;
use kiln_shared::wire::{self, Event, JobRequested, TaskFinished, TaskStarted, Work};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio_util::sync::CancellationToken;

use crate::Worker;
use crate::checkout::CheckoutError;
use crate::store::{Claim, Claimant, RedisLog, Standing};
use crate::task::{self, Ran, Tools};

/// How often a running task's record is read to see whether the bot cancelled it or took
/// it back.
const CANCEL_POLL: Duration = Duration::from_secs(1);

/// How long to wait before trying a job again that failed for a passing reason (Redis or
/// RabbitMQ unreachable); the pause doubles up to [`MAX_RETRY_PAUSE`], then the job is handed
/// back. A handed-back job counts against the queue's delivery limit, so a short outage must
/// not hand it back at once.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(32);

/// Handles one delivery to the end, acknowledging or handing it back.
pub async fn handle_delivery(worker: &Worker, delivery: Delivery, shutdown: CancellationToken) {
    let job = match wire::decode_work(&delivery.data) {
        Ok(Work::Job(job)) => *job,
        Ok(Work::Environment(asked)) => {
            return crate::environment::handle_delivery(worker, delivery, asked).await;
        }
        Err(error) => {
            // Never runnable: straight to the dead-letter queue for a person to look at.
            tracing::error!(%error, "unreadable job dead-lettered");
            let _ = delivery.nack(BasicNackOptions::default()).await;
            return;
        }
    };
    let _held = worker.running.hold(&job);
    let span = tracing::info_span!("job", build_id = %job.build.id, task = %job.task, attempt = job.attempt);
    let mut redelivered = delivery.redelivered;
    let tries = with_pauses(worker, &shutdown, || {
        let given_again = redelivered;
        // Whatever a failed try claimed is this worker's to take again.
        redelivered = true;
        let (job, shutdown) = (&job, shutdown.clone());
        let tried = async move {
            let gone = if given_again {
                wait_while_running(worker, job, &shutdown).await
            } else {
                None
            };
            if shutdown.is_cancelled() {
                // Stopped while waiting: the job goes back unacknowledged, untouched.
                return Ok(Done::Interrupted);
            }
            run_job(worker, job, gone.as_ref(), shutdown).await
        };
        async move {
            // Before the task ran, trying again is safe; after, it would run it twice.
            match tried.await {
                Err(Failure::BeforeRun(error)) => Err(error),
                other => Ok(other),
            }
        }
    });
    let done = match tracing::Instrument::instrument(tries, span.clone()).await {
        Ok(done) => done,
        Err(_) if shutdown.is_cancelled() => Ok(Done::Interrupted),
        Err(error) => Err(Failure::BeforeRun(error)),
    };
    let acked = match done {
        Ok(Done::Finished) => delivery.ack(BasicAckOptions::default()).await,
        Ok(Done::Interrupted) => return, // unacked: redelivered once the channel closes
        Err(Failure::BeforeRun(error) | Failure::AfterRun(error)) => {
            tracing::error!(parent: &span, error = format!("{error:#}"),
                "job failed for a passing reason, again and again; handed back");
            let requeue = BasicNackOptions {
                requeue: true,
                ..Default::default()
            };
            delivery.nack(requeue).await
        }
    };
    if let Err(error) = acked {
        // After a reconnection the delivery's channel is gone; RabbitMQ redelivers the job,
        // and the claim finds it finished.
        tracing::warn!(%error, "cannot acknowledge a job");
    }
}

/// Waits while the job's task runs on a worker that is there: this one, given the job again
/// after its broker connection was lost, or another. Running it again beside that run would
/// run it twice; once the run ends (or its worker is gone), the job is claimed as usual and
/// finds the task finished (or takes it over from the claim returned, the one gone). A
/// Redis that cannot say ends the wait, with no claim to take over from.
async fn wait_while_running(
    worker: &Worker,
    job: &JobRequested,
    shutdown: &CancellationToken,
) -> Option<Claimant> {
    let mut said = false;
    loop {
        let Ok(Some(owner)) = worker.store.running_on(job).await else {
            return None;
        };
        let alive = if owner.worker == worker.name {
            // This delivery is one hold; the run's own is the other.
            worker.running.holds(job) > 1
        } else {
            let label = kiln_shared::presence::label(job.build.id, &job.task);
            matches!(worker.store.presence(&owner.worker).await, Ok(Some(p))
                if p.is_there(crate::store::now_ms()) && p.running.contains(&label))
        };
        if !alive {
            return Some(owner);
        }
        if !said {
            tracing::info!(owner = %owner.worker, "job given again while it runs; waiting for that run");
            said = true;
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(CANCEL_POLL) => {}
        }
    }
}

enum Done {
    Finished,
    Interrupted,
}

/// Why a job could not be taken to its end, for a passing reason (Redis or RabbitMQ away).
enum Failure {
    /// Before its task ran: the job may be tried again.
    BeforeRun(anyhow::Error),
    /// After: its result could not be recorded or announced, even with pauses.
    AfterRun(anyhow::Error),
}

/// Runs `step` until it succeeds, pausing [`RETRY_PAUSE`], doubled each time, up to
/// [`MAX_RETRY_PAUSE`]; then, or on shutdown, gives its error.
/// A pause is cut short when the broker connection comes back: what failed for want of it
/// is tried again at once.
async fn with_pauses<T, F, Fut>(
    worker: &Worker,
    shutdown: &CancellationToken,
    mut step: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut pause = RETRY_PAUSE;
    loop {
        let reconnected = worker.broker.reconnected();
        match step().await {
            Ok(value) => return Ok(value),
            Err(error) if pause > MAX_RETRY_PAUSE || shutdown.is_cancelled() => return Err(error),
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), ?pause, "trying again");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = reconnected => {}
                    () = shutdown.cancelled() => return Err(error),
                }
                pause *= 2;
            }
        }
    }
}

async fn run_job(
    worker: &Worker,
    job: &JobRequested,
    gone: Option<&Claimant>,
    shutdown: CancellationToken,
) -> Result<Done, Failure> {
    let me = Claimant::fresh(&worker.name);
    let claim = worker.store.claim(job, gone, &me).await;
    match claim.map_err(|e| Failure::BeforeRun(e.into()))? {
        Claim::Taken => {}
        Claim::Finished(ran) => {
            // An earlier run recorded the end but may have died before announcing it.
            announce_finished(worker, job, ran, None)
                .await
                .map_err(Failure::BeforeRun)?;
            return Ok(Done::Finished);
        }
        Claim::Elsewhere(status) => {
            tracing::info!(
                status = status.as_deref().unwrap_or("unknown"),
                "job not for running; dropped"
            );
            return Ok(Done::Finished);
        }
    }
    // Both before the task runs, neither waiting for the other.
    let started = Event::TaskStarted(TaskStarted {
        build: job.build.clone(),
        task: job.task.clone(),
        attempt: job.attempt,
        worker: worker.name.clone(),
    });
    let started = worker.broker.publish_event(&started);
    let cleared = async { Ok(worker.store.clear_log(job).await?) };
    tokio::try_join!(started, cleared).map_err(Failure::BeforeRun)?;

    let began = std::time::Instant::now();
    let workdir = format!(
        "{}-{}-{}-{}",
        worker.prefix, job.build.id, job.task, job.attempt
    );
    let run = async {
        match worker
            .checkouts
            .checkout(
                &job.clone_url,
                &job.build.commit,
                job.merge_with.as_deref(),
                &workdir,
            )
            .await
        {
            // No other attempt would merge them: the request needs its author.
            Err(error @ CheckoutError::Conflict { .. }) => Ran::ended(TaskOutcome::Unrunnable {
                reason: format!("cannot build the request's merge result: {error}"),
            }),
            Err(error) => Ran::errored(format!("cannot check out {}: {error}", job.build.commit)),
            Ok(dir) => {
                let log = redis_log(worker, job);
                let tools = Tools {
                    docker: worker.docker.as_ref(),
                    artifacts: &worker.artifacts,
                    caches: &worker.caches,
                    secrets: &worker.secrets,
                    sandbox: &worker.sandbox,
                    shell_without_docker: false,
                };
                let ran = task::run(tools, job, dir.path(), &log).await;
                drop(dir);
                worker.checkouts.remove(&workdir).await;
                ran
            }
        }
    };
    // Dropping the run stops it and kills a shell task's processes; what it leaves behind
    // (containers, services, the network, the work directory) is removed here.
    let stopped = async {
        if let Some(docker) = &worker.docker {
            docker.remove_for(job).await;
        }
        worker.checkouts.remove(&workdir).await;
    };
    let ran = tokio::select! {
        outcome = run => outcome,
        () = shutdown.cancelled() => {
            stopped.await;
            return Ok(Done::Interrupted);
        }
        standing = taken_away(worker, job, &me) => {
            stopped.await;
            if standing == Standing::Cancelled {
                crate::lines::note(&redis_log(worker, job), "cancelled".into()).await;
                tracing::info!("task cancelled");
            } else {
                // Its log is the next attempt's now: the run is stopped, though lines it wrote
                // since the attempt was taken back (up to a second's) may be in it.
                tracing::warn!("this attempt was taken back (the bot had not heard from this \
                    worker) and runs elsewhere; stopped");
            }
            return Ok(Done::Finished);
        }
    };
    let took = began.elapsed();
    tracing::info!(outcome = %ran.outcome, "task ended");
    let recorded = with_pauses(worker, &shutdown, || async {
        Ok(worker.store.finish(job, &me, &ran).await?)
    })
    .await
    .map_err(Failure::AfterRun)?;
    if !recorded {
        // Cancelled or taken back meanwhile: the record says so, and nothing is to announce.
        tracing::info!("the task's record moved on while it ran; its end is not announced");
        return Ok(Done::Finished);
    }
    count(worker, &ran, took);
    with_pauses(worker, &shutdown, || {
        announce_finished(worker, job, ran.clone(), Some(took))
    })
    .await
    .map_err(Failure::AfterRun)?;
    Ok(Done::Finished)
}

/// Resolves once the job's task is no longer claim `me`'s to run (the bot cancelled it, or
/// took its attempt back), with why; never while it is.
async fn taken_away(worker: &Worker, job: &JobRequested, me: &Claimant) -> Standing {
    let mut every = tokio::time::interval(CANCEL_POLL);
    loop {
        every.tick().await;
        match worker.store.standing(job, me).await {
            Ok(Standing::Held) => {}
            Ok(standing) => return standing,
            Err(error) => {
                tracing::warn!(%error, "cannot read whether the task is still this worker's")
            }
        }
    }
}

/// Where `job`'s log lines go.
fn redis_log<'a>(worker: &'a Worker, job: &'a JobRequested) -> RedisLog<'a> {
    RedisLog {
        store: &worker.store,
        job,
        stored: &worker.metrics.log_lines,
    }
}

/// Notes a task that ran for `took` in the worker's metrics.
fn count(worker: &Worker, ran: &Ran, took: Duration) {
    let status = ran.outcome.status().as_str().to_owned();
    let metrics = &worker.metrics;
    metrics
        .task_seconds
        .get_or_create(&crate::metrics::OutcomeLabels { status })
        .observe(took.as_secs_f64());
    for image in &ran.images {
        let how = match (image.built, image.pulled) {
            (true, _) => "built",
            (false, true) => "pulled",
            (false, false) => "reused",
        };
        metrics
            .images
            .get_or_create(&crate::metrics::ImageLabels { how })
            .inc();
    }
}

/// Announces how the task ended; `took`, how long it ran, when it ran just now.
async fn announce_finished(
    worker: &Worker,
    job: &JobRequested,
    ran: Ran,
    took: Option<Duration>,
) -> anyhow::Result<()> {
    worker
        .broker
        .publish_event(&Event::TaskFinished(TaskFinished {
            build: job.build.clone(),
            task: job.task.clone(),
            attempt: job.attempt,
            outcome: ran.outcome,
            artifacts: ran.artifacts,
            images: ran.images,
            ran_ms: took.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        }))
        .await
}

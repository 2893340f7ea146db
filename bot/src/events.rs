//! The bot's event loops: every requested build goes to the planner and every task's event to
//! the scheduler, then pokes its build's card keeper if it has cards to keep; every
//! dead-lettered job goes to the scheduler, every push held while Redis was away to ingress;
//! each message is acknowledged only once handled.
//! Beside them run the leases' reaper, the outbox's relay and retention's keeper.

use std::time::Duration;

use futures_util::StreamExt;
use kiln_shared::wire::{self, CommentRequested, Event, JobRequested, PushHeld};
use lapin::options::{BasicAckOptions, BasicNackOptions};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::amqp::BotQueue;
use crate::app::App;
use crate::notify::cards;
use crate::{
    comments, ingress, leases, logs, outbox, planner, reclaim, reconcile, scheduler, schedules,
};

/// How many tasks' events (and dead-lettered jobs) the bot handles at once.
const EVENTS_AT_ONCE: u16 = 16;

/// How many requested builds the bot plans at once. Fewer than events: planning reads the
/// commit's pipeline, which may mean fetching, and a burst of pushes is planned in turn while
/// tasks' events and new webhooks go on being handled.
const PLANNING_AT_ONCE: u16 = 4;

/// How many comments' commands the bot carries out at once: each may read the forge and
/// fetch a repository, as a chat command does.
const COMMENTS_AT_ONCE: u16 = 4;

/// How long to wait before handing back a message whose handling failed (Redis or RabbitMQ
/// hiccup), so a persistent fault does not spin the loop.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Consumes the bot's queues (requested builds, tasks' events, held pushes, comments'
/// commands, dead-lettered jobs)
/// until `shutdown` is cancelled.
pub async fn run(app: App, shutdown: CancellationToken) -> anyhow::Result<()> {
    for id in app.store.cards_pending().await? {
        cards::refresh(&app, id);
    }
    let handle_event = |event: Event| {
        let span =
            tracing::info_span!("event", build_id = %event.build().id, key = %event.routing_key());
        let app = app.clone();
        tracing::Instrument::instrument(async move { handle(&app, &event).await }, span)
    };
    tokio::try_join!(
        leases::reap(app.clone(), shutdown.clone()),
        reclaim::watch(app.clone(), shutdown.clone()),
        outbox::relay::relay(app.clone(), shutdown.clone()),
        logs::keeper::keep(app.clone(), shutdown.clone()),
        reconcile::reconcile(app.clone(), shutdown.clone()),
        schedules::run(app.clone(), shutdown.clone()),
        serve(
            &app,
            BotQueue::Builds,
            PLANNING_AT_ONCE,
            &shutdown,
            handle_event
        ),
        serve(
            &app,
            BotQueue::Events,
            EVENTS_AT_ONCE,
            &shutdown,
            handle_event
        ),
        serve(
            &app,
            BotQueue::HeldPushes,
            PLANNING_AT_ONCE,
            &shutdown,
            |held: PushHeld| ingress::accept_held(&app, held)
        ),
        serve(
            &app,
            BotQueue::Comments,
            COMMENTS_AT_ONCE,
            &shutdown,
            |requested: CommentRequested| comments::answer(&app, requested)
        ),
        serve(
            &app,
            BotQueue::DeadJobs,
            EVENTS_AT_ONCE,
            &shutdown,
            |job: JobRequested| {
                let span =
                    tracing::info_span!("dead job", build_id = %job.build.id, task = %job.task);
                let app = app.clone();
                tracing::Instrument::instrument(
                    async move { scheduler::handle_dead_job(&app, &job).await },
                    span,
                )
            }
        ),
    )?;
    Ok(())
}

async fn handle(app: &App, event: &Event) -> anyhow::Result<()> {
    match event {
        Event::BuildRequested(e) => planner::handle_build_requested(app, e).await?,
        Event::TaskStarted(e) => scheduler::handle_task_started(app, e).await?,
        Event::TaskFinished(e) => scheduler::handle_task_finished(app, e).await?,
        // No longer bound: the bot that ends a build pokes its cards itself. One queued by
        // an earlier version only pokes them again, below.
        Event::BuildFinished(_) => {}
    }
    // Noted before the event is acknowledged: a bot that stops before the keeper is done
    // takes the build up again when it starts.
    cards::changed(app, event.build()).await?;
    Ok(())
}

/// Takes messages from the bot's queue `queue` until `shutdown` is cancelled, up to
/// `at_once` at a time: each is decoded and handled, then acknowledged; one whose handling
/// failed is handed back after a pause; an unreadable one is refused for good. Messages of
/// one build may be handled side by side, as by two bots: every handler is a
/// compare-and-set. When the broker connection is lost the loop takes the next one: what was
/// in hand and not yet acknowledged comes again, and is handled again, harmlessly.
async fn serve<T, F, Fut>(
    app: &App,
    queue: BotQueue,
    at_once: u16,
    shutdown: &CancellationToken,
    handle: F,
) -> anyhow::Result<()>
where
    T: DeserializeOwned,
    F: Fn(T) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    while let Some((session, _channel, consumer)) =
        app.broker.consume(queue, at_once, shutdown).await
    {
        let ended = async {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = session.broken() => {}
            }
        };
        consumer
            .take_until(ended)
            .for_each_concurrent(usize::from(at_once), |next| async {
                let delivery = match next {
                    Ok(delivery) => delivery,
                    Err(error) => {
                        session.fail(&format!("consuming {}: {error}", queue.name()));
                        return;
                    }
                };
                let _busy = app.watchdog.busy(queue.name());
                let answered = match wire::decode::<T>(&delivery.data) {
                    Err(error) => {
                        tracing::error!(%error, "unreadable message dropped");
                        delivery.nack(BasicNackOptions::default()).await
                    }
                    Ok(message) => match handle(message).await {
                        Ok(()) => delivery.ack(BasicAckOptions::default()).await,
                        Err(error) => {
                            tracing::error!(
                                error = format!("{error:#}"),
                                "handling failed; will retry"
                            );
                            tokio::time::sleep(RETRY_PAUSE).await;
                            let requeue = BasicNackOptions {
                                requeue: true,
                                ..Default::default()
                            };
                            delivery.nack(requeue).await
                        }
                    },
                };
                if let Err(error) = answered {
                    // Its channel is gone: the broker gives the message again.
                    session.fail(&format!("acknowledging on {}: {error}", queue.name()));
                }
            })
            .await;
        if shutdown.is_cancelled() {
            break;
        }
        if !session.is_broken() {
            // The broker ended the consumer (its queue deleted?): start again, not in a spin.
            tracing::warn!(
                queue = queue.name(),
                "the broker ended a consumer; starting it again"
            );
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(RETRY_PAUSE) => {}
            }
        }
    }
    Ok(())
}

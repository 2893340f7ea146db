//! The bot's event loop: every event on its queue goes to the planner, the scheduler or the
//! notifier, and is acknowledged only once handled.

use std::time::Duration;

use futures_util::StreamExt;
use kiln_shared::wire::{self, Event};
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::{notify, planner, scheduler};

/// How long to wait before handing back an event whose handling failed (Redis or RabbitMQ
/// hiccup), so a persistent fault does not spin the loop.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Consumes the bot's events queue until `shutdown` is cancelled.
pub async fn run(app: App, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (channel, mut consumer) = app.broker.consume_events("kiln-bot").await?;
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => break,
            next = consumer.next() => next,
        };
        let delivery = match next {
            None => break,
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => {
                channel.wait_for_recovery(error).await?;
                continue;
            }
        };
        let event = match wire::decode::<Event>(&delivery.data) {
            Ok(event) => event,
            Err(error) => {
                tracing::error!(%error, "unreadable event dropped");
                delivery.nack(BasicNackOptions::default()).await?;
                continue;
            }
        };
        let span =
            tracing::info_span!("event", build = %event.build().id, key = %event.routing_key());
        let handled = tracing::Instrument::instrument(handle(&app, &event), span).await;
        match handled {
            Ok(()) => {
                delivery.ack(BasicAckOptions::default()).await?;
            }
            Err(error) => {
                tracing::error!(build = %event.build().id, error = format!("{error:#}"), "event handling failed; will retry");
                tokio::time::sleep(RETRY_PAUSE).await;
                let requeue = BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                };
                delivery.nack(requeue).await?;
            }
        }
    }
    Ok(())
}

async fn handle(app: &App, event: &Event) -> anyhow::Result<()> {
    match event {
        Event::BuildRequested(e) => planner::handle_build_requested(app, e).await,
        Event::TaskStarted(e) => scheduler::handle_task_started(app, e).await,
        Event::TaskFinished(e) => scheduler::handle_task_finished(app, e).await,
        Event::BuildFinished(e) => notify::handle_build_finished(app, e).await,
    }
}

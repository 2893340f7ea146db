//! The outbox's relay: publishes the requests of accepted builds that RabbitMQ has not
//! confirmed, in the order they were accepted, when it can.
//!
//! Every build is recorded with an outbox entry ([`crate::store::Store::create_build`]); the
//! request that accepted it takes it out once its publish is confirmed. An entry still there
//! when it is due (at once when the publish failed, after [`OUTBOX_GRACE`] otherwise) is the
//! relay's: every bot runs one, and each claims due entries for a while before publishing
//! them, so two bots do not publish the same build at once. A bot that stops mid-batch leaves
//! its claims to run out. Publishing a build twice (a confirm lost with its connection) is
//! harmless: planning is idempotent.
//!
//! A build RabbitMQ keeps refusing (nacked or unroutable while connected) for
//! [`GIVE_UP_AFTER`] ends as errored, with the reason on its card; one RabbitMQ cannot be
//! reached for waits, however long.

use std::time::Duration;

use kiln_shared::build::{BuildId, BuildStatus};
use kiln_shared::wire::Event;
use tokio_util::sync::CancellationToken;

use crate::amqp::PublishError;
use crate::app::App;
use crate::lifecycle;
use crate::store::{OUTBOX_GRACE, now_ms};

/// How often the relay looks at the outbox when nothing tells it to.
const LOOK_EVERY: Duration = Duration::from_secs(2);

/// How long a relay's claim on entries lasts: longer than publishing a batch takes.
const CLAIM: Duration = Duration::from_secs(60);

/// How many entries a relay claims at once.
const BATCH: usize = 64;

/// How long an entry waits after RabbitMQ did not take it.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// How long after its acceptance a build RabbitMQ keeps refusing is given up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60 * 60);

/// Relays the outbox's due entries whenever RabbitMQ is connected: at once when it comes
/// back, when poked, and every [`LOOK_EVERY`], until `shutdown`.
pub async fn relay(app: App, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut link = app.broker.link().watch();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = app.outbox.due() => {}
            _ = link.changed() => {}
            () = tokio::time::sleep(LOOK_EVERY) => {}
        }
        if app.broker.link().session().is_none() {
            continue;
        }
        let _busy = app.watchdog.busy("the outbox's relay");
        match relay_due(&app).await {
            Ok(0) => {}
            Ok(relayed) => tracing::info!(relayed, "builds from the outbox published"),
            Err(error) => tracing::warn!(error = format!("{error:#}"), "the outbox waits"),
        }
    }
}

/// Publishes the due entries, batch after batch, oldest build first; stops at the first one
/// RabbitMQ does not take, so none overtakes it. Returns how many it published.
async fn relay_due(app: &App) -> anyhow::Result<usize> {
    let mut relayed = 0;
    loop {
        let ids = app.store.outbox_claim(BATCH, CLAIM).await?;
        if ids.is_empty() {
            return Ok(relayed);
        }
        let records = app.store.build_records(&ids).await?;
        let mut done = Vec::new();
        for (at, (id, record)) in ids.iter().zip(records).enumerate() {
            let Some(record) = record.filter(|r| r.status == BuildStatus::Queued) else {
                // Gone, or planned already (its request got through after all).
                done.push(*id);
                continue;
            };
            match app
                .broker
                .publish_event(&Event::BuildRequested(record.request()))
                .await
            {
                Ok(()) => {
                    done.push(*id);
                    relayed += 1;
                }
                Err(error) => {
                    app.store.outbox_done(&done).await?;
                    let refused =
                        matches!(error, PublishError::Nacked | PublishError::Unroutable(_));
                    if refused && give_up(app, &record, &error).await? {
                        app.store.outbox_done(&[*id]).await?;
                        app.store
                            .outbox_later(&ids[at + 1..], Duration::ZERO)
                            .await?;
                    } else {
                        app.store.outbox_later(&ids[at..], RETRY_AFTER).await?;
                    }
                    return Err(error.into());
                }
            }
        }
        app.store.outbox_done(&done).await?;
    }
}

/// Ends build `record` as errored if it was accepted over [`GIVE_UP_AFTER`] ago; returns
/// whether it did.
async fn give_up(
    app: &App,
    record: &crate::store::BuildRecord,
    error: &PublishError,
) -> anyhow::Result<bool> {
    let id: BuildId = record.build.id;
    let accepted = app.store.created_ms(id).await?.unwrap_or(0);
    let waited = now_ms().saturating_sub(accepted);
    if waited < (GIVE_UP_AFTER + OUTBOX_GRACE).as_millis() as u64 {
        return Ok(false);
    }
    let reason = format!(
        "RabbitMQ refused this build's request for over {} minutes ({error}); it was not run",
        GIVE_UP_AFTER.as_secs() / 60
    );
    tracing::error!(build_id = %id, %reason, "build given up");
    lifecycle::end_build(app, record, BuildStatus::Errored, Vec::new(), Some(reason)).await?;
    Ok(true)
}

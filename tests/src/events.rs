//! Subscribing to Kiln's events the way another team would: a queue of one's own, bound to
//! the events exchange.

use futures_util::StreamExt;
use kiln_shared::platform::Platform;
use kiln_shared::routing::Topology;
use kiln_shared::wire::{self, CommentRequested, Event, JobRequested};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

use crate::{E2E_TIMEOUT, Kiln};

/// Binds a queue of the test's own to `build.*.<repo>.<branch>`, the way another team would.
pub async fn subscribe(kiln: &Kiln, binding: &str) -> lapin::Consumer {
    tap(
        kiln,
        &Topology::new(&kiln.prefix).events_exchange(),
        &[binding],
        false,
    )
    .await
}

/// Like [`subscribe`], with as many bindings as `bindings`, for many events: they are taken
/// as delivered, with nothing to acknowledge.
pub async fn listen(kiln: &Kiln, bindings: &[&str]) -> lapin::Consumer {
    tap(
        kiln,
        &Topology::new(&kiln.prefix).events_exchange(),
        bindings,
        true,
    )
    .await
}

/// A copy of every job published for `platform`: a queue of the test's own, bound to the
/// jobs exchange beside the platform's queue.
pub async fn tap_jobs(kiln: &Kiln, platform: Platform) -> lapin::Consumer {
    tap(
        kiln,
        &Topology::new(&kiln.prefix).jobs_exchange(),
        &[platform.label()],
        false,
    )
    .await
}

/// An exclusive queue (gone with its connection) bound to `exchange` with `bindings`;
/// `no_ack`: deliveries need no acknowledgement.
async fn tap(kiln: &Kiln, exchange: &str, bindings: &[&str], no_ack: bool) -> lapin::Consumer {
    let connection = Connection::connect(
        kiln.services.first_amqp_url(),
        ConnectionProperties::default(),
    )
    .await
    .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let options = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let queue = channel
        .queue_declare("".into(), options, FieldTable::default())
        .await
        .expect("declare");
    for binding in bindings {
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.into(),
                (*binding).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
    }
    let consumer = channel
        .basic_consume(
            queue.name().clone(),
            "test".into(),
            BasicConsumeOptions {
                no_ack,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    // The consumer holds the channel, which holds the connection, for the test's life.
    std::mem::forget(connection);
    consumer
}

/// The next `build.<final status>` event; `build.requested` events, which the same binding
/// receives, are passed over.
pub async fn next_build_finished(
    consumer: &mut lapin::Consumer,
) -> kiln_shared::wire::BuildFinished {
    loop {
        match next_event(consumer).await {
            Event::BuildRequested(_) => continue,
            Event::BuildFinished(finished) => return finished,
            other => panic!("`task.*` events must not match a `build.*` binding: {other:?}"),
        }
    }
}

pub async fn next_event(consumer: &mut lapin::Consumer) -> Event {
    next_message(consumer).await
}

/// The next message of a [`subscribe`] queue, whatever its kind (a `PromotionEvent`, say).
pub async fn next_message<T: serde::de::DeserializeOwned>(consumer: &mut lapin::Consumer) -> T {
    let delivery = tokio::time::timeout(E2E_TIMEOUT, consumer.next())
        .await
        .expect("an event arrives in time")
        .expect("the consumer is open")
        .expect("a delivery");
    delivery.ack(BasicAckOptions::default()).await.expect("ack");
    wire::decode(&delivery.data).expect("a Kiln event")
}

/// Every job waiting on a [`tap_jobs`] queue, waiting at most `quiet` for each next one.
pub async fn jobs_so_far(
    consumer: &mut lapin::Consumer,
    quiet: std::time::Duration,
) -> Vec<JobRequested> {
    let mut jobs = Vec::new();
    while let Ok(Some(Ok(delivery))) = tokio::time::timeout(quiet, consumer.next()).await {
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
        jobs.push(wire::decode(&delivery.data).expect("a job"));
    }
    jobs
}

/// Publishes `requested` to the bot's comments queue as the door would: what a bot that
/// stopped before acknowledging it leaves for another to take again.
pub async fn queue_comment(kiln: &Kiln, requested: &CommentRequested) {
    let connection = Connection::connect(
        kiln.services.first_amqp_url(),
        ConnectionProperties::default(),
    )
    .await
    .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let queue = Topology::new(&kiln.prefix).bot_comments_queue();
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &wire::encode(requested),
            BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack(), "RabbitMQ took the comment: {confirm:?}");
}

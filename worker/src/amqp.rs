//! RabbitMQ for the worker: its platform's job queues in, task events out with confirms.
//!
//! The worker connects out to the broker (no inbound port), so it runs behind NAT on a
//! remote host. It declares what it uses, so it can start before the bot ever has. Its
//! connection is a [`Link`], kept open through broker outages: the job queues are consumed
//! again on every new connection.

use std::sync::Arc;

use kiln_io::amqp::{Link, Message, Session, declare_exchanges, declare_job_queues};
use kiln_shared::platform::Platform;
use kiln_shared::priority::Priority;
use kiln_shared::routing::Topology;
use kiln_shared::wire::{self, Event};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Consumer};
use tokio_util::sync::CancellationToken;

/// The worker's connection to RabbitMQ.
#[derive(Debug)]
pub struct Broker {
    link: Link,
    topology: Topology,
    platform: Platform,
    slots: u16,
    name: String,
}

impl Broker {
    /// Starts keeping a connection to `url`, declaring the exchanges and `platform`'s job
    /// queues on each. A broker that is not there yet is waited for in the background.
    pub async fn connect(
        url: &str,
        trust: &kiln_io::tls::Trust,
        topology: Topology,
        platform: Platform,
        slots: u16,
        name: &str,
    ) -> Result<Self, kiln_io::amqp::BadUrl> {
        let declared = Arc::new(topology.clone());
        let prepare: kiln_io::amqp::Prepare = Arc::new(move |preparing| {
            let topology = declared.clone();
            Box::pin(async move { prepare(&preparing, &topology, platform).await })
        });
        let link = Link::open(url, trust, name, prepare).await?;
        Ok(Self {
            link,
            topology,
            platform,
            slots,
            name: name.to_owned(),
        })
    }

    /// Starts consuming the platform's job queues, on the first session that lets it; the
    /// consumers with their queue's priority, the highest first. `None` once `stop` is
    /// cancelled. The consumers end with their session.
    ///
    /// A job in hand waits for a free slot ([`crate::slots`]), high priority first. The
    /// worker holds at most `slots` normal jobs, which keeps them for idle workers, and
    /// twice as many high ones: when a high job ends, the next is already in hand to take
    /// its slot, before a normal job waiting can.
    pub async fn consume(
        &self,
        stop: &CancellationToken,
    ) -> Option<(Session, Channel, Vec<(Priority, Consumer)>)> {
        let queues = self.topology.jobs_queues(self.platform);
        let tags = queues.each_ref().map(|(priority, _)| match priority {
            Priority::Normal => self.name.clone(),
            high => format!("{}.{high}", self.name),
        });
        let named: Vec<(&str, &str, u16)> = queues
            .iter()
            .zip(&tags)
            .map(|((priority, queue), tag)| {
                let prefetch = match priority {
                    Priority::High => self.slots.saturating_mul(2),
                    Priority::Normal => self.slots,
                };
                (queue.as_str(), tag.as_str(), prefetch)
            })
            .collect();
        let (session, channel, consumers) = self.link.consume_each(&named, stop).await?;
        let priorities = queues.map(|(priority, _)| priority);
        Some((
            session,
            channel,
            priorities.into_iter().zip(consumers).collect(),
        ))
    }

    /// Resolves when a new broker connection is up: the next one after the call, whatever
    /// the state then.
    pub fn reconnected(&self) -> impl Future<Output = ()> + use<> {
        let mut states = self.link.watch();
        states.borrow_and_update();
        async move {
            while states.changed().await.is_ok() {
                if matches!(*states.borrow(), kiln_io::amqp::LinkState::Up(_)) {
                    return;
                }
            }
            // The link is gone for good: never.
            std::future::pending::<()>().await;
        }
    }

    /// Publishes an event and waits for the broker's confirm; a returned (unroutable)
    /// message is an error.
    pub async fn publish_event(&self, event: &Event) -> anyhow::Result<()> {
        let properties =
            BasicProperties::default().with_correlation_id(event.build().id.to_string().into());
        let key = event.routing_key();
        self.link
            .publish(&Message {
                exchange: &self.topology.events_exchange(),
                routing_key: &key,
                body: &wire::encode(event),
                properties,
                mandatory: true,
            })
            .await
            .map_err(|error| anyhow::anyhow!("event {key}: {error}"))
    }
}

/// Declares what the worker uses, on a channel of its own. A worker with credentials of its
/// own may declare nothing (`kiln-bot worker-credentials`: it could otherwise delete the
/// queue or bind it to other platforms' jobs): refused, it checks that the bot has declared
/// them, and until it has, the connection fails and is tried again.
async fn prepare(
    preparing: &kiln_io::amqp::Preparing,
    t: &Topology,
    platform: Platform,
) -> lapin::Result<()> {
    let channel = preparing.channel().await?;
    match declare(&channel, t, platform).await {
        Ok(()) => channel.close(200, "declared".into()).await,
        Err(error) if kiln_io::amqp::is_access_refused(&error) => {
            tracing::debug!(%error, "may not declare; checking what the bot declared");
            let channel = preparing.channel().await?;
            let passive = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            for (_, queue) in t.jobs_queues(platform) {
                channel
                    .queue_declare(queue.into(), passive, FieldTable::default())
                    .await?;
            }
            channel
                .exchange_declare(
                    t.events_exchange().into(),
                    lapin::ExchangeKind::Topic,
                    lapin::options::ExchangeDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            channel.close(200, "checked".into()).await
        }
        Err(error) => Err(error),
    }
}

/// Declares the exchanges and `platform`'s job queues on `channel`.
async fn declare(channel: &Channel, t: &Topology, platform: Platform) -> lapin::Result<()> {
    declare_exchanges(channel, &t.exchanges()).await?;
    declare_job_queues(channel, t, platform).await
}

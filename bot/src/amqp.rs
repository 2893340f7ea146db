//! RabbitMQ: the bot declares Kiln's topology, publishes jobs and events with confirms, and
//! consumes its own queues (requested builds, tasks' events, dead-lettered jobs).
//!
//! The connection is a [`Link`]: kept open through broker outages, the topology declared
//! again on every new connection. Every message is persistent, `mandatory`, and waits (within
//! a deadline) for the broker's confirm: a publish returns `Ok` only once RabbitMQ has taken
//! responsibility for the message and routed it to at least one queue. While the broker is
//! away a publish fails at once; ingress then keeps the build in its outbox
//! ([`crate::outbox`]). A build's end and promotion events are the exceptions to
//! `mandatory`: Kiln does not consume them, so no queue may be bound for them.

use std::sync::Arc;

use kiln_io::amqp::{
    Link, LinkState, Message, Session, declare_exchanges, declare_job_queues, quorum,
};
use kiln_shared::platform::Platform;
use kiln_shared::priority::Priority;
use kiln_shared::promotion::PromotionEvent;
use kiln_shared::routing::Topology;
use kiln_shared::wire::{
    self, CommentRequested, EnvironmentRequested, Event, JobRequested, PushHeld,
};
use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Consumer};
use tokio_util::sync::CancellationToken;

pub use kiln_io::amqp::PublishError;

/// Messages the bot takes from one of its queues before acknowledging any, for each it
/// handles at once: enough to keep it busy without hoarding messages another replica could
/// handle.
const PREFETCH_PER_HANDLER: u16 = 2;

/// The queues the bot consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BotQueue {
    /// Requested builds, for the planner.
    Builds,
    /// Tasks' events, for the scheduler.
    Events,
    /// The bot's copy of dead-lettered jobs: it errors their tasks, so builds move on.
    DeadJobs,
    /// Verified pushes held while Redis was unreachable, for ingress.
    HeldPushes,
    /// Commands given in pull (merge) request comments.
    Comments,
}

impl BotQueue {
    /// A name for logs and the liveness check.
    pub fn name(self) -> &'static str {
        match self {
            Self::Builds => "requested builds",
            Self::Events => "tasks' events",
            Self::DeadJobs => "dead-lettered jobs",
            Self::HeldPushes => "held pushes",
            Self::Comments => "comments' commands",
        }
    }
}

/// The bot's connection to RabbitMQ.
#[derive(Debug, Clone)]
pub struct Broker {
    link: Link,
    topology: Arc<Topology>,
    /// The platforms whose job queues exist.
    platforms: Arc<[Platform]>,
}

impl Broker {
    /// Starts keeping a connection to `url`, declaring the topology on each: exchanges, the
    /// job queues of `platforms`, the dead-letter queue and the bot's own queues. Declaring
    /// is idempotent. A broker that is not there yet is waited for in the background.
    pub async fn connect(
        url: &str,
        trust: &kiln_io::tls::Trust,
        topology: Topology,
        platforms: &[Platform],
    ) -> Result<Self, kiln_io::amqp::BadUrl> {
        let topology = Arc::new(topology);
        let platforms: Arc<[Platform]> = platforms.into();
        let prepare: kiln_io::amqp::Prepare = {
            let (topology, platforms) = (topology.clone(), platforms.clone());
            Arc::new(move |preparing: kiln_io::amqp::Preparing| {
                let (topology, platforms) = (topology.clone(), platforms.clone());
                Box::pin(async move { declare(&preparing.publisher, &topology, &platforms).await })
            })
        };
        let link = Link::open(url, trust, "kiln-bot", prepare).await?;
        Ok(Self {
            link,
            topology,
            platforms,
        })
    }

    /// Where the connection stands, for `/readyz`.
    pub fn state(&self) -> LinkState {
        self.link.state()
    }

    /// The kept connection.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Publishes an event and waits for the broker to confirm it. Every event but a build's
    /// end must reach one of the bot's queues; a build's end is for other teams, and no queue
    /// need want it.
    pub async fn publish_event(&self, event: &Event) -> Result<(), PublishError> {
        let properties =
            BasicProperties::default().with_correlation_id(event.build().id.to_string().into());
        let mandatory = !matches!(event, Event::BuildFinished(_));
        self.publish_on_events(
            &event.routing_key(),
            &wire::encode(event),
            properties,
            mandatory,
        )
        .await
    }

    /// Publishes what happened to a promotion and waits for the broker to confirm it; no
    /// queue need be bound for it.
    pub async fn publish_promotion(&self, event: &PromotionEvent) -> Result<(), PublishError> {
        let mut properties = BasicProperties::default();
        if let Some(id) = event.promotion {
            properties = properties.with_correlation_id(format!("promotion-{id}").into());
        }
        self.publish_on_events(
            &event.routing_key(),
            &wire::encode(event),
            properties,
            false,
        )
        .await
    }

    /// Publishes `body` to the events exchange under `routing_key`, confirmed.
    async fn publish_on_events(
        &self,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<(), PublishError> {
        self.link
            .publish(&Message {
                exchange: &self.topology.events_exchange(),
                routing_key,
                body,
                properties,
                mandatory,
            })
            .await
    }

    /// Publishes a job to its platform's queue of its priority and waits for the broker to
    /// confirm it.
    pub async fn publish_job(&self, job: &JobRequested) -> Result<(), PublishError> {
        let properties = BasicProperties::default()
            .with_message_id(job.message_id().into())
            .with_correlation_id(job.build.id.to_string().into());
        self.link
            .publish(&Message {
                exchange: &self.topology.jobs_exchange(),
                routing_key: &job.routing_key(),
                body: &wire::encode(job),
                properties,
                mandatory: true,
            })
            .await
    }

    /// Asks a worker of the pool's platform for a lease's environment, through that
    /// platform's job queue, and waits for the broker to confirm it.
    pub async fn publish_environment(
        &self,
        asked: &EnvironmentRequested,
    ) -> Result<(), PublishError> {
        let properties = BasicProperties::default().with_message_id(asked.message_id().into());
        self.link
            .publish(&Message {
                exchange: &self.topology.jobs_exchange(),
                routing_key: asked.platform.label(),
                body: &wire::encode(asked),
                properties,
                mandatory: true,
            })
            .await
    }

    /// Holds a verified push in the bot's queue of held pushes, confirmed, for when Redis is
    /// back.
    pub async fn hold_push(&self, held: &PushHeld) -> Result<(), PublishError> {
        self.link
            .publish(&Message {
                exchange: "",
                routing_key: &self.topology.bot_held_pushes_queue(),
                body: &wire::encode(held),
                properties: BasicProperties::default(),
                mandatory: true,
            })
            .await
    }

    /// Queues a command given in a comment for whichever bot takes it; `Ok` once RabbitMQ
    /// has confirmed it.
    pub async fn request_comment(&self, requested: &CommentRequested) -> Result<(), PublishError> {
        self.link
            .publish(&Message {
                exchange: "",
                routing_key: &self.topology.bot_comments_queue(),
                body: &wire::encode(requested),
                properties: BasicProperties::default(),
                mandatory: true,
            })
            .await
    }

    /// For each platform served: how many jobs wait in its queues, and how many workers take
    /// from them.
    pub async fn job_queues(&self) -> anyhow::Result<Vec<JobQueue>> {
        let session = self
            .link
            .session()
            .ok_or_else(|| anyhow::anyhow!("RabbitMQ is unreachable"))?;
        // A channel of its own: a failed passive declare closes the channel it ran on.
        let channel = session.channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let mut depths = Vec::new();
        for platform in self.platforms.iter() {
            let mut depth = JobQueue {
                platform: *platform,
                waiting: 0,
                high: 0,
                workers: 0,
            };
            for (priority, name) in self.topology.jobs_queues(*platform) {
                let queue = channel
                    .queue_declare(name.into(), passive, FieldTable::default())
                    .await?;
                depth.waiting += queue.message_count();
                match priority {
                    Priority::High => depth.high = queue.message_count(),
                    // Every worker takes from both.
                    Priority::Normal => depth.workers = queue.consumer_count(),
                }
            }
            depths.push(depth);
        }
        let _ = channel.close(200, "done".into()).await;
        Ok(depths)
    }

    /// Whether jobs for `platform` have a queue to go to.
    pub fn serves(&self, platform: Platform) -> bool {
        self.platforms.contains(&platform)
    }

    /// Starts consuming one of the bot's queues on a channel of its own, for `handlers`
    /// handling its messages at once, on the first session that lets it; `None` once `stop`
    /// is cancelled. The consumer ends with its session.
    pub async fn consume(
        &self,
        queue: BotQueue,
        handlers: u16,
        stop: &CancellationToken,
    ) -> Option<(Session, Channel, Consumer)> {
        let t = &self.topology;
        let (queue, consumer_tag) = match queue {
            BotQueue::Builds => (t.bot_builds_queue(), "kiln-bot"),
            BotQueue::Events => (t.bot_events_queue(), "kiln-bot"),
            BotQueue::DeadJobs => (t.bot_dead_jobs_queue(), "kiln-bot-dead"),
            BotQueue::HeldPushes => (t.bot_held_pushes_queue(), "kiln-bot-pushes"),
            BotQueue::Comments => (t.bot_comments_queue(), "kiln-bot-comments"),
        };
        let prefetch = handlers.saturating_mul(PREFETCH_PER_HANDLER);
        self.link
            .consume(&queue, consumer_tag, prefetch, stop)
            .await
    }
}

/// What one platform's job queues hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobQueue {
    pub platform: Platform,
    /// Jobs waiting, of either priority.
    pub waiting: u32,
    /// Of those, the jobs of high priority.
    pub high: u32,
    /// Workers taking them.
    pub workers: u32,
}

/// Declares the bot's topology on `ch`.
async fn declare(ch: &Channel, t: &Topology, platforms: &[Platform]) -> lapin::Result<()> {
    declare_exchanges(ch, &t.exchanges()).await?;

    let queue = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for dead in [t.dead_jobs_queue(), t.bot_dead_jobs_queue()] {
        ch.queue_declare(dead.as_str().into(), queue, quorum())
            .await?;
        ch.queue_bind(
            dead.into(),
            t.dead_exchange().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    for platform in platforms {
        declare_job_queues(ch, t, *platform).await?;
    }
    // Requested builds, and tasks' events, each in a queue of their own: planning may
    // wait on a fetch, which must not hold up tasks' events. Not a build's end, which the
    // bot itself announces, nor promotions, which are for other teams.
    for (bot_queue, key) in [
        (t.bot_builds_queue(), "build.requested.#"),
        (t.bot_events_queue(), "task.#"),
    ] {
        ch.queue_declare(bot_queue.as_str().into(), queue, quorum())
            .await?;
        ch.queue_bind(
            bot_queue.into(),
            t.events_exchange().into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    // Held pushes and comments' commands come through the default exchange, by the
    // queue's name.
    for direct in [t.bot_held_pushes_queue(), t.bot_comments_queue()] {
        ch.queue_declare(direct.as_str().into(), queue, quorum())
            .await?;
    }
    // The bindings earlier versions made (a no-op when absent). Requested builds still
    // in the events queue are handled from there.
    for key in ["#", "build.#", "build.requested.#"] {
        ch.queue_unbind(
            t.bot_events_queue().into(),
            t.events_exchange().into(),
            key.into(),
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}

//! RabbitMQ: the bot declares Kiln's topology, publishes jobs and events with confirms, and
//! consumes its own queues (requested builds, tasks' events, dead-lettered jobs).
//!
//! Every message is persistent, `mandatory`, and waits for the broker's confirm: a publish
//! returns `Ok` only once RabbitMQ has taken responsibility for the message and routed it to
//! at least one queue. That is what lets ingress answer 202 and mean it. A build's end and
//! promotion events are the exceptions, not `mandatory`: Kiln does not consume them, so no
//! queue may be bound for them.

use kiln_shared::platform::Platform;
use kiln_shared::promotion::PromotionEvent;
use kiln_shared::routing::{JOB_DELIVERY_LIMIT, Topology};
use kiln_shared::wire::{self, Event, JobRequested};
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};

/// Messages the bot takes from one of its queues before acknowledging any, for each it
/// handles at once: enough to keep it busy without hoarding messages another replica could
/// handle.
const PREFETCH_PER_HANDLER: u16 = 2;

/// Why a message was not accepted by the broker.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("RabbitMQ is unreachable or refused the message: {0}")]
    Broker(#[from] lapin::Error),
    #[error("RabbitMQ did not confirm the message (nack)")]
    Nacked,
    #[error("no queue is bound for routing key `{0}`; the message was returned")]
    Unroutable(String),
}

/// The queues the bot consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BotQueue {
    /// Requested builds, for the planner.
    Builds,
    /// Tasks' events, for the scheduler.
    Events,
    /// The bot's copy of dead-lettered jobs: it errors their tasks, so builds move on.
    DeadJobs,
}

/// The bot's connection to RabbitMQ.
#[derive(Clone)]
pub struct Broker {
    /// Kept for the life of the bot: dropping the connection silently ends its consumers.
    connection: std::sync::Arc<Connection>,
    publisher: Channel,
    topology: Topology,
    /// The platforms whose job queues exist.
    platforms: Vec<Platform>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("topology", &self.topology)
            .finish()
    }
}

/// The arguments of a platform's job queue: quorum (replicated, survives a broker restart),
/// a delivery limit so a poison job ends in the dead-letter queue instead of looping forever.
pub fn jobs_queue_arguments(topology: &Topology) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(topology.dead_exchange().into()),
    );
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(JOB_DELIVERY_LIMIT),
    );
    args
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args
}

/// The largest AMQP frame asked of the broker, unless the URL asks (`?frame_max=`). lapin
/// keeps read and write buffers of 32 frames per connection: at RabbitMQ's 128 KiB that is
/// 8 MiB, most of an idle process. Kiln's messages are small; a larger one takes more frames.
const FRAME_MAX: u32 = 16 * 1024;

/// Connects to `url`, asking for frames of at most [`FRAME_MAX`] unless it says otherwise.
async fn open(url: &str, properties: ConnectionProperties) -> lapin::Result<Connection> {
    match url.parse::<AMQPUri>() {
        Ok(mut uri) => {
            uri.query.frame_max.get_or_insert(FRAME_MAX);
            Connection::connect_uri(uri, properties).await
        }
        // lapin says what is wrong with it.
        Err(_) => Connection::connect(url, properties).await,
    }
}

impl Broker {
    /// Connects and declares the topology: exchanges, the job queues of `platforms`, the
    /// dead-letter queue and the bot's own queues. Declaring is idempotent.
    pub async fn connect(
        url: &str,
        topology: Topology,
        platforms: &[Platform],
    ) -> lapin::Result<Self> {
        let properties = ConnectionProperties::default()
            .with_connection_name("kiln-bot".into())
            .enable_auto_recover();
        let connection = open(url, properties).await?;
        let publisher = connection.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let broker = Self {
            connection: std::sync::Arc::new(connection),
            publisher,
            topology,
            platforms: platforms.to_vec(),
        };
        broker.declare(platforms).await?;
        Ok(broker)
    }

    async fn declare(&self, platforms: &[Platform]) -> lapin::Result<()> {
        let ch = &self.publisher;
        let t = &self.topology;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            t.jobs_exchange().into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
        ch.exchange_declare(
            t.events_exchange().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
        ch.exchange_declare(
            t.dead_exchange().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;

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
            ch.queue_declare(
                t.jobs_queue(*platform).into(),
                queue,
                jobs_queue_arguments(t),
            )
            .await?;
            ch.queue_bind(
                t.jobs_queue(*platform).into(),
                t.jobs_exchange().into(),
                platform.label().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
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

    /// Publishes an event and waits for the broker to confirm it. Every event but a build's
    /// end must reach one of the bot's queues; a build's end is for other teams, and no queue need
    /// want it.
    pub async fn publish_event(&self, event: &Event) -> Result<(), PublishError> {
        let build = event.build();
        let properties =
            BasicProperties::default().with_correlation_id(build.id.to_string().into());
        self.publish_with(
            self.topology.events_exchange(),
            event.routing_key(),
            &wire::encode(event),
            properties,
            !matches!(event, Event::BuildFinished(_)),
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
        self.publish_with(
            self.topology.events_exchange(),
            event.routing_key(),
            &wire::encode(event),
            properties,
            false,
        )
        .await
    }

    /// Publishes a job to its platform's queue and waits for the broker to confirm it.
    pub async fn publish_job(&self, job: &JobRequested) -> Result<(), PublishError> {
        let properties = BasicProperties::default()
            .with_message_id(job.message_id().into())
            .with_correlation_id(job.build.id.to_string().into());
        self.publish(
            self.topology.jobs_exchange(),
            job.platform.label().to_owned(),
            &wire::encode(job),
            properties,
        )
        .await
    }

    async fn publish(
        &self,
        exchange: String,
        routing_key: String,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        self.publish_with(exchange, routing_key, body, properties, true)
            .await
    }

    async fn publish_with(
        &self,
        exchange: String,
        routing_key: String,
        body: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<(), PublishError> {
        let properties = properties
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        let options = BasicPublishOptions {
            mandatory,
            ..Default::default()
        };
        let confirm = self
            .publisher
            .basic_publish(
                exchange.into(),
                routing_key.as_str().into(),
                options,
                body,
                properties,
            )
            .await?
            .await?;
        if confirm.is_nack() {
            return Err(PublishError::Nacked);
        }
        // With `mandatory`, an unroutable message is acked *and* returned.
        if confirm.take_message().is_some() {
            return Err(PublishError::Unroutable(routing_key));
        }
        Ok(())
    }

    /// For each platform served: how many jobs wait in its queue, and how many workers take
    /// from it.
    pub async fn job_queues(&self) -> lapin::Result<Vec<(Platform, u32, u32)>> {
        // A channel of its own: a failed passive declare closes the channel it ran on.
        let channel = self.connection.create_channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let mut depths = Vec::new();
        for platform in &self.platforms {
            let queue = channel
                .queue_declare(
                    self.topology.jobs_queue(*platform).into(),
                    passive,
                    FieldTable::default(),
                )
                .await?;
            depths.push((*platform, queue.message_count(), queue.consumer_count()));
        }
        let _ = channel.close(200, "done".into()).await;
        Ok(depths)
    }

    /// Whether jobs for `platform` have a queue to go to.
    pub fn serves(&self, platform: Platform) -> bool {
        self.platforms.contains(&platform)
    }

    /// Starts consuming one of the bot's queues on a channel of its own, for `handlers`
    /// handling its messages at once.
    pub async fn consume(
        &self,
        queue: BotQueue,
        handlers: u16,
    ) -> lapin::Result<(Channel, Consumer)> {
        let t = &self.topology;
        let (queue, consumer_tag) = match queue {
            BotQueue::Builds => (t.bot_builds_queue(), "kiln-bot"),
            BotQueue::Events => (t.bot_events_queue(), "kiln-bot"),
            BotQueue::DeadJobs => (t.bot_dead_jobs_queue(), "kiln-bot-dead"),
        };
        let channel = self.connection.create_channel().await?;
        let prefetch = handlers.saturating_mul(PREFETCH_PER_HANDLER);
        channel
            .basic_qos(prefetch, BasicQosOptions { global: false })
            .await?;
        let consumer = channel
            .basic_consume(
                queue.into(),
                consumer_tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((channel, consumer))
    }
}

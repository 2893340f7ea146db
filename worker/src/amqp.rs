//! RabbitMQ for the worker: its platform's job queue in, task events out with confirms.
//!
//! The worker connects out to the broker (no inbound port), so it runs behind NAT on a
//! remote host. It declares what it uses, so it can start before the bot ever has.

use kiln_shared::platform::Platform;
use kiln_shared::routing::{JOB_DELIVERY_LIMIT, Topology};
use kiln_shared::wire::{self, Event};
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};

/// The worker's connection: a consumer channel and a publisher channel.
pub struct Broker {
    /// Kept for the life of the worker: dropping the connection silently ends its consumer.
    _connection: Connection,
    pub consumer_channel: Channel,
    publisher: Channel,
    topology: Topology,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("topology", &self.topology)
            .finish()
    }
}

/// A platform's job queue: quorum, with a delivery limit and the dead-letter exchange. Must
/// match the bot's declaration exactly, or RabbitMQ refuses the second one.
fn jobs_queue_arguments(topology: &Topology) -> FieldTable {
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
    /// Connects, declares the exchanges and `platform`'s queue, and starts consuming it with
    /// at most `slots` unacknowledged jobs.
    pub async fn connect(
        url: &str,
        topology: Topology,
        platform: Platform,
        slots: u16,
        name: &str,
    ) -> lapin::Result<(Self, Consumer)> {
        let properties = ConnectionProperties::default()
            .with_connection_name(name.into())
            .enable_auto_recover();
        let connection = open(url, properties).await?;
        let publisher = connection.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let t = &topology;
        publisher
            .exchange_declare(
                t.jobs_exchange().into(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await?;
        publisher
            .exchange_declare(
                t.events_exchange().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        publisher
            .exchange_declare(
                t.dead_exchange().into(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await?;
        let queue = t.jobs_queue(platform);
        let options = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        publisher
            .queue_declare(queue.as_str().into(), options, jobs_queue_arguments(t))
            .await?;
        publisher
            .queue_bind(
                queue.as_str().into(),
                t.jobs_exchange().into(),
                platform.label().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;

        let consumer_channel = connection.create_channel().await?;
        // Per consumer, never global: global QoS on a quorum queue is a connection error.
        consumer_channel
            .basic_qos(slots, BasicQosOptions { global: false })
            .await?;
        let consumer = consumer_channel
            .basic_consume(
                queue.as_str().into(),
                name.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let broker = Self {
            _connection: connection,
            consumer_channel,
            publisher,
            topology,
        };
        Ok((broker, consumer))
    }

    /// Publishes an event and waits for the broker's confirm; a returned (unroutable)
    /// message is an error.
    pub async fn publish_event(&self, event: &Event) -> anyhow::Result<()> {
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_correlation_id(event.build().id.to_string().into());
        let options = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let key = event.routing_key();
        let confirm = self
            .publisher
            .basic_publish(
                self.topology.events_exchange().into(),
                key.as_str().into(),
                options,
                &wire::encode(event),
                properties,
            )
            .await?
            .await?;
        anyhow::ensure!(confirm.is_ack(), "RabbitMQ did not confirm event {key}");
        anyhow::ensure!(
            confirm.take_message().is_none(),
            "no queue is bound for event {key}; is the bot's topology declared?"
        );
        Ok(())
    }
}

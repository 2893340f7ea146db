//! RabbitMQ as Kiln uses it: one connection per process, kept open through broker outages
//! ([`Link`]), messages published persistent and confirmed within a deadline, and the
//! arguments of the queues both the bot and the worker declare.

mod link;

pub use link::{BadUrl, Link, LinkState, Prepare, Preparing, Session};

use std::sync::Arc;
use std::time::Duration;

use kiln_shared::platform::Platform;
use kiln_shared::routing::{JOB_DELIVERY_LIMIT, Topology, job_key};
use lapin::options::{
    BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::tcp::{AsyncTcpStream, RustlsConnector};
use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::tls::Trust;

/// How long a publish waits for the broker's confirm. A confirm that does not come in this
/// time means a connection that is not working: it is replaced, and the caller told.
pub const CONFIRM_DEADLINE: Duration = Duration::from_secs(10);

/// Why a message was not taken by the broker.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("RabbitMQ is unreachable: {0}")]
    Down(String),
    #[error("RabbitMQ refused the message: {0}")]
    Broker(#[from] lapin::Error),
    #[error("RabbitMQ did not confirm the message within {CONFIRM_DEADLINE:?}")]
    Unconfirmed,
    /// The caller gave up waiting sooner: the message may still be confirmed later.
    #[error("RabbitMQ did not confirm the message within {0:?}")]
    NotWithin(std::time::Duration),
    #[error("RabbitMQ did not confirm the message (nack)")]
    Nacked,
    #[error("no queue is bound for routing key `{0}`; the message was returned")]
    Unroutable(String),
}

/// Whether the broker refused `error`'s operation for want of permission (AMQP 403,
/// `ACCESS_REFUSED`): the user's permissions, not the broker's state, are to blame.
pub fn is_access_refused(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 403)
}

/// A message to publish: persistent, JSON, confirmed.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub body: &'a [u8],
    /// Set on top of the content type and persistence every message has.
    pub properties: BasicProperties,
    /// Whether a message no queue is bound for is an error (returned by the broker).
    pub mandatory: bool,
}

impl Message<'_> {
    fn options(&self) -> BasicPublishOptions {
        BasicPublishOptions {
            mandatory: self.mandatory,
            ..Default::default()
        }
    }

    fn properties(&self) -> BasicProperties {
        self.properties
            .clone()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
    }
}

/// Declares each of `exchanges` (a name and its kind: `direct`, `topic`, `fanout`), durable,
/// on `channel`.
pub async fn declare_exchanges(
    channel: &Channel,
    exchanges: &[(String, &str)],
) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for (name, kind) in exchanges {
        let kind = match *kind {
            "direct" => ExchangeKind::Direct,
            "topic" => ExchangeKind::Topic,
            "fanout" => ExchangeKind::Fanout,
            other => ExchangeKind::Custom(other.to_owned()),
        };
        channel
            .exchange_declare(name.as_str().into(), kind, durable, FieldTable::default())
            .await?;
    }
    Ok(())
}

/// The arguments of a durable quorum queue (replicated, survives a broker restart).
pub fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args
}

/// Declares `platform`'s job queues (one per priority) on `channel`, each bound to the jobs
/// exchange by its key. The bot and the worker both declare them, with the same arguments,
/// or RabbitMQ refuses the second declaration.
pub async fn declare_job_queues(
    channel: &Channel,
    t: &Topology,
    platform: Platform,
) -> lapin::Result<()> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for (priority, queue) in t.jobs_queues(platform) {
        let arguments = jobs_queue_arguments(&t.dead_exchange(), JOB_DELIVERY_LIMIT);
        channel
            .queue_declare(queue.as_str().into(), durable, arguments)
            .await?;
        channel
            .queue_bind(
                queue.into(),
                t.jobs_exchange().into(),
                job_key(platform, priority).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// The arguments of a platform's job queue: quorum, and a delivery limit past which a
/// poison job goes to `dead_exchange` instead of looping forever.
fn jobs_queue_arguments(dead_exchange: &str, delivery_limit: i64) -> FieldTable {
    let mut args = quorum();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(dead_exchange.into()),
    );
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(delivery_limit),
    );
    args
}

/// The largest AMQP frame asked of the broker, unless the URL asks (`?frame_max=`). lapin
/// keeps read and write buffers of 32 frames per connection: at RabbitMQ's 128 KiB that is
/// 8 MiB, most of an idle process. Kiln's messages are small; a larger one takes more frames.
const FRAME_MAX: u32 = 16 * 1024;

/// Connects to `uri` once, asking for frames of at most [`FRAME_MAX`] unless it says
/// otherwise; over TLS for `amqps://`, the broker's certificate verified as `trust` says.
/// No automatic recovery: a [`Link`] replaces a connection that fails.
async fn open(mut uri: AMQPUri, name: &str, trust: &Trust) -> lapin::Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    uri.query.frame_max.get_or_insert(FRAME_MAX);
    if uri.scheme != AMQPScheme::AMQPS {
        return Connection::connect_uri(uri, properties).await;
    }
    // lapin's own TLS is compiled out (it would bring C code); the stream is made here with
    // Kiln's rustls configuration and handed to lapin's connector.
    let connector = Arc::new(RustlsConnector::from(trust.client_config()));
    let runtime = lapin::runtime::default_runtime()?;
    Connection::connector(
        uri,
        runtime,
        async move |uri: AMQPUri, runtime| {
            let host = uri.authority.host.as_str();
            let addresses: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host, uri.authority.port))
                    .await?
                    .collect();
            let plain = AsyncTcpStream::connect(&runtime, addresses).await?;
            let tls = plain.into_rustls(&connector, host).await.map_err(|error| {
                std::io::Error::new(error.kind(), format!("TLS with {host}: {error}"))
            })?;
            Ok(tls)
        },
        properties,
    )
    .await
}

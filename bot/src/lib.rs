//! kiln-bot: Kiln's control plane.
//!
//! Forge webhooks and chat commands come in over HTTP ([`http`]), are verified and
//! translated at each vendor's door ([`vendors`]) and accepted as builds ([`ingress`]) or
//! carried out ([`commands`]). The bot's own queues drive the
//! [`planner`], the [`scheduler`] and the [`notify`]er. State lives in Redis ([`store`]),
//! messages in RabbitMQ ([`amqp`]); the bot itself keeps nothing between requests.
//!
//! Invariant: only workers run tasks. The bot talks to Docker for one thing only, a `docker`
//! pool's environments ([`leases`]), which are to move to a worker.

pub mod amqp;
pub mod app;
pub mod commands;
pub mod comments;
pub mod config;
pub mod events;
pub mod forge;
pub mod health;
pub mod http;
pub mod ingress;
pub mod kept;
pub mod leases;
pub mod lifecycle;
pub mod logs;
pub mod metrics;
pub mod mirror;
pub mod notify;
pub mod outbox;
pub mod planner;
pub mod promotion;
pub mod reclaim;
pub mod reconcile;
pub mod repositories;
pub mod requests;
pub mod resources;
pub mod review;
pub mod scheduler;
pub mod schedules;
pub mod specs;
pub mod spool;
pub mod store;
pub mod supersede;
pub mod vendors;

use std::path::PathBuf;

use anyhow::Context as _;
use kiln_shared::platform::Platform;
use kiln_shared::routing::Topology;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use app::App;
pub use config::Config;

/// Where the bot's services are, and the names it uses in them.
#[derive(Debug, Clone)]
pub struct Connections {
    /// RabbitMQ (`amqps://` for TLS).
    pub amqp_url: String,
    /// Redis (`rediss://` for TLS).
    pub redis_url: String,
    /// The CA whose certificates RabbitMQ and Redis must present over TLS; the system's
    /// roots when `None`.
    pub tls_ca: Option<PathBuf>,
    /// Prefix of every queue, exchange and Redis key (`kiln` in production).
    pub prefix: String,
    /// Where the bot keeps its repository mirrors, and the deliveries it could not accept
    /// yet (`spool/`).
    pub state_dir: PathBuf,
    /// The platform labels whose job queues the bot declares, so jobs wait for a worker.
    pub platforms: Vec<Platform>,
}

/// Connects to Redis and RabbitMQ, declares the topology, and assembles the bot.
pub async fn connect(config: Config, connections: &Connections) -> anyhow::Result<App> {
    let trust = kiln_io::tls::Trust::load(connections.tls_ca.as_deref())?;
    let (client, redis) = kiln_io::redis::connect(&connections.redis_url, &trust)
        .await
        .with_context(|| {
            let url = kiln_io::tls::redacted(&connections.redis_url);
            format!("cannot connect to Redis at {url}")
        })?;
    let store = store::Store::open(client, redis, &connections.prefix)
        .await
        .context("cannot read the task names' secret from Redis")?;
    let broker = amqp::Broker::connect(
        &connections.amqp_url,
        &trust,
        Topology::new(&connections.prefix),
        &connections.platforms,
    )
    .await?;
    let mirrors = mirror::Mirrors::new(connections.state_dir.join("mirrors"));
    let spool = spool::Spool::new(connections.state_dir.join("spool"));
    App::new(config, store, broker, mirrors, spool)
}

/// Runs the bot (HTTP and the event loop) until `shutdown` is cancelled or one part fails.
pub async fn run(
    listener: TcpListener,
    app: App,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let stop = shutdown.child_token();
    let http = tokio::spawn(http::serve(listener, app.clone(), stop.clone()));
    let events = tokio::spawn(events::run(app, stop.clone()));
    // Whichever part ends first stops the other: half a bot is worse than none.
    let (http, events) = tokio::join!(
        async {
            let ended = http.await;
            stop.cancel();
            ended
        },
        async {
            let ended = events.await;
            stop.cancel();
            ended
        }
    );
    http.context("the HTTP server panicked")?
        .context("the HTTP server failed")?;
    events.context("the event loop panicked")?
}

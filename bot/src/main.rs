//! The `kiln-bot` command.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use kiln_shared::platform::Platform;
use tokio_util::sync::CancellationToken;

/// Kiln's control plane: webhooks in, builds planned and scheduled, results posted.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The configuration file (repositories, Discord).
    #[arg(long, env = "KILN_CONFIG", default_value = "kiln-bot.toml")]
    config: PathBuf,
    /// Address the HTTP server listens on.
    #[arg(long, env = "KILN_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// RabbitMQ: one URL, or the URLs of a cluster's nodes separated by commas (the
    /// connection goes to one and moves to the next when it ends).
    #[arg(
        long,
        env = "KILN_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
    /// Redis.
    #[arg(
        long,
        env = "KILN_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/"
    )]
    redis_url: String,
    /// A PEM file of the CA whose certificates RabbitMQ (`amqps://`) and Redis
    /// (`rediss://`) must present; default: the system's roots.
    #[arg(long, env = "KILN_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Prefix of every queue, exchange and Redis key.
    #[arg(long, env = "KILN_PREFIX", default_value = "kiln")]
    prefix: String,
    /// Where repository mirrors, and deliveries waiting for Redis and RabbitMQ, are kept.
    #[arg(long, env = "KILN_STATE_DIR", default_value = "/var/tmp/kiln/bot")]
    state_dir: PathBuf,
    /// Platform labels whose job queues are declared, comma-separated.
    #[arg(
        long,
        env = "KILN_PLATFORMS",
        value_delimiter = ',',
        default_value = "linux/amd64,linux/arm64,windows/amd64,macos/arm64"
    )]
    platforms: Vec<Platform>,
    /// Register Kiln's slash command (`/kiln`) with the Discord application in the
    /// configuration, then exit.
    #[arg(long)]
    register_discord_commands: bool,
    /// Read and check the configuration file FILE (secrets given by file or environment
    /// included), say what it configures, and exit: 0 if it is sound, 1 if not.
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
    /// `text`, or `json`: one object per line; those about a build's events carry its
    /// `build_id`.
    #[arg(long, env = "KILN_LOG_FORMAT", default_value = "text")]
    log_format: kiln_io::logging::Format,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    kiln_io::logging::init(args.log_format);
    if let Some(file) = &args.check_config {
        match kiln_bot::Config::load(file) {
            Ok(config) => {
                println!("{}: {}", file.display(), config.summary());
                return Ok(());
            }
            Err(error) => {
                eprintln!("kiln-bot --check-config: {error:#}");
                std::process::exit(1);
            }
        }
    }
    let config = kiln_bot::Config::load(&args.config)?;
    if args.register_discord_commands {
        let discord = config
            .discord
            .as_ref()
            .and_then(|d| {
                kiln_bot::vendors::discord::interactions::Interactions::new(d).transpose()
            })
            .context("[discord] needs `public_key` and `application_id` to register commands")??;
        let names = discord.register().await?;
        println!("registered with Discord: /{}", names.join(", /"));
        return Ok(());
    }
    let connections = kiln_bot::Connections {
        amqp_url: args.amqp_url,
        redis_url: args.redis_url,
        tls_ca: args.tls_ca,
        prefix: args.prefix,
        state_dir: args.state_dir,
        platforms: args.platforms,
    };
    let app = kiln_bot::connect(config, &connections).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let shutdown = CancellationToken::new();
    // Whatever it is waiting for, the bot is gone within the grace; it says it listens once
    // a stop would be heard.
    let running = kiln_io::signal::run_until_stopped(
        kiln_bot::run(listener, app, shutdown.clone()),
        shutdown,
    );
    tracing::info!(address = %args.listen, "kiln-bot listening");
    running.await?
}

//! The `kiln-worker` command.

use std::path::PathBuf;

use clap::Parser;
use tokio_util::sync::CancellationToken;

/// Takes jobs for one platform from RabbitMQ and runs them in Docker.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// RabbitMQ.
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
    /// Prefix of every queue, exchange, Redis key and container name.
    #[arg(long, env = "KILN_PREFIX", default_value = "kiln")]
    prefix: String,
    /// The platform whose jobs this worker takes.
    #[arg(long, env = "KILN_PLATFORM", default_value = "linux-amd64")]
    platform: String,
    /// How many tasks run at once.
    #[arg(long, env = "KILN_SLOTS", default_value_t = 2)]
    slots: u16,
    /// The worker's name in task records; default: host name and process id.
    #[arg(long, env = "KILN_WORKER_NAME")]
    name: Option<String>,
    /// Where mirrors and work directories are kept.
    #[arg(long, env = "KILN_STATE_DIR", default_value = "/var/tmp/kiln/worker")]
    state_dir: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let name = args.name.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "worker".into());
        format!("{}-{}", host.trim(), std::process::id())
    });
    let settings = kiln_worker::Settings {
        amqp_url: args.amqp_url,
        redis_url: args.redis_url,
        prefix: args.prefix,
        platform: args.platform,
        slots: args.slots.max(1),
        name,
        state_dir: args.state_dir,
    };
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_signal.cancel();
    });
    kiln_worker::run(settings, shutdown).await
}

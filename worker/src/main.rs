//! The `kiln-worker` command.

use std::path::PathBuf;

use clap::Parser;
use kiln_shared::build::BuildStatus;
use kiln_shared::platform::Platform;
use kiln_worker::artifacts::ArtifactStore;
use kiln_worker::blobs::Blobs;
use kiln_worker::docker::{DockerRunner, Registries};

/// Kiln's worker: takes jobs for one platform from RabbitMQ and runs them in Docker or the
/// shell; `kiln-worker run` runs a repository's pipeline right here, with no server;
/// `kiln-worker gc` frees disk; `kiln-worker export` packs a build for an offline machine.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Option<Subcommand>,
    /// `text`, or `json`: one object per line; those about a job carry its build's
    /// `build_id`.
    #[arg(long, global = true, env = "KILN_LOG_FORMAT", default_value = "text")]
    log_format: kiln_io::logging::Format,
    #[command(flatten)]
    serve: Serve,
}

#[derive(Debug, clap::Subcommand)]
enum Subcommand {
    /// Plans and runs the pipeline of the repository here (its `.kiln.yml`) on this machine:
    /// in Docker if an engine answers, in the shell otherwise. Exits 1 if it fails, 2 if it
    /// cannot run (no repository, a broken `.kiln.yml`).
    Run {
        /// A directory inside the repository.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// How many tasks run at once; default: the number of CPUs.
        #[arg(long)]
        slots: Option<usize>,
        /// Run every task in the shell, even if Docker answers.
        #[arg(long)]
        shell: bool,
        /// Where artifacts and caches are kept between runs.
        #[arg(long, env = "KILN_STORE_DIR", default_value = "/var/tmp/kiln/store")]
        store_dir: PathBuf,
    },
    /// Removes in-tree images, artifacts and cache entries unused for longer than
    /// `--max-age`, then the least recently used until each kind fits `--max-size-gib`.
    /// Each branch's newest image stays. With `--registry`, collects the installation's
    /// registry instead of this host: the image tags of branches that are gone go, and the
    /// images no branch names that were made longer than `--max-age` ago.
    Gc {
        /// E.g. `14d`, `12h`.
        #[arg(long, default_value = "14d", value_parser = humantime::parse_duration)]
        max_age: std::time::Duration,
        /// Per kind: images, artifacts, caches.
        #[arg(long, default_value_t = 50)]
        max_size_gib: u64,
        /// Only say what would go.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, env = "KILN_STORE_DIR", default_value = "/var/tmp/kiln/store")]
        store_dir: PathBuf,
        /// The installation's registry (`host[:port]`) to collect; one host's timer is
        /// enough for the whole fleet.
        #[arg(long)]
        registry: Option<String>,
        /// A Docker `config.json` with credentials that may delete from it.
        #[arg(long, env = "KILN_REGISTRY_AUTH")]
        registry_auth: Option<PathBuf>,
        /// The bot, which says which branches exist (`/api/repositories`).
        #[arg(long, env = "KILN_BOT_URL", default_value = "http://127.0.0.1:8080")]
        bot_url: String,
        /// An operator's token for the bot (`[[operator]]` in its configuration).
        #[arg(long, env = "KILN_BOT_TOKEN", hide_env_values = true)]
        bot_token: Option<String>,
    },
    /// Makes a worker's own RabbitMQ and Redis users, which may do what a worker does and
    /// nothing more (take its platform's jobs, publish `task.*` events, store task records
    /// and logs), and prints its URLs. Run it where `rabbitmqctl` reaches the broker, with a
    /// Redis URL that may manage ACL users. Again for the same name: new passwords.
    Credentials {
        /// The worker's (or pool's) name: letters, digits, `-`, `_`.
        name: String,
        /// The platform whose jobs it takes.
        #[arg(long, env = "KILN_PLATFORM", default_value = "linux/amd64")]
        platform: Platform,
        #[arg(long, env = "KILN_PREFIX", default_value = "kiln")]
        prefix: String,
        /// RabbitMQ's virtual host.
        #[arg(long, default_value = "/")]
        vhost: String,
        /// A Redis URL whose user may manage ACL users.
        #[arg(
            long,
            env = "KILN_REDIS_URL",
            default_value = "redis://127.0.0.1:6379/"
        )]
        redis_url: String,
        #[arg(long, env = "KILN_TLS_CA")]
        tls_ca: Option<PathBuf>,
        #[arg(long, default_value = "rabbitmqctl")]
        rabbitmqctl: PathBuf,
        /// The broker as the worker reaches it (a cluster's nodes separated by commas), for
        /// the printed URL.
        #[arg(long, default_value = "amqps://127.0.0.1:5671/%2f")]
        worker_amqp_url: String,
        /// Redis as the worker reaches it, for the printed URL.
        #[arg(long, default_value = "rediss://127.0.0.1:6380/")]
        worker_redis_url: String,
        /// Delete the worker's users instead.
        #[arg(long)]
        revoke: bool,
    },
    /// Writes a build's manifest, in-tree images and artifacts to a tarball; on a machine
    /// with no network, `tar -xf` it and `docker load -i images.tar`.
    Export {
        /// The build's number.
        build: u64,
        /// The tarball to write; default: `kiln-build-<build>.tar`.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// The bot, whose `/builds/<build>/manifest` lists what to export.
        #[arg(long, env = "KILN_BOT_URL", default_value = "http://127.0.0.1:8080")]
        bot_url: String,
        /// Where artifacts are when there is no `--registry`.
        #[arg(long, env = "KILN_STORE_DIR", default_value = "/var/tmp/kiln/store")]
        store_dir: PathBuf,
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

/// Serving jobs from RabbitMQ (the default).
#[derive(Debug, clap::Args)]
struct Serve {
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
    /// Prefix of every queue, exchange, Redis key and container name.
    #[arg(long, env = "KILN_PREFIX", default_value = "kiln")]
    prefix: String,
    /// The platform whose jobs this worker takes.
    #[arg(long, env = "KILN_PLATFORM", default_value = "linux/amd64")]
    platform: Platform,
    /// How many tasks run at once.
    #[arg(long, env = "KILN_SLOTS", default_value_t = 2)]
    slots: u16,
    /// The worker's name in task records; default: host name and process id.
    #[arg(long, env = "KILN_WORKER_NAME")]
    name: Option<String>,
    /// Where mirrors and work directories are kept; each worker needs its own.
    #[arg(long, env = "KILN_STATE_DIR", default_value = "/var/tmp/kiln/worker")]
    state_dir: PathBuf,
    /// How a task's work directory is made from its commit's checkout: `overlay` mounts
    /// one (Linux, root or CAP_SYS_ADMIN), `copy` copies every file, `auto` an overlay
    /// where it can be mounted. Choose `copy` when the Docker engine does not see the
    /// worker's mounts (it runs in another mount namespace).
    #[arg(long, env = "KILN_WORK_DIRS", value_enum, default_value_t)]
    work_dirs: kiln_worker::checkout::WorkDirs,
    /// Where artifacts and caches are kept when there is no `--registry`; every worker of
    /// such an installation must see the same directory (a network mount across hosts).
    #[arg(long, env = "KILN_STORE_DIR", default_value = "/var/tmp/kiln/store")]
    store_dir: PathBuf,
    /// Where secret values are, one file per name (e.g. `/etc/kiln/secrets/DEPLOY_TOKEN`);
    /// a secret with no file is read from `KILN_SECRET_<NAME>` in the worker's environment.
    #[arg(long, env = "KILN_SECRETS_DIR")]
    secrets_dir: Option<PathBuf>,
    /// The host testers reach this worker's leased environments (`env request`) at; their
    /// ports are published on every interface, or on loopback when this is a loopback
    /// address. Default: the host name.
    #[arg(long, env = "KILN_ADVERTISE_HOST")]
    advertise_host: Option<String>,
    /// On SIGTERM the worker takes no new job and lets those it runs finish for this long;
    /// past it, or at a second signal, it stops them and they run again elsewhere.
    #[arg(long, env = "KILN_DRAIN_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    drain_timeout: std::time::Duration,
    /// Where to serve `GET /metrics` for Prometheus (e.g. `0.0.0.0:9101`); off by default.
    #[arg(long, env = "KILN_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// On Linux, the unprivileged user `runner: shell` tasks run as when the worker runs as
    /// root; it must exist. A worker that is not root runs them as itself.
    #[arg(long, env = "KILN_TASK_USER", default_value = "kiln-task")]
    task_user: String,
    /// A directory sandboxed shell tasks may read and write beside their work directory
    /// (e.g. a tool cache builds share); repeat it, or separate several with commas.
    #[arg(long, env = "KILN_TASK_SHARE", value_delimiter = ',')]
    task_share: Vec<PathBuf>,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// The installation's registry and the credentials of the registries a worker uses.
#[derive(Debug, clap::Args)]
struct RegistryArgs {
    /// The installation's registry (`host[:port]`): in-tree images built by one worker are
    /// pushed there and pulled by the others instead of built again; artifacts and caches
    /// are kept there.
    #[arg(long, env = "KILN_REGISTRY")]
    registry: Option<String>,
    /// A Docker `config.json` whose `auths` hold the credentials of the registries the
    /// worker pulls from and pushes to.
    #[arg(long, env = "KILN_REGISTRY_AUTH")]
    registry_auth: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    kiln_io::logging::init(args.log_format);
    match args.command {
        Some(Subcommand::Run {
            dir,
            slots,
            shell,
            store_dir,
        }) => run_here(dir, slots, shell, store_dir).await,
        Some(Subcommand::Gc {
            max_age,
            max_size_gib,
            dry_run,
            store_dir,
            registry,
            registry_auth,
            bot_url,
            bot_token,
        }) => {
            let verb = if dry_run { "would be " } else { "" };
            if registry.is_some() {
                let registries = Registries::load(registry, registry_auth.as_deref())
                    .map_err(anyhow::Error::msg)?;
                let oci = registries.store().expect("a registry was given");
                let token = bot_token.ok_or_else(|| {
                    anyhow::anyhow!("--registry needs --bot-token (KILN_BOT_TOKEN), an operator's")
                })?;
                let bot = kiln_worker::gc::registry::Bot {
                    url: bot_url,
                    token,
                };
                let pruned =
                    kiln_worker::gc::registry::collect(&oci, &bot, max_age, dry_run).await?;
                println!("registry ({verb}{pruned})");
                return Ok(());
            }
            let docker = local_docker().await;
            if docker.is_none() {
                eprintln!("kiln-worker gc: no Docker engine answers; images are left alone");
            }
            let policy = kiln_worker::gc::Policy {
                max_age,
                max_bytes: max_size_gib.saturating_mul(1 << 30),
            };
            let report =
                kiln_worker::gc::collect(docker.as_ref(), &store_dir, policy, dry_run).await?;
            println!("images ({verb}{})", report.images);
            println!("artifacts ({verb}{})", report.artifacts);
            println!("caches ({verb}{})", report.caches);
            Ok(())
        }
        Some(Subcommand::Export {
            build,
            output,
            bot_url,
            store_dir,
            registry,
        }) => {
            let registries = Registries::load(registry.registry, registry.registry_auth.as_deref())
                .map_err(anyhow::Error::msg)?;
            let store = match registries.store() {
                Some(oci) => ArtifactStore::Registry(oci),
                None => ArtifactStore::Directory(Blobs::new(store_dir.join("artifacts"))),
            };
            let docker = DockerRunner::connect("kiln-export", registries, None)
                .await
                .map_err(|e| anyhow::anyhow!("exporting images needs a Docker engine: {e}"))?;
            let out = output.unwrap_or_else(|| format!("kiln-build-{build}.tar").into());
            let exported =
                kiln_worker::export::export(&bot_url, build, &docker, &store, &out).await?;
            println!(
                "{}: build {build}, {} image(s), {} artifact(s), {:.1} MiB",
                out.display(),
                exported.manifest.images.len(),
                exported.manifest.artifacts.len(),
                exported.bytes as f64 / (1024.0 * 1024.0)
            );
            Ok(())
        }
        Some(Subcommand::Credentials {
            name,
            platform,
            prefix,
            vhost,
            redis_url,
            tls_ca,
            rabbitmqctl,
            worker_amqp_url,
            worker_redis_url,
            revoke,
        }) => {
            let request = kiln_worker::credentials::Request {
                name,
                platform,
                prefix,
                vhost,
                rabbitmqctl,
                redis_admin_url: redis_url,
                tls_ca,
            };
            if revoke {
                kiln_worker::credentials::revoke(&request).await?;
                eprintln!("kiln-worker credentials: {} revoked", request.name);
                return Ok(());
            }
            let issued = kiln_worker::credentials::issue(&request).await?;
            eprintln!(
                "kiln-worker credentials: user {} for {}; give the worker these (and \
                 KILN_TLS_CA, the CA of the services' certificates):",
                issued.user, request.platform
            );
            println!("KILN_PLATFORM={}", request.platform);
            println!("KILN_PREFIX={}", request.prefix);
            println!(
                "KILN_AMQP_URL={}",
                issued.url(&worker_amqp_url, &issued.amqp_password)
            );
            println!(
                "KILN_REDIS_URL={}",
                issued.url(&worker_redis_url, &issued.redis_password)
            );
            Ok(())
        }
        None => serve(args.serve).await,
    }
}

/// The local Docker engine, if one answers.
async fn local_docker() -> Option<bollard::Docker> {
    let docker = bollard::Docker::connect_with_local_defaults().ok()?;
    docker.negotiate_version().await.ok()
}

/// `kiln-worker run`; exits 0 if the pipeline passed, 1 if it did not, 2 if it could not be
/// run at all.
async fn run_here(dir: PathBuf, slots: Option<usize>, shell: bool, store_dir: PathBuf) -> ! {
    let options = kiln_worker::local::Options {
        dir,
        slots: slots.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
        }),
        shell_only: shell,
        store_dir,
    };
    let code = match kiln_worker::local::run(&options).await {
        Ok(report) if report.status == BuildStatus::Passed => 0,
        Ok(_) => 1,
        Err(error) => {
            eprintln!("kiln-worker run: {error:#}");
            2
        }
    };
    std::process::exit(code);
}

async fn serve(args: Serve) -> anyhow::Result<()> {
    let host = kiln_worker::host_name();
    let name = args
        .name
        .unwrap_or_else(|| format!("{host}-{}", std::process::id()));
    let settings = kiln_worker::Settings {
        amqp_url: args.amqp_url,
        redis_url: args.redis_url,
        tls_ca: args.tls_ca,
        prefix: args.prefix,
        platform: args.platform,
        slots: args.slots.max(1),
        name,
        state_dir: args.state_dir,
        work_dirs: args.work_dirs,
        store_dir: args.store_dir,
        secrets_dir: args.secrets_dir,
        advertise_host: args.advertise_host.unwrap_or_else(|| host.to_owned()),
        registry: args.registry.registry,
        registry_auth: args.registry.registry_auth,
        docker_host: None,
        metrics_listen: args.metrics_listen,
        task_user: Some(args.task_user),
        task_shares: args.task_share,
    };
    let stopping = kiln_worker::Stopping::new();
    let (drain, now) = (stopping.clone(), stopping.clone());
    // Whatever it is waiting for once told to stop now, the worker is gone within the
    // grace; its jobs, not acknowledged, go to another worker.
    kiln_io::signal::run_until_drained(
        kiln_worker::run(settings, stopping),
        move || drain.drain(),
        move || now.now(),
        args.drain_timeout,
    )
    .await?
}

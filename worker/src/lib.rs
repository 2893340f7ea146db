//! kiln-worker: takes jobs for its platform from RabbitMQ and runs them.
//!
//! Each job follows one lifecycle ([`job`]): claim it in Redis ([`store`]), check the commit
//! out from a mirror cache ([`checkout`]), run it in a container ([`docker`]) while its output
//! streams to Redis line by line ([`lines`]), record the outcome, publish it ([`amqp`]), and
//! only then acknowledge the job.
//!
//! Invariant: the worker never talks to a chat API, and it has no inbound port unless its
//! metrics are asked for (`--metrics-listen`).

pub mod amqp;
pub mod artifacts;
pub mod blobs;
pub mod cache;
pub mod checkout;
pub mod confine;
pub mod credentials;
pub mod docker;
pub mod environment;
pub mod export;
pub mod gc;
pub mod job;
pub mod lines;
pub mod local;
pub mod metrics;
pub mod presence;
pub mod secrets;
pub mod shell;
pub mod slots;
pub mod store;
pub mod task;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use futures_util::StreamExt;
use kiln_shared::keys::Keys;
use kiln_shared::platform::Platform;
use kiln_shared::priority::Priority;
use kiln_shared::routing::Topology;
use lapin::message::Delivery;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How a worker is set up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// RabbitMQ (`amqps://` for TLS); it carries the worker's credentials.
    pub amqp_url: String,
    /// Redis (`rediss://` for TLS); it carries the worker's credentials.
    pub redis_url: String,
    /// The CA whose certificates RabbitMQ and Redis must present over TLS; the system's
    /// roots when `None`.
    pub tls_ca: Option<PathBuf>,
    /// Prefix of every queue, exchange, Redis key and container name (`kiln` in production).
    pub prefix: String,
    /// The platform whose jobs this worker takes.
    pub platform: Platform,
    /// How many tasks run at once.
    pub slots: u16,
    /// The worker's name in task records and events.
    pub name: String,
    /// Where mirrors and work directories are kept; one worker's own.
    pub state_dir: PathBuf,
    /// How a task's work directory is made from its commit's checkout.
    pub work_dirs: checkout::WorkDirs,
    /// Where artifacts and caches are kept without a registry: shared by every worker of
    /// such an installation (a network mount when they are on several hosts).
    pub store_dir: PathBuf,
    /// Where secret values are, one file per name; the worker's environment
    /// (`KILN_SECRET_<NAME>`) is read when a file is missing.
    pub secrets_dir: Option<PathBuf>,
    /// The host testers reach this worker's leased environments at, named in their
    /// details: the worker's host name in production, `127.0.0.1` on one machine.
    pub advertise_host: String,
    /// The installation's registry (`host[:port]`), where in-tree images are shared.
    pub registry: Option<String>,
    /// A Docker `config.json` with the credentials of the registries the worker uses.
    pub registry_auth: Option<PathBuf>,
    /// The Docker engine (`unix:///…`, `tcp://…`); the local default (`DOCKER_HOST`, else
    /// the standard socket) when none.
    pub docker_host: Option<String>,
    /// Where to serve `GET /metrics`; nowhere when none (the worker then has no inbound
    /// port).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The unprivileged user `runner: shell` tasks run as when the worker is root (Linux);
    /// as the worker's own user when none.
    pub task_user: Option<String>,
    /// Directories a sandboxed shell task may read and write beside its work directory.
    pub task_shares: Vec<PathBuf>,
}

/// A running worker's parts, shared by its jobs.
#[derive(Debug)]
pub struct Worker {
    pub name: String,
    pub prefix: String,
    pub store: store::Store,
    pub broker: amqp::Broker,
    pub checkouts: checkout::Checkouts,
    /// The Docker engine; a worker for a platform without containers may have none.
    pub docker: Option<docker::DockerRunner>,
    /// Where artifacts are kept: the installation's registry, or the store directory.
    pub artifacts: artifacts::ArtifactStore,
    /// The cache entries.
    pub caches: cache::Caches,
    pub secrets: secrets::Secrets,
    /// How its shell tasks are kept from it.
    pub sandbox: shell::Sandbox,
    /// The jobs it holds now, for its presence.
    pub running: presence::Running,
    /// The host testers reach its environments at ([`Settings::advertise_host`]).
    pub advertise_host: String,
    pub metrics: metrics::Metrics,
}

/// How a worker is asked to stop: to drain (take no new job, let those it holds finish),
/// then, or at once, to stop now (interrupt them: unacknowledged, they go to another worker).
#[derive(Debug, Clone)]
pub struct Stopping {
    now: CancellationToken,
    drain: CancellationToken,
}

impl Stopping {
    pub fn new() -> Self {
        CancellationToken::new().into()
    }

    /// Takes no new job from now on.
    pub fn drain(&self) {
        self.drain.cancel();
    }

    /// Interrupts the jobs held and stops; draining too.
    pub fn now(&self) {
        self.now.cancel();
    }
}

impl Default for Stopping {
    fn default() -> Self {
        Self::new()
    }
}

/// Stopping `now` when that token is cancelled, never draining first.
impl From<CancellationToken> for Stopping {
    fn from(now: CancellationToken) -> Self {
        // Stopping now stops taking jobs too.
        let drain = now.child_token();
        Self { now, drain }
    }
}

/// Runs a worker until it is stopped ([`Stopping`]; a plain token stops it at once). Jobs
/// interrupted are left unacknowledged, so RabbitMQ gives them to another worker.
pub async fn run(settings: Settings, stopping: impl Into<Stopping>) -> anyhow::Result<()> {
    let Stopping {
        now: shutdown,
        drain,
    } = stopping.into();
    let trust = kiln_io::tls::Trust::load(settings.tls_ca.as_deref())?;
    let (_, redis) = kiln_io::redis::connect(&settings.redis_url, &trust)
        .await
        .with_context(|| {
            let url = kiln_io::tls::redacted(&settings.redis_url);
            format!("cannot connect to Redis at {url}")
        })?;
    let registries =
        docker::Registries::load(settings.registry.clone(), settings.registry_auth.as_deref())
            .map_err(anyhow::Error::msg)?;
    let engine = settings.docker_host.as_deref();
    // With an installation registry, artifacts and caches go there: any host can use them.
    let (artifacts, caches) = match registries.store() {
        Some(oci) => (
            artifacts::ArtifactStore::Registry(oci.clone()),
            cache::Caches::in_registry(oci),
        ),
        None => (
            artifacts::ArtifactStore::Directory(blobs::Blobs::new(
                settings.store_dir.join("artifacts"),
            )),
            cache::Caches::new(settings.store_dir.join("cache")),
        ),
    };
    let docker = match docker::DockerRunner::connect(&settings.prefix, registries, engine).await {
        Ok(docker) => Some(docker.for_state(state_identity(&settings.state_dir))),
        Err(error) if !settings.platform.has_containers() => {
            tracing::info!(%error, "no Docker engine: this worker runs shell tasks only");
            None
        }
        Err(error) => return Err(error).context("cannot connect to Docker"),
    };
    // Everything of the worker's a task must not read, should it lie where tasks can look.
    let hidden = [Some(&settings.state_dir), Some(&settings.store_dir)]
        .into_iter()
        .chain([
            settings.secrets_dir.as_ref(),
            settings.registry_auth.as_ref(),
        ])
        .flatten()
        .cloned()
        .chain([PathBuf::from("/etc/kiln")])
        .collect();
    let sandbox = shell::Sandbox::prepare(shell::Confinement {
        task_user: settings.task_user.clone(),
        hidden,
        shared: settings.task_shares.clone(),
        work_root: checkout::work_root(&settings.state_dir),
    })
    .await?;
    let checkouts =
        checkout::Checkouts::open(&settings.state_dir, settings.work_dirs, sandbox.owner())
            .await
            .context("cannot prepare the work directories")?;
    // What a killed worker on this state directory left running goes before this one says
    // it is here: a job given again waits for that, and must not run beside its task.
    #[cfg(target_os = "linux")]
    match shell::end_leftover_sandboxes(&checkout::work_root(&settings.state_dir)) {
        0 => {}
        ended => tracing::info!(
            ended,
            "killed the sandboxes a killed worker on this state directory left"
        ),
    }
    if let Some(docker) = &docker {
        match docker.remove_leftovers().await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(
                removed,
                "removed the task containers a killed worker on this state directory left"
            ),
            Err(error) => {
                tracing::warn!(%error, "cannot look for the task containers a killed worker on this state directory left")
            }
        }
    }
    let metrics_listener = match settings.metrics_listen {
        Some(addr) => Some(metrics::bind(addr).await?),
        None => None,
    };
    let broker = amqp::Broker::connect(
        &settings.amqp_url,
        &trust,
        Topology::new(&settings.prefix),
        settings.platform,
        settings.slots,
        &settings.name,
    )
    .await
    .context("cannot connect to RabbitMQ")?;
    let worker = Arc::new(Worker {
        name: settings.name.clone(),
        prefix: settings.prefix.clone(),
        store: store::Store::new(redis, Keys::new(&settings.prefix)),
        broker,
        checkouts,
        docker,
        artifacts,
        caches,
        secrets: secrets::Secrets::new(settings.secrets_dir.clone()),
        sandbox,
        running: presence::Running::default(),
        advertise_host: settings.advertise_host.clone(),
        metrics: metrics::Metrics::default(),
    });
    worker.metrics.slots.set(i64::from(settings.slots));
    tracing::info!(worker = %worker.name, platform = %settings.platform, slots = settings.slots, shell = %worker.sandbox.describe(), work_dirs = if worker.checkouts.overlays() { "overlays" } else { "copies" }, "worker ready");

    let jobs = TaskTracker::new();
    let beat_until = CancellationToken::new();
    let heartbeat = {
        let worker = worker.clone();
        let (draining, stop) = (drain.clone(), beat_until.clone());
        tokio::spawn(async move {
            presence::beat(&worker, settings.platform, settings.slots, draining, stop).await;
        })
    };
    let reaper = tokio::spawn(environment::reap(worker.clone(), shutdown.clone()));
    let metrics = metrics_listener
        .map(|listener| tokio::spawn(metrics::serve(worker.clone(), listener, beat_until.clone())));
    let slots = slots::Slots::new(usize::from(settings.slots));
    // Each broker connection's consumers in turn: jobs in hand when one is lost run on, and
    // RabbitMQ's copies of them wait for those runs (see `job::handle_delivery`).
    // The channel of the session a drain ended: kept open until the jobs it holds are done,
    // so that they are not given to another worker meanwhile.
    let mut drained_on = None;
    'sessions: while let Some((session, channel, consumers)) = worker.broker.consume(&drain).await {
        let mut deliveries = Deliveries::of(consumers);
        // Cancelled when this session's consumers are left, whatever the reason: its jobs
        // still waiting for a slot are RabbitMQ's again (their channel closes), not to run.
        let left = CancellationToken::new();
        let _left = left.clone().drop_guard();
        loop {
            let next = tokio::select! {
                () = drain.cancelled() => {
                    if !shutdown.is_cancelled() {
                        // A broker that does not answer (frozen, cut off) must not keep the
                        // worker from draining: what it sends later goes back when the
                        // worker's connection closes.
                        tokio::select! {
                            () = stop_consuming(&channel, deliveries) => {}
                            () = shutdown.cancelled() => {}
                            () = tokio::time::sleep(CANCEL_WITHIN) => {
                                tracing::warn!("the broker did not confirm that it sends no more jobs");
                            }
                        }
                    }
                    drained_on = Some(channel);
                    break 'sessions;
                }
                () = session.broken() => continue 'sessions,
                next = deliveries.stream.next() => next.flatten(),
            };
            match next {
                Some((priority, Ok(delivery))) => {
                    let (worker, slots) = (worker.clone(), slots.clone());
                    let (shutdown, drain, left) = (shutdown.clone(), drain.clone(), left.clone());
                    jobs.spawn(async move {
                        // A job waiting for a slot when the worker drains goes back (its channel
                        // is kept open for that); one whose session is gone is back already.
                        let slot = tokio::select! {
                            biased;
                            () = drain.cancelled() => return hand_back(delivery).await,
                            () = left.cancelled() => return,
                            slot = slots.take(priority) => slot,
                        };
                        job::handle_delivery(&worker, delivery, shutdown).await;
                        drop(slot);
                    });
                }
                Some((_, Err(error))) => {
                    session.fail(&format!("consuming jobs: {error}"));
                    continue 'sessions;
                }
                None => {
                    if !session.is_broken() {
                        tracing::warn!("the broker ended the consumer; starting it again");
                        tokio::select! {
                            () = drain.cancelled() => break 'sessions,
                            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                        }
                    }
                    continue 'sessions;
                }
            }
        }
    }
    jobs.close();
    let _drained_on = drained_on;
    if !shutdown.is_cancelled() && !jobs.is_empty() {
        tracing::info!(
            jobs = jobs.len(),
            "draining: taking no new job, finishing those held"
        );
    }
    jobs.wait().await;
    // The worker has stopped taking jobs: it is no longer there, whatever ended the loop.
    beat_until.cancel();
    let _ = heartbeat.await;
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    reaper.abort();
    let _ = reaper.await;
    if let Err(error) = worker.store.say_gone(&worker.name).await {
        tracing::warn!(%error, "cannot take this worker's presence back");
    }
    Ok(())
}

/// How long a draining worker waits for the broker to confirm that it sends no more jobs.
const CANCEL_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// The jobs of a session's consumers, each with its queue's priority, as they come; `None`
/// as soon as one of the consumers has ended.
struct Deliveries {
    tags: Vec<lapin::types::ShortString>,
    stream: futures_util::stream::SelectAll<futures_util::stream::BoxStream<'static, Next>>,
}

/// A job from one of the consumers, or `None` when that consumer has ended.
type Next = Option<(Priority, lapin::Result<Delivery>)>;

impl Deliveries {
    fn of(consumers: Vec<(Priority, lapin::Consumer)>) -> Self {
        let tags = consumers.iter().map(|(_, c)| c.tag()).collect();
        let stream =
            futures_util::stream::select_all(consumers.into_iter().map(|(priority, consumer)| {
                let end = futures_util::stream::once(async { None });
                consumer
                    .map(move |d| Some((priority, d)))
                    .chain(end)
                    .boxed()
            }));
        Self { tags, stream }
    }
}

/// Tells the broker to send this worker no more jobs, and hands back those it had sent but
/// the worker had not started.
async fn stop_consuming(channel: &lapin::Channel, mut deliveries: Deliveries) {
    for tag in &deliveries.tags {
        let cancel = lapin::options::BasicCancelOptions::default();
        if let Err(error) = channel.basic_cancel(tag.clone(), cancel).await {
            // The channel is gone: what it had sent goes back to the queue by itself.
            tracing::warn!(%error, "cannot cancel the job consumer");
            return;
        }
    }
    let bound = std::time::Duration::from_secs(5);
    let mut ended = 0;
    while ended < deliveries.tags.len() {
        match tokio::time::timeout(bound, deliveries.stream.next()).await {
            Ok(Some(Some((_, Ok(delivery))))) => hand_back(delivery).await,
            Ok(Some(None)) => ended += 1,
            _ => return,
        }
    }
}

/// Gives a job not started back to its queue, for another worker.
async fn hand_back(delivery: Delivery) {
    let requeue = lapin::options::BasicNackOptions {
        requeue: true,
        ..Default::default()
    };
    if let Err(error) = delivery.nack(requeue).await {
        tracing::warn!(%error, "cannot hand back a job not started");
    }
}

/// This machine's (or container's) host name, `worker` when it has none to read.
pub fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|host| host.trim().to_owned())
        .unwrap_or_else(|_| "worker".into())
}

/// Which worker state directory this is, on any engine: its host and path (a worker started
/// again on it may take another name; workers in containers of one host share a path).
fn state_identity(state_dir: &std::path::Path) -> String {
    let dir = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_owned());
    format!("{}:{}", host_name(), dir.display())
}

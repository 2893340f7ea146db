//! The Docker runner: one container per task, through the Engine API (bollard).
//!
//! Lifecycle: start the task's services on a private network of its own → create the task's
//! container (with limits, the checkout mounted at `/workspace`, on that network or on none)
//! → start → stream stdout and stderr lines → wait for the exit code → remove containers and
//! network, whatever happened. A non-zero exit is a failed task; a Docker fault is an errored
//! one. Everything carries the `kiln.build` label, and a worker's tasks' containers and
//! networks its installation and state directory (`kiln.worker-state`), so that the next
//! worker on that directory removes what a killed one left.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    ListNetworksOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use kiln_shared::build::TaskOutcome;
use kiln_shared::plan::PlannedService;
use kiln_shared::spec::Network;
use kiln_shared::wire::JobRequested;

use crate::lines::{Batches, Fd, LineSplitter, LogSink, note, pipelined};

mod environment;
mod image;
mod pull;
mod registry;

pub use environment::{INSTALLATION_LABEL, LEASE_LABEL, Published};
pub use image::image_repository;
pub use pull::ImageError;
pub use registry::{Refused, Registries, registry_of};

/// Where the checkout is mounted in a task's container, and its working directory.
pub const WORKSPACE: &str = "/workspace";

/// The label naming the worker state directory (`host:path`) whose task a container or
/// network is.
pub const STATE_LABEL: &str = "kiln.worker-state";

/// Memory a task's container may use before the kernel kills it.
const MEMORY_LIMIT_BYTES: i64 = 4 * 1024 * 1024 * 1024;

/// Processes a task's container may hold: enough for any build, too few for a fork bomb.
const PIDS_LIMIT: i64 = 4096;

/// Log lines written to Redis in one round trip at most.
const LOG_BATCH: usize = 512;

/// How long the second read of a stopped container's output may take.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(60);

/// Runs tasks in containers.
#[derive(Debug, Clone)]
pub struct DockerRunner {
    docker: Docker,
    /// Names every container this worker makes, so they can be told apart from others'.
    prefix: String,
    /// The worker state directory whose tasks' containers and networks these are
    /// ([`STATE_LABEL`]), so that the next worker on it finds what a killed one left.
    state: Option<String>,
    /// One lock per image tag: two tasks wanting the same image build it once.
    building: image::BuildLocks,
    /// Where images come from and in-tree images go, with their credentials.
    registries: Registries,
}

impl DockerRunner {
    /// Connects to the engine at `host` (the local default when none) and agrees on an API
    /// version with it.
    pub async fn connect(
        prefix: &str,
        registries: Registries,
        host: Option<&str>,
    ) -> Result<Self, DockerError> {
        let docker = match host {
            Some(host) => Docker::connect_with_host(host)?,
            None => Docker::connect_with_local_defaults()?,
        };
        let docker = docker.negotiate_version().await?;
        Ok(Self {
            docker,
            prefix: prefix.to_owned(),
            building: image::BuildLocks::default(),
            registries,
            state: None,
        })
    }

    /// Labels the tasks' containers and networks as those of the worker state directory
    /// `state` (its host and path: a worker started again on it may have another name).
    pub fn for_state(mut self, state: String) -> Self {
        self.state = Some(state);
        self
    }

    /// Removes the tasks' containers and networks of this installation that a killed worker
    /// on this state directory left: a task's container does not die with its worker, and its
    /// job runs again. Returns how many containers it removed. Leased environments are not
    /// tasks' and stay.
    pub async fn remove_leftovers(&self) -> Result<usize, DockerError> {
        let Some(state) = &self.state else {
            return Ok(0);
        };
        let installation = format!("{}={}", environment::INSTALLATION_LABEL, self.prefix);
        let mine = format!("{STATE_LABEL}={state}");
        let filters = HashMap::from([("label", vec![installation.as_str(), mine.as_str()])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let mut removed = 0;
        // By id: the name is the attempt's, which a worker taking it over may reuse.
        for id in self.docker.list_containers(Some(options)).await? {
            if let Some(id) = id.id
                && self.remove(&id).await
            {
                removed += 1;
            }
        }
        let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
        for network in self.docker.list_networks(Some(options)).await? {
            if let Some(id) = network.id
                && let Err(error) = self.docker.remove_network(&id).await
            {
                tracing::warn!(network = id, %error, "cannot remove a network");
            }
        }
        Ok(removed)
    }

    /// The engine itself.
    pub fn engine(&self) -> &Docker {
        &self.docker
    }

    /// The container name of a job's attempt.
    pub fn container_name(&self, job: &JobRequested) -> String {
        format!(
            "{}-{}-{}-{}",
            self.prefix, job.build.id, job.task, job.attempt
        )
    }

    /// Whether the engine answers.
    pub async fn is_up(&self) -> bool {
        self.docker.ping().await.is_ok()
    }

    /// Runs `job` with its checkout at `workdir`, streaming its lines to `log`.
    pub async fn run(&self, job: &JobRequested, workdir: &Path, log: &impl LogSink) -> TaskOutcome {
        if let Err(error) = self.pull_images(job, log).await {
            return error.outcome();
        }
        let name = self.container_name(job);
        let outcome = self.run_task(&name, job, workdir, log).await;
        self.remove_all(&name, job).await;
        match outcome {
            Ok(outcome) => outcome,
            Err(error) => TaskOutcome::Errored {
                reason: describe(&error),
            },
        }
    }

    /// Pulls the task's image (unless it is in-tree) and its services' as its `pull` says.
    async fn pull_images(&self, job: &JobRequested, log: &impl LogSink) -> Result<(), ImageError> {
        let own = job.image.iter().filter(|_| job.build_image.is_none());
        let services = job.services.iter().map(|s| &s.image);
        for image in own.chain(services) {
            let pulled = self
                .ensure_image(image, job.pull, job.platform.as_str())
                .await?;
            if let Some(took) = pulled {
                let took = took.as_secs_f64();
                note(log, format!("image `{image}`: pulled in {took:.1} s")).await;
            }
        }
        Ok(())
    }

    async fn run_task(
        &self,
        name: &str,
        job: &JobRequested,
        workdir: &Path,
        log: &impl LogSink,
    ) -> Result<TaskOutcome, DockerError> {
        // Containers of the same name are leftovers of this attempt on a worker that died.
        self.remove_all(name, job).await;
        let network = if has_network(job) {
            self.create_network(name, job).await?;
            self.start_services(name, job).await?;
            name.to_owned()
        } else {
            // No network at all unless services or the step need one: a build reaches nothing.
            "none".to_owned()
        };
        self.docker
            .create_container(
                Some(self.create_options(name, job)),
                container_body(job, workdir, &network, self.labels(job)),
            )
            .await?;
        self.docker.start_container(name, None).await?;

        let timeout = Duration::from_secs(job.timeout_secs);
        let followed = match self.stream_logs(name, log, timeout).await {
            Ok(streamed) => streamed?,
            Err(_elapsed) => {
                let kill = KillContainerOptionsBuilder::new().signal("KILL").build();
                let _ = self.docker.kill_container(name, Some(kill)).await;
                return Ok(TaskOutcome::TimedOut {
                    after_secs: job.timeout_secs,
                });
            }
        };
        let mut wait = self.docker.wait_container(name, None);
        let ended = wait.next().await;
        self.catch_up(name, log, followed).await;
        Ok(match ended {
            Some(Ok(response)) if response.status_code == 0 => TaskOutcome::Passed,
            Some(Ok(response)) => TaskOutcome::Failed {
                exit_code: response.status_code,
            },
            // bollard reports every non-zero exit as this error, and its text drops the code.
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => {
                TaskOutcome::Failed { exit_code: code }
            }
            Some(Err(error)) => return Err(error),
            None => TaskOutcome::Errored {
                reason: "Docker ended the wait without an exit code".into(),
            },
        })
    }

    fn create_options(
        &self,
        name: &str,
        job: &JobRequested,
    ) -> bollard::query_parameters::CreateContainerOptions {
        CreateContainerOptionsBuilder::new()
            .name(name)
            .platform(job.platform.as_str())
            .build()
    }

    /// Creates the task's network: internal (no way out) unless the step asks for egress.
    /// Another task's services live on another network, so two builds' services may listen
    /// on the same port.
    async fn create_network(&self, network: &str, job: &JobRequested) -> Result<(), DockerError> {
        self.docker
            .create_network(NetworkCreateRequest {
                name: network.to_owned(),
                driver: Some("bridge".into()),
                internal: Some(job.network != Network::Egress),
                labels: Some(self.labels(job)),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// Starts the task's services on its network, each reachable by its name.
    async fn start_services(&self, network: &str, job: &JobRequested) -> Result<(), DockerError> {
        for service in &job.services {
            let name = service_container(network, service);
            self.docker
                .create_container(
                    Some(self.create_options(&name, job)),
                    service_body(service, network, self.labels(job)),
                )
                .await?;
            self.docker.start_container(&name, None).await?;
        }
        Ok(())
    }

    /// Follows the container's output until it exits or `timeout` passes; what was read by
    /// then is stored either way. The number of whole lines read.
    async fn stream_logs(
        &self,
        name: &str,
        log: &impl LogSink,
        timeout: Duration,
    ) -> Result<Result<usize, DockerError>, tokio::time::error::Elapsed> {
        pipelined(log, async |batches| {
            tokio::time::timeout(timeout, self.send_lines(name, true, 0, &batches)).await
        })
        .await
    }

    /// Once the container has stopped, reads its output whole again and stores the lines
    /// after the `followed` the follow read: Docker's follow can end at the container's exit
    /// while its log copier is still behind (a container that printed fast on a busy
    /// machine), and what it misses is the log's end, where a task says why it failed. The
    /// task's outcome is known by then; a read that fails is noted in the log, nothing more.
    async fn catch_up(&self, name: &str, log: &impl LogSink, followed: usize) {
        let read = pipelined(log, async |batches| {
            tokio::time::timeout(
                CATCH_UP_WITHIN,
                self.send_lines(name, false, followed, &batches),
            )
            .await
        })
        .await;
        let why = match read {
            Ok(Ok(_)) => return,
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("it took over {}s", CATCH_UP_WITHIN.as_secs()),
        };
        note(
            log,
            format!("the end of the output could not be read again: {why}"),
        )
        .await;
    }

    /// Sends the lines of the container's output after the first `skip`, following it while
    /// it runs when `follow`; the number of whole lines read. Without `follow`, the last
    /// line is sent even without its newline; with it, it is left for the read after.
    async fn send_lines(
        &self,
        name: &str,
        follow: bool,
        skip: usize,
        batches: &Batches,
    ) -> Result<usize, DockerError> {
        let options = LogsOptionsBuilder::new()
            .follow(follow)
            .stdout(true)
            .stderr(true)
            .build();
        let mut frames = self
            .docker
            .logs(name, Some(options))
            .ready_chunks(LOG_BATCH);
        let mut splitter = LineSplitter::default();
        let mut lines = Vec::new();
        let mut read = 0;
        let mut keep_new = |lines: &mut Vec<_>| {
            let before = read;
            read += lines.len();
            lines.drain(..skip.saturating_sub(before).min(lines.len()));
        };
        while let Some(chunk) = frames.next().await {
            for frame in chunk {
                match frame? {
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        splitter.push(Fd::Out, &message, &mut lines);
                    }
                    LogOutput::StdErr { message } => splitter.push(Fd::Err, &message, &mut lines),
                    LogOutput::StdIn { .. } => {}
                }
            }
            keep_new(&mut lines);
            batches.send(&mut lines).await;
        }
        if !follow {
            splitter.finish(&mut lines);
            keep_new(&mut lines);
            batches.send(&mut lines).await;
        }
        Ok(read)
    }

    /// Removes the containers and network of a job's attempt, if there are any.
    pub async fn remove_for(&self, job: &JobRequested) {
        self.remove_all(&self.container_name(job), job).await;
    }

    /// Removes a task's container, its services' and its network.
    async fn remove_all(&self, name: &str, job: &JobRequested) {
        self.remove(name).await;
        if !has_network(job) {
            return;
        }
        for service in &job.services {
            self.remove(&service_container(name, service)).await;
        }
        match self.docker.remove_network(name).await {
            Ok(())
            | Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(error) => tracing::warn!(network = name, %error, "cannot remove a network"),
        }
    }

    /// Removes a container and its anonymous volumes; a missing one is fine.
    /// Returns whether this call removed it.
    async fn remove(&self, name: &str) -> bool {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(name, Some(options)).await {
            Ok(()) => true,
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => false,
            Err(error) => {
                tracing::warn!(container = name, %error, "cannot remove a container");
                false
            }
        }
    }
}

/// Whether the task gets a network of its own: for its services, or to reach out.
fn has_network(job: &JobRequested) -> bool {
    !job.services.is_empty() || job.network == Network::Egress
}

/// The container name of one of a task's services.
fn service_container(task_container: &str, service: &PlannedService) -> String {
    format!("{task_container}-{}", service.name)
}

impl DockerRunner {
    /// The labels of a task's containers and network.
    fn labels(&self, job: &JobRequested) -> HashMap<String, String> {
        let mut labels = HashMap::from([
            ("kiln.build".to_owned(), job.build.id.to_string()),
            ("kiln.task".to_owned(), job.task.clone()),
        ]);
        if let Some(state) = &self.state {
            labels.insert(
                environment::INSTALLATION_LABEL.to_owned(),
                self.prefix.clone(),
            );
            labels.insert(STATE_LABEL.to_owned(), state.clone());
        }
        labels
    }
}

/// Limits every container of a task gets: no process in it gains privileges by running a
/// set-user-ID program.
fn host_config(network: &str) -> HostConfig {
    HostConfig {
        network_mode: Some(network.to_owned()),
        memory: Some(MEMORY_LIMIT_BYTES),
        pids_limit: Some(PIDS_LIMIT),
        privileged: Some(false),
        security_opt: Some(vec!["no-new-privileges".into()]),
        ..Default::default()
    }
}

/// The task's own container, beyond every container's limits: no capability but those the
/// step asked for (and Kiln's configuration allowed), so its root can neither mount, nor
/// change files' owners, nor read files it does not own; its root file system read-only if
/// the step said so. A service keeps the image's usual capabilities: a database's image
/// starts as root to hand its files to its own user.
fn task_host_config(job: &JobRequested, workdir: &Path, network: &str) -> HostConfig {
    HostConfig {
        binds: Some(vec![format!("{}:{WORKSPACE}", workdir.display())]),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: (!job.capabilities.is_empty()).then(|| job.capabilities.clone()),
        readonly_rootfs: Some(job.read_only),
        tmpfs: job
            .read_only
            .then(|| HashMap::from([("/tmp".to_owned(), "rw,nosuid,nodev".to_owned())])),
        ..host_config(network)
    }
}

fn service_body(
    service: &PlannedService,
    network: &str,
    labels: HashMap<String, String>,
) -> ContainerCreateBody {
    let endpoint = EndpointSettings {
        aliases: Some(vec![service.name.clone()]),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(service.image.clone()),
        cmd: (!service.command.is_empty()).then(|| service.command.clone()),
        env: Some(
            service
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        ),
        hostname: Some(service.name.clone()),
        labels: Some(labels),
        host_config: Some(host_config(network)),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(network.to_owned(), endpoint)])),
        }),
        ..Default::default()
    }
}

fn container_body(
    job: &JobRequested,
    workdir: &Path,
    network: &str,
    labels: HashMap<String, String>,
) -> ContainerCreateBody {
    let mut script = String::from("set -e\n");
    for command in &job.commands {
        script.push_str(command);
        script.push('\n');
    }
    let env: Vec<String> = job
        .environment()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    ContainerCreateBody {
        image: job.image.clone(),
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        cmd: Some(vec![script]),
        env: Some(env),
        working_dir: Some(WORKSPACE.into()),
        user: unprivileged_worker(),
        labels: Some(labels),
        host_config: Some(task_host_config(job, workdir, network)),
        ..Default::default()
    }
}

/// `uid:gid` of the worker when it is not root: the task's container runs as the same user,
/// so it can write the checkout it is given and leaves nothing its worker cannot remove (a
/// root without capabilities could do neither). A root worker's tasks run as the image's
/// user.
fn unprivileged_worker() -> Option<String> {
    #[cfg(unix)]
    {
        let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
        (!uid.is_root()).then(|| format!("{uid}:{gid}"))
    }
    #[cfg(not(unix))]
    None
}

/// Says what went wrong in words for the person reading the build.
fn describe(error: &DockerError) -> String {
    match error {
        DockerError::DockerResponseServerError {
            status_code: 404,
            message,
        } if message.contains("image") => {
            format!("an image is not on this worker: {message}")
        }
        DockerError::DockerResponseServerError { message, .. } => {
            format!("Docker refused: {message}")
        }
        other => format!("Docker failed: {other}"),
    }
}

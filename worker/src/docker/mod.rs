//! The Docker runner: one container per task, through the Engine API (bollard).
//!
//! Lifecycle: create (with limits, no network, the checkout mounted at `/workspace`) → start
//! → stream stdout and stderr lines → wait for the exit code → remove, whatever happened. A
//! non-zero exit is a failed task; a Docker fault is an errored one.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use kiln_shared::build::TaskOutcome;
use kiln_shared::wire::JobRequested;

use crate::lines::LineSplitter;
use crate::store::{Fd, LogLine, Store};

/// Where the checkout is mounted in a task's container, and its working directory.
pub const WORKSPACE: &str = "/workspace";

/// Memory a task's container may use before the kernel kills it.
const MEMORY_LIMIT_BYTES: i64 = 4 * 1024 * 1024 * 1024;

/// Processes a task's container may hold: enough for any build, too few for a fork bomb.
const PIDS_LIMIT: i64 = 4096;

/// Log lines written to Redis in one round trip at most.
const LOG_BATCH: usize = 512;

/// Runs tasks in containers.
#[derive(Debug, Clone)]
pub struct DockerRunner {
    docker: Docker,
    /// Names every container this worker makes, so they can be told apart from others'.
    prefix: String,
}

impl DockerRunner {
    /// Connects to the local engine and agrees on an API version with it.
    pub async fn connect(prefix: &str) -> Result<Self, DockerError> {
        let docker = Docker::connect_with_local_defaults()?
            .negotiate_version()
            .await?;
        Ok(Self {
            docker,
            prefix: prefix.to_owned(),
        })
    }

    /// The container name of a job's attempt.
    pub fn container_name(&self, job: &JobRequested) -> String {
        format!(
            "{}-{}-{}-{}",
            self.prefix, job.build.id, job.task, job.attempt
        )
    }

    /// Runs `job` with its checkout at `workdir`, streaming its lines to `store`.
    pub async fn run(&self, job: &JobRequested, workdir: &Path, store: &Store) -> TaskOutcome {
        let name = self.container_name(job);
        let outcome = self.run_container(&name, job, workdir, store).await;
        self.remove(&name).await;
        match outcome {
            Ok(outcome) => outcome,
            Err(error) => TaskOutcome::Errored {
                reason: describe(&error, &job.image),
            },
        }
    }

    async fn run_container(
        &self,
        name: &str,
        job: &JobRequested,
        workdir: &Path,
        store: &Store,
    ) -> Result<TaskOutcome, DockerError> {
        // A container of the same name is a leftover of this attempt on a worker that died.
        self.remove(name).await;
        self.docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(name).build()),
                container_body(job, workdir),
            )
            .await?;
        self.docker.start_container(name, None).await?;

        let timeout = Duration::from_secs(job.timeout_secs);
        match tokio::time::timeout(timeout, self.stream_logs(name, job, store)).await {
            Ok(streamed) => streamed?,
            Err(_elapsed) => {
                let kill = KillContainerOptionsBuilder::new().signal("KILL").build();
                let _ = self.docker.kill_container(name, Some(kill)).await;
                return Ok(TaskOutcome::TimedOut {
                    after_secs: job.timeout_secs,
                });
            }
        }
        let mut wait = self.docker.wait_container(name, None);
        Ok(match wait.next().await {
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

    /// Follows the container's output until it exits, writing lines in batches.
    async fn stream_logs(
        &self,
        name: &str,
        job: &JobRequested,
        store: &Store,
    ) -> Result<(), DockerError> {
        let options = LogsOptionsBuilder::new()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        let mut frames = self
            .docker
            .logs(name, Some(options))
            .ready_chunks(LOG_BATCH);
        let mut splitter = LineSplitter::default();
        let mut lines = Vec::new();
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
            write_lines(store, job, &mut lines).await;
        }
        splitter.finish(&mut lines);
        write_lines(store, job, &mut lines).await;
        Ok(())
    }

    /// Removes the container of a job's attempt, if there is one.
    pub async fn remove_for(&self, job: &JobRequested) {
        self.remove(&self.container_name(job)).await;
    }

    /// Removes a container and its anonymous volumes; a missing one is fine.
    async fn remove(&self, name: &str) {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(name, Some(options)).await {
            Ok(())
            | Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(error) => tracing::warn!(container = name, %error, "cannot remove a container"),
        }
    }
}

async fn write_lines(store: &Store, job: &JobRequested, lines: &mut Vec<LogLine>) {
    // A lost log line must not fail the build; Redis being down shows up elsewhere.
    if let Err(error) = store.append_log(job, lines).await {
        tracing::warn!(%error, dropped = lines.len(), "cannot write log lines");
    }
    lines.clear();
}

fn container_body(job: &JobRequested, workdir: &Path) -> ContainerCreateBody {
    let mut script = String::from("set -e\n");
    for command in &job.commands {
        script.push_str(command);
        script.push('\n');
    }
    let mut env: Vec<String> = job.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.extend([
        "CI=true".to_owned(),
        format!("KILN_BUILD_ID={}", job.build.id),
        format!("KILN_REPO={}", job.build.repo),
        format!("KILN_BRANCH={}", job.build.branch),
        format!("KILN_COMMIT={}", job.build.commit),
        format!("KILN_TASK={}", job.task),
    ]);
    let labels = HashMap::from([
        ("kiln.build".to_owned(), job.build.id.to_string()),
        ("kiln.task".to_owned(), job.task.clone()),
    ]);
    ContainerCreateBody {
        image: Some(job.image.clone()),
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        cmd: Some(vec![script]),
        env: Some(env),
        working_dir: Some(WORKSPACE.into()),
        labels: Some(labels),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{}:{WORKSPACE}", workdir.display())]),
            // No network until a pipeline asks for one: a build cannot reach what it should not.
            network_mode: Some("none".into()),
            memory: Some(MEMORY_LIMIT_BYTES),
            pids_limit: Some(PIDS_LIMIT),
            privileged: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Says what went wrong in words for the person reading the build.
fn describe(error: &DockerError, image: &str) -> String {
    match error {
        DockerError::DockerResponseServerError {
            status_code: 404,
            message,
        } if message.contains("image") => {
            format!("image `{image}` is not on this worker: {message}")
        }
        DockerError::DockerResponseServerError { message, .. } => {
            format!("Docker refused: {message}")
        }
        other => format!("Docker failed: {other}"),
    }
}

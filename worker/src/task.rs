//! A task's fixed lifecycle, the same on a worker and in `kiln-worker run`: prepare (the
//! artifacts of what it needs, its cache, its in-tree image) → execute (Docker or shell,
//! lines streamed) → collect (artifacts and cache, when it passed). Cleanup of containers
//! and processes is the runners' own, and happens whatever the outcome.

use std::path::Path;

use kiln_shared::build::TaskOutcome;
use kiln_shared::spec::Runner;
use kiln_shared::wire::{Artifact, ImageUse, JobRequested};

use crate::artifacts::{self, ArtifactStore};
use crate::cache::Caches;
use crate::docker::DockerRunner;
use crate::lines::{LogSink, note};
use crate::secrets::{Masked, Secrets};
use crate::shell;

/// What a task needs from its host.
#[derive(Debug, Clone, Copy)]
pub struct Tools<'a> {
    /// The Docker engine, if the host has one.
    pub docker: Option<&'a DockerRunner>,
    pub artifacts: &'a ArtifactStore,
    pub caches: &'a Caches,
    pub secrets: &'a Secrets,
    /// How shell tasks are kept from the worker.
    pub sandbox: &'a shell::Sandbox,
    /// Run Docker tasks in the shell when there is no engine (`kiln-worker run`), instead
    /// of erroring them (a worker).
    pub shell_without_docker: bool,
}

/// How a task ended and what it left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    pub outcome: TaskOutcome,
    pub artifacts: Vec<Artifact>,
    pub images: Vec<ImageUse>,
}

impl Ran {
    /// Kiln could not run it, for `reason`.
    pub fn errored(reason: String) -> Self {
        Self::ended(TaskOutcome::Errored { reason })
    }

    /// It ended as `outcome` before it ran.
    pub fn ended(outcome: TaskOutcome) -> Self {
        Self {
            outcome,
            artifacts: Vec::new(),
            images: Vec::new(),
        }
    }
}

/// Runs `job` in its checkout at `workdir`.
pub async fn run(tools: Tools<'_>, job: &JobRequested, workdir: &Path, log: &impl LogSink) -> Ran {
    // A fork's code never sees secrets, whatever a bot of another version asked for.
    let from_fork = job.request.as_ref().is_some_and(|r| r.from_fork);
    let names: &[String] = if from_fork { &[] } else { &job.secrets };
    let secrets = match tools.secrets.resolve(names) {
        Ok(secrets) => secrets,
        Err(reason) => return Ran::errored(reason),
    };
    let log = &Masked::new(log, secrets.values().cloned());
    let mut job = job.clone();
    job.env.extend(secrets);
    let job = &job;
    if let Err(error) = artifacts::restore(tools.artifacts, workdir, job).await {
        return Ran::errored(format!("cannot fetch the artifacts it needs: {error}"));
    }
    if !job.inputs.is_empty() {
        note(log, format!("fetched {} artifact(s)", job.inputs.len())).await;
    }
    let cache_key = match &job.cache {
        None => None,
        Some(_) => match tools.caches.restore(job, workdir).await {
            Ok(restored) => {
                let verb = if restored.hit {
                    "restored"
                } else {
                    "no entry yet for"
                };
                note(log, format!("cache: {verb} key {}", restored.key)).await;
                (!restored.hit).then_some(restored.key)
            }
            Err(error) => {
                // A cache is an optimisation: without it the task still runs, only slower.
                note(log, format!("cache not restored: {error}")).await;
                None
            }
        },
    };

    let runner = match (job.runner, tools.docker) {
        (Runner::Docker, None) if tools.shell_without_docker => Runner::Shell,
        (runner, _) => runner,
    };
    let mut images = Vec::new();
    let outcome = match (runner, tools.docker) {
        (Runner::Shell, _) => shell::run(job, workdir, tools.sandbox, log).await,
        (Runner::Docker, None) => {
            return Ran::errored("this worker has no Docker engine".into());
        }
        (Runner::Docker, Some(docker)) => {
            let mut job = job.clone();
            let started = std::time::Instant::now();
            if let Some(image) = &job.build_image {
                // Building counts against the task's time, like running it.
                let limit = std::time::Duration::from_secs(job.timeout_secs);
                let prepared =
                    tokio::time::timeout(limit, docker.prepare_image(&job, image, workdir, log))
                        .await
                        .unwrap_or_else(|_| {
                            Err(TaskOutcome::Errored {
                                reason: format!(
                                    "building image `{}` took longer than the task may",
                                    image.name
                                ),
                            })
                        });
                match prepared {
                    Ok(used) => {
                        let verb = if used.built { "built" } else { "reused" };
                        let took = started.elapsed().as_secs_f64() * 1000.0;
                        let line =
                            format!("image `{}`: {verb} {} in {took:.1} ms", used.name, used.tag);
                        note(log, line).await;
                        job.image = Some(used.tag.clone());
                        images.push(used);
                    }
                    Err(outcome) => return Ran::ended(outcome),
                }
            }
            // One budget for both: the run gets what the build left.
            let spent = started.elapsed().as_secs();
            job.timeout_secs = job.timeout_secs.saturating_sub(spent).max(1);
            docker.run(&job, workdir, log).await
        }
    };

    let mut artifacts = Vec::new();
    if outcome == TaskOutcome::Passed {
        match artifacts::collect(tools.artifacts, workdir, job).await {
            Ok((kept, uploaded)) => {
                if !job.artifacts.is_empty() {
                    note(
                        log,
                        format!(
                            "kept {} artifact(s), {uploaded} new to the store",
                            kept.len()
                        ),
                    )
                    .await;
                }
                artifacts = kept;
            }
            Err(error) => return Ran::errored(format!("cannot keep its artifacts: {error}")),
        }
        if let Some(key) = cache_key {
            match tools.caches.save(job, workdir, &key).await {
                Ok(true) => note(log, format!("cache: saved key {key}")).await,
                Ok(false) => {}
                Err(error) => note(log, format!("cache not saved: {error}")).await,
            }
        }
    }
    Ran {
        outcome,
        artifacts,
        images,
    }
}

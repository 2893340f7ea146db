//! A `docker` pool's environments, on the workers: the bot asks on the pool's platform queue
//! ([`EnvironmentRequested`]), and a worker of that platform starts the container on its own
//! engine and reports in the lease's record where a tester reaches it (the worker's
//! advertised host and the published ports) or why it could not start.
//!
//! The lease's record, not a message, says when an environment goes: the reaper
//! ([`crate::gc::reap_environments`]), run here every second, removes a container once its
//! lease no longer runs. A removal request on the platform queue would reach any worker of the
//! platform, not the one whose engine runs the container; the record reaches them all, and a
//! worker that was down when the lease ended removes its container when it is back. This is
//! how a running task learns of a cancel, too.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use kiln_shared::wire::EnvironmentRequested;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio_util::sync::CancellationToken;

use crate::Worker;
use crate::docker::Published;
use crate::store::EnvironmentReport;

/// How often the reaper looks for containers whose lease ended: `env release` waits for it.
const REAP_EVERY: Duration = Duration::from_secs(1);

/// How long to wait before handing back a request that could not be reported (Redis away):
/// it counts against the queue's delivery limit.
const RETRY_PAUSE: Duration = Duration::from_secs(2);

/// Handles one request for an environment to the end, acknowledging it once its outcome is
/// recorded (or the lease needs none any more), handing it back when Redis could not say.
pub async fn handle_delivery(worker: &Worker, delivery: Delivery, asked: EnvironmentRequested) {
    let span = tracing::info_span!("environment", lease = %asked.lease, pool = %asked.pool);
    let started = tracing::Instrument::instrument(start(worker, &asked), span.clone()).await;
    let answered = match started {
        Ok(()) => delivery.ack(BasicAckOptions::default()).await,
        Err(error) => {
            tracing::warn!(parent: &span, error = format!("{error:#}"),
                "cannot start or report an environment; handed back");
            tokio::time::sleep(RETRY_PAUSE).await;
            let requeue = BasicNackOptions {
                requeue: true,
                ..Default::default()
            };
            delivery.nack(requeue).await
        }
    };
    if let Err(error) = answered {
        // Its channel is gone: RabbitMQ gives the request again, and it finds the report.
        tracing::warn!(%error, "cannot acknowledge an environment request");
    }
}

/// Starts the environment of a lease that still wants one and records where it is, or why
/// it could not start. An error is a passing one (Redis), worth trying again.
async fn start(worker: &Worker, asked: &EnvironmentRequested) -> anyhow::Result<()> {
    if !worker.store.environment_wanted(asked.lease).await? {
        tracing::info!("the lease ended or has its environment already; request dropped");
        return Ok(());
    }
    let Some(docker) = &worker.docker else {
        let why = format!("worker {} has no Docker engine", worker.name);
        worker
            .store
            .report_environment(asked.lease, &EnvironmentReport::Failed(why))
            .await?;
        return Ok(());
    };
    let name = docker.environment_name(asked.lease);
    let bind_ip = bind_ip(&worker.advertise_host);
    let report = match docker.start_environment(asked, &bind_ip).await {
        Ok(published) => {
            EnvironmentReport::Started(details(&worker.advertise_host, &published, &name))
        }
        Err(error) => {
            tracing::info!(%error, image = %asked.image, "the environment did not start");
            EnvironmentReport::Failed(format!("{}: {error}", asked.image))
        }
    };
    let recorded = worker.store.report_environment(asked.lease, &report).await;
    if matches!(report, EnvironmentReport::Started(_)) && !matches!(recorded, Ok(true)) {
        // The lease ended while it started (the reaper may have looked before the container
        // was there), or Redis cannot say: the container goes, and a try again starts afresh.
        docker.remove_environment(&name).await?;
    }
    if recorded? {
        tracing::info!(report = ?report, "environment reported");
    }
    Ok(())
}

/// Where a tester reaches each port: `host:49153 → 8080, …`, or the container's name when
/// it publishes none.
fn details(host: &str, published: &[Published], name: &str) -> String {
    if published.is_empty() {
        return format!("container {name} on {host}");
    }
    let host = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("[{host}]"),
        _ => host.to_owned(),
    };
    published
        .iter()
        .map(|p| format!("{host}:{} → {}", p.host_port, p.port))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The address an environment's ports are published on: a loopback host advertised (a test,
/// a single machine) keeps them on loopback; any other, every interface, for testers
/// elsewhere.
fn bind_ip(advertised: &str) -> String {
    match advertised.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() => ip.to_string(),
        _ if advertised == "localhost" => "127.0.0.1".to_owned(),
        _ => "0.0.0.0".to_owned(),
    }
}

/// Removes the containers of ended leases from this worker's engine every [`REAP_EVERY`]
/// until `shutdown` is cancelled. A pass that fails (Redis, Docker) is tried again next time.
pub async fn reap(worker: Arc<Worker>, shutdown: CancellationToken) {
    let Some(docker) = &worker.docker else {
        return;
    };
    let mut every = tokio::time::interval(REAP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        if let Err(error) = crate::gc::reap_environments(docker, &worker.store).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "reaping environments failed; will retry"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_published_where_the_advertised_host_is_reached() {
        assert_eq!(bind_ip("127.0.0.1"), "127.0.0.1");
        assert_eq!(bind_ip("localhost"), "127.0.0.1");
        assert_eq!(bind_ip("::1"), "::1");
        assert_eq!(bind_ip("build-7.example.com"), "0.0.0.0");
        assert_eq!(bind_ip("10.0.3.7"), "0.0.0.0");
    }

    #[test]
    fn details_name_the_advertised_host_and_each_port() {
        let published = [
            Published {
                port: 8080,
                host_port: 49153,
            },
            Published {
                port: 5432,
                host_port: 49154,
            },
        ];
        let check = |host: &str, published: &[Published], expect: &str| {
            assert_eq!(details(host, published, "kiln-lease-4"), expect);
        };
        check(
            "build-7.example.com",
            &published,
            "build-7.example.com:49153 → 8080, build-7.example.com:49154 → 5432",
        );
        check("::1", &published[..1], "[::1]:49153 → 8080");
        check("10.0.3.7", &[], "container kiln-lease-4 on 10.0.3.7");
    }
}

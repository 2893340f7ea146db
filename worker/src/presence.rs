//! The worker's presence: every heartbeat it tells Redis who it is, what it runs, which
//! jobs it holds and whether it is draining, so `workers` in chat can say, and so the bot
//! can take back the jobs of a worker that went silent.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::Notify;

use kiln_shared::platform::Platform;
use kiln_shared::presence::{HEARTBEAT, HeldJob, Presence};
use kiln_shared::wire::JobRequested;
use tokio_util::sync::CancellationToken;

use crate::Worker;
use crate::store::now_ms;

/// The jobs a worker holds now, each with how many of its deliveries are held (more than
/// one when RabbitMQ gave a job again while it ran, after a lost connection).
#[derive(Debug, Default)]
pub struct Running {
    jobs: Mutex<BTreeMap<HeldJob, usize>>,
    /// Told when a job is taken or let go, so the presence says so at once.
    changed: Notify,
}

/// A job held; dropping it lets go.
#[derive(Debug)]
pub struct Held<'a> {
    running: &'a Running,
    job: HeldJob,
}

impl Running {
    /// Notes that `job` is held until the returned guard is dropped.
    pub fn hold(&self, job: &JobRequested) -> Held<'_> {
        let job = held(job);
        *self
            .jobs
            .lock()
            .expect("not poisoned")
            .entry(job.clone())
            .or_default() += 1;
        self.changed.notify_one();
        Held { running: self, job }
    }

    /// How many deliveries of `job` are held.
    pub fn holds(&self, job: &JobRequested) -> usize {
        let jobs = self.jobs.lock().expect("not poisoned");
        jobs.get(&held(job)).copied().unwrap_or(0)
    }

    /// The jobs held, in order.
    pub fn now(&self) -> Vec<HeldJob> {
        self.jobs
            .lock()
            .expect("not poisoned")
            .keys()
            .cloned()
            .collect()
    }
}

fn held(job: &JobRequested) -> HeldJob {
    HeldJob {
        build: job.build.id,
        task: job.task.clone(),
        attempt: job.attempt,
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut jobs = self.running.jobs.lock().expect("not poisoned");
        if let Some(count) = jobs.get_mut(&self.job) {
            *count -= 1;
            if *count == 0 {
                jobs.remove(&self.job);
            }
        }
        drop(jobs);
        self.running.changed.notify_one();
    }
}

/// Tells Redis every [`HEARTBEAT`], whenever it takes or lets go of a job, and when it
/// starts draining, that `worker` is there, until `stop`. A Redis outage only makes the
/// worker look gone for a while.
pub async fn beat(
    worker: &Worker,
    platform: Platform,
    slots: u16,
    draining: CancellationToken,
    stop: CancellationToken,
) {
    let started_ms = now_ms();
    let mut ticks = tokio::time::interval(HEARTBEAT);
    let mut said_draining = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => {}
            () = worker.running.changed.notified() => {}
            () = draining.cancelled(), if !said_draining => {}
        }
        said_draining = draining.is_cancelled();
        let held = worker.running.now();
        let presence = Presence {
            name: worker.name.clone(),
            platform: platform.to_string(),
            slots,
            running: held.iter().map(HeldJob::label).collect(),
            held,
            draining: said_draining,
            started_ms,
            seen_ms: now_ms(),
            host: worker.advertise_host.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        if let Err(error) = worker.store.say_present(&presence).await {
            tracing::warn!(%error, "cannot record this worker's presence");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(build: u64, task: &str) -> JobRequested {
        serde_json::from_value(serde_json::json!({
            "build": { "id": build, "repo": "acme/api", "branch": "main", "commit": "c" },
            "clone_url": "", "task": task, "step": task, "attempt": 2,
            "platform": "linux/amd64", "commands": [], "timeout_secs": 1
        }))
        .expect("job")
    }

    #[test]
    fn a_job_is_held_until_its_guard_goes() {
        let running = Running::default();
        let (unit, lint) = (job(12, "unit"), job(3, "lint"));
        let first = running.hold(&unit);
        {
            let _second = running.hold(&lint);
            let _again = running.hold(&unit);
            assert_eq!(running.holds(&unit), 2);
            let labels: Vec<String> = running.now().iter().map(HeldJob::label).collect();
            assert_eq!(labels, ["#3 lint", "#12 unit"]);
        }
        assert_eq!(running.holds(&unit), 1);
        assert_eq!(
            running.now(),
            [HeldJob {
                build: kiln_shared::build::BuildId(12),
                task: "unit".into(),
                attempt: 2
            }]
        );
        drop(first);
        assert!(running.now().is_empty());
    }
}

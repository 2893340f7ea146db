//! The worker's presence: every heartbeat it tells Redis who it is, what it runs and which
//! jobs it holds, so `workers` in chat can say.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::Notify;

use kiln_shared::build::BuildId;
use kiln_shared::platform::Platform;
use kiln_shared::presence::{HEARTBEAT, Presence};
use tokio_util::sync::CancellationToken;

use crate::Worker;
use crate::store::now_ms;

/// The jobs a worker holds now, each with how many of its deliveries are held (more than
/// one when RabbitMQ gave a job again while it ran, after a lost connection).
#[derive(Debug, Default)]
pub struct Running {
    jobs: Mutex<BTreeMap<String, usize>>,
    /// Told when a job is taken or let go, so the presence says so at once.
    changed: Notify,
}

/// A job held; dropping it lets go.
#[derive(Debug)]
pub struct Held<'a> {
    running: &'a Running,
    job: String,
}

impl Running {
    /// Notes that the job of `build`'s `task` is held until the returned guard is dropped.
    pub fn hold(&self, build: BuildId, task: &str) -> Held<'_> {
        let job = label(build, task);
        *self
            .jobs
            .lock()
            .expect("not poisoned")
            .entry(job.clone())
            .or_default() += 1;
        self.changed.notify_one();
        Held { running: self, job }
    }

    /// How many deliveries of `build`'s `task` are held.
    pub fn holds(&self, build: BuildId, task: &str) -> usize {
        let jobs = self.jobs.lock().expect("not poisoned");
        jobs.get(&label(build, task)).copied().unwrap_or(0)
    }

    /// The jobs held, in order.
    pub fn now(&self) -> Vec<String> {
        self.jobs
            .lock()
            .expect("not poisoned")
            .keys()
            .cloned()
            .collect()
    }
}

/// How a job is named in presences: `#12 unit`.
pub fn label(build: BuildId, task: &str) -> String {
    format!("#{build} {task}")
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

/// Tells Redis every [`HEARTBEAT`], and whenever it takes or lets go of a job, that `worker`
/// is there, until `shutdown`. A Redis outage only makes the worker look gone for a while.
pub async fn beat(worker: &Worker, platform: Platform, slots: u16, shutdown: CancellationToken) {
    let started_ms = now_ms();
    let mut ticks = tokio::time::interval(HEARTBEAT);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
            () = worker.running.changed.notified() => {}
        }
        let presence = Presence {
            name: worker.name.clone(),
            platform: platform.to_string(),
            slots,
            running: worker.running.now(),
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

    #[test]
    fn a_job_is_held_until_its_guard_goes() {
        let running = Running::default();
        let first = running.hold(BuildId(12), "unit");
        {
            let _second = running.hold(BuildId(3), "lint");
            assert_eq!(running.now(), ["#12 unit", "#3 lint"]);
        }
        assert_eq!(running.now(), ["#12 unit"]);
        drop(first);
        assert!(running.now().is_empty());
    }
}

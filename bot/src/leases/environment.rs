//! A `docker` pool's environments, as the bot sees them: it asks a worker of the pool's
//! platform for one, on that platform's job queue, and waits for the worker's report in the
//! lease's record (where a tester reaches it, or why it did not start). The bot never talks
//! to Docker. When a lease ends its record goes, and the reaper of the worker whose engine
//! runs the container removes it; `env release` waits for the mark it leaves.
//!
//! The report is read from Redis rather than heard as an event: the bot replica that took the
//! command is the one waiting, whichever replica an event would reach, and the record is what
//! every replica reads already (`env list`); a report made while no bot waits is kept there.
//! Workers learn of a task's cancel from its record in the same way.

use std::collections::BTreeMap;
use std::time::Duration;

use kiln_shared::lease::LeaseId;
use kiln_shared::template::{branch_slug, render};
use kiln_shared::wire::EnvironmentRequested;

use crate::app::App;
use crate::config::Pool;
use crate::store::LeaseRecord;

/// The branch a `docker` pool's image is of, when none is asked for.
const DEFAULT_BRANCH: &str = "master";

/// How often the lease's record is read while a worker starts or removes its environment.
const REPORT_POLL: Duration = Duration::from_millis(200);

/// How long a worker may take to start an environment: time to pull a branch's image from
/// a registry. A lease whose environment has not started by then is ended (its worker
/// removes a container that starts later).
const START_DEADLINE: Duration = Duration::from_secs(120);

/// How long `env release` waits for the worker to say the environment is gone: a few of its
/// reaper's passes, one a second.
const REMOVAL_DEADLINE: Duration = Duration::from_secs(10);

/// What became of a request for an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// It runs; how to reach it, recorded in the lease.
    Up(String),
    /// It could not be started or asked for: why, for the person who asked. The lease still
    /// runs, for the caller to end.
    Failed(String),
    /// The lease ended while it started (released, or expired).
    Ended,
}

/// Asks a worker of `pool`'s platform for the environment of `lease`, its image of
/// `branch`, and waits for its report.
pub async fn start(
    app: &App,
    pool: &Pool,
    lease: &LeaseRecord,
    branch: Option<&str>,
) -> anyhow::Result<Started> {
    let branch = branch.unwrap_or(DEFAULT_BRANCH);
    let vars = BTreeMap::from([
        ("branch", branch.to_owned()),
        ("branch_slug", branch_slug(branch)),
    ]);
    let template = pool.image.as_deref().unwrap_or_default();
    let image = match render(template, &vars, &mut |_| {
        Err("a pool's image hashes no files".to_owned())
    }) {
        Ok(image) => image,
        Err(why) => return Ok(Started::Failed(why)),
    };
    let asked = EnvironmentRequested {
        lease: lease.id,
        pool: pool.name.clone(),
        platform: pool.platform,
        image,
        command: pool.command.clone(),
        ports: pool.ports.clone(),
    };
    if let Err(error) = app.broker.publish_environment(&asked).await {
        return Ok(Started::Failed(format!(
            "no worker of {} could be asked ({error})",
            pool.platform
        )));
    }
    let deadline = tokio::time::Instant::now() + START_DEADLINE;
    loop {
        let Some(now) = app.store.lease(lease.id).await? else {
            return Ok(Started::Ended);
        };
        if let Some(why) = now.failure {
            return Ok(Started::Failed(why));
        }
        if !now.details.is_empty() {
            return Ok(Started::Up(now.details));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Started::Failed(format!(
                "no worker of {} started it within {}; is one running?",
                pool.platform,
                humantime::format_duration(START_DEADLINE)
            )));
        }
        tokio::time::sleep(REPORT_POLL).await;
    }
}

/// Waits until a worker says the environment of the ended lease `id` is gone; false if none
/// has within [`REMOVAL_DEADLINE`] (its worker is away, and removes it when back).
pub async fn removed(app: &App, id: LeaseId) -> anyhow::Result<bool> {
    let deadline = tokio::time::Instant::now() + REMOVAL_DEADLINE;
    loop {
        if app.store.lease_gone(id).await? {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(REPORT_POLL).await;
    }
}

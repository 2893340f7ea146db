//! Schedules: builds started by the clock (`[[repository.schedule]]`), as event `schedule`.
//!
//! Every bot looks each second at each schedule's latest due time. A due time newer than the
//! one the installation last noted for the schedule (`<prefix>:schedule:<repo>:<name>`) is
//! built: the branch's head, fetched now, with the schedule's variables, accepted as a
//! delivery named by the schedule and the due time, so that however many bots see it, one
//! build is made. The due time is noted afterwards; a bot stopped in between leaves it for
//! the next look, which finds the build made.
//!
//! Only the latest due time is built: those a downtime let pass before it are skipped, and
//! the log says so. A schedule seen for the first time (new in the configuration) notes its
//! latest due time without building it.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use kiln_shared::command::Target;
use kiln_shared::trigger::TriggerKind;
use kiln_shared::wire::NewBuild;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::{Repository, Schedule, When};
use crate::ingress::{self, Accepted};
use crate::repositories;

/// How often each bot looks at the schedules.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// The "forge" of schedules' deliveries, in their keys.
pub const DOOR: &str = "schedule";

/// Looks at every schedule each [`LOOK_EVERY`] until `shutdown`.
pub async fn run(app: App, shutdown: CancellationToken) -> anyhow::Result<()> {
    let schedules: Vec<(&Repository, &Schedule, When)> = app
        .config
        .repositories
        .iter()
        .flat_map(|repo| repo.schedules.iter().map(move |s| (repo, s)))
        .filter_map(|(repo, schedule)| Some((repo, schedule, schedule.when().ok()?)))
        .collect();
    if schedules.is_empty() {
        return Ok(());
    }
    // Those whose last look failed: said once, until one succeeds.
    let mut failing = HashSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(LOOK_EVERY) => {}
        }
        for (repo, schedule, when) in &schedules {
            let key = (repo.name.clone(), schedule.name.clone());
            match look(&app, repo, schedule, when).await {
                Ok(()) => {
                    failing.remove(&key);
                }
                Err(error) => {
                    if failing.insert(key) {
                        tracing::warn!(repo = %repo.name, schedule = %schedule.name,
                            error = format!("{error:#}"), "a schedule waits to be built");
                    }
                }
            }
        }
    }
}

/// Builds `schedule`'s latest due time if it is newer than the one last noted.
async fn look(
    app: &App,
    repo: &Repository,
    schedule: &Schedule,
    when: &When,
) -> anyhow::Result<()> {
    let Some(due) = when.latest(Utc::now()) else {
        return Ok(());
    };
    let due_ms = u64::try_from(due.timestamp_millis()).unwrap_or_default();
    let store = &app.store;
    let Some(noted) = store.schedule_noted(&repo.name, &schedule.name).await? else {
        store
            .note_schedule(&repo.name, &schedule.name, due_ms)
            .await?;
        tracing::info!(repo = %repo.name, schedule = %schedule.name, next = ?when.next(Utc::now()),
            "a new schedule waits for its next time");
        return Ok(());
    };
    if due_ms <= noted {
        return Ok(());
    }
    if let Some(skipped) = when.before(&due)
        && u64::try_from(skipped.timestamp_millis()).unwrap_or_default() > noted
    {
        tracing::warn!(repo = %repo.name, schedule = %schedule.name, latest_skipped = %skipped,
            "times passed while no bot was running are skipped; only the latest is built");
    }
    let accepted = build(app, repo, schedule, &due).await?;
    store
        .note_schedule(&repo.name, &schedule.name, due_ms)
        .await?;
    tracing::info!(repo = %repo.name, schedule = %schedule.name, due = %due, ?accepted,
        "a schedule came due");
    Ok(())
}

/// Builds the head of `schedule`'s branch for its due time `due`, once across bots.
async fn build(
    app: &App,
    repo: &Repository,
    schedule: &Schedule,
    due: &DateTime<Tz>,
) -> anyhow::Result<Accepted> {
    let Some(clone_url) = repositories::clone_url(app, repo).await? else {
        anyhow::bail!("Kiln does not know where to fetch it from: set its `clone_url`");
    };
    let target = Target::Branch(schedule.branch.clone());
    let Some(head) = app.mirrors.resolve(&clone_url, &target).await? else {
        anyhow::bail!("it has no branch `{}`", schedule.branch);
    };
    let new = NewBuild {
        repo: repo.name.clone(),
        branch: schedule.branch.clone(),
        commit: head.commit,
        clone_url,
        author: head.author,
        subject: head.subject,
        kind: TriggerKind::Schedule,
        changed_paths: None,
        reuse: None,
        note: Some(format!("scheduled: {} at {due}", schedule.name)),
        vars: schedule.vars.clone(),
        request: None,
        rerun: None,
        priority: repo.priority_of(TriggerKind::Schedule, &schedule.branch),
    };
    let delivery = format!("{}:{}:{}", repo.name, schedule.name, due.timestamp());
    Ok(ingress::accept_new(app, DOOR, &delivery, new).await?)
}

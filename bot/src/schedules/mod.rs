//! Schedules: builds started by the clock (`[[repository.schedule]]`, and `schedules:` in
//! the `.kiln.yml` of a repository's default branch), as event `schedule`.
//!
//! A repository's file is read again every `[schedules] read_every`; a schedule of its file
//! named like one of the configuration's is left out (the configuration's runs). A file that
//! cannot be read or is broken keeps the schedules last read from it, and the log says why.
//!
//! Every bot looks each second at each schedule's latest due time. A due time newer than the
//! one the installation last noted for the schedule (`<prefix>:schedule:<repo>:<name>`) is
//! built: the branch's head, fetched now, with the schedule's variables, accepted as a
//! delivery named by the schedule and the due time, so that however many bots see it, one
//! build is made. The due time is noted afterwards; a bot stopped in between leaves it for
//! the next look, which finds the build made.
//!
//! Only the latest due time is built: those a downtime let pass before it are skipped, and
//! the log says so. A schedule seen for the first time (new in the configuration or a file)
//! notes its latest due time without building it.

pub mod kept;

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use kiln_shared::command::Target;
use kiln_shared::ident::BranchName;
use kiln_shared::spec::SPEC_FILE;
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

/// Looks at every schedule each [`LOOK_EVERY`] until `shutdown`, reading the repositories'
/// files for theirs every `[schedules] read_every`.
pub async fn run(app: App, shutdown: CancellationToken) -> anyhow::Result<()> {
    let read_every = app.config.schedules.read_every;
    let reads_files = !read_every.is_zero();
    let configured = app
        .config
        .repositories
        .iter()
        .any(|r| !r.schedules.is_empty());
    if !configured && !reads_files {
        return Ok(());
    }
    // Apart, so that a slow forge holds up no schedule's look.
    let reader = reads_files.then(|| {
        let (app, shutdown) = (app.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                read_files(&app).await;
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(read_every) => {}
                }
            }
        })
    });
    let _reader = reader.map(tokio_util::task::AbortOnDropHandle::new);
    // Those whose last look failed: said once, until one succeeds.
    let mut failing = HashSet::new();
    loop {
        let schedules = every_schedule(&app);
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
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(LOOK_EVERY) => {}
        }
    }
}

/// `repo`'s schedules: the configuration's, then those its file names and the
/// configuration does not.
pub fn of(app: &App, repo: &Repository) -> Vec<Schedule> {
    let own = &repo.schedules;
    let from_file = app.file_schedules.of(&repo.name).into_iter();
    let from_file = from_file.filter(|s| !own.iter().any(|c| c.name == s.name));
    own.iter().cloned().chain(from_file).collect()
}

/// Every repository's schedules that can be due.
fn every_schedule(app: &App) -> Vec<(&Repository, Schedule, When)> {
    let mut all = Vec::new();
    for repo in &app.config.repositories {
        for schedule in of(app, repo) {
            if let Ok(when) = schedule.when() {
                all.push((repo, schedule, when));
            }
        }
    }
    all
}

/// Reads each repository's `.kiln.yml` on its default branch for its schedules, keeping
/// what each says; one that cannot be read keeps what was read before.
async fn read_files(app: &App) {
    for repo in &app.config.repositories {
        match read_file(app, repo).await {
            Ok(Some(schedules)) => app.file_schedules.set(&repo.name, schedules),
            Ok(None) => {}
            Err(error) => tracing::warn!(repo = %repo.name, error = format!("{error:#}"),
                "cannot read the schedules of the default branch's .kiln.yml"),
        }
    }
}

/// The schedules `repo`'s `.kiln.yml` on its default branch (`master`, else `main`) names,
/// each building that branch; `None` when there is no such branch or Kiln does not know
/// where to fetch it yet. One fetch.
async fn read_file(app: &App, repo: &Repository) -> anyhow::Result<Option<Vec<Schedule>>> {
    let Some(clone_url) = repositories::clone_url(app, repo).await? else {
        return Ok(None);
    };
    let defaults = [BranchName::from("master"), BranchName::from("main")];
    let heads = app
        .mirrors
        .heads(&clone_url, &defaults.iter().collect::<Vec<_>>())
        .await?;
    let head = defaults.iter().zip(heads).find_map(|(b, h)| Some((b, h?)));
    let Some((default, commit)) = head else {
        return Ok(None);
    };
    let Some(bytes) = app
        .mirrors
        .read_file(&clone_url, &commit, SPEC_FILE)
        .await?
    else {
        return Ok(Some(Vec::new()));
    };
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| anyhow::anyhow!("{SPEC_FILE} at {commit} is not UTF-8 text"))?;
    let spec = app
        .specs
        .parse(text)
        .map_err(|e| anyhow::anyhow!("at {commit}: {e}"))?;
    let schedules = spec
        .schedules
        .iter()
        .map(|(name, s)| Schedule {
            name: name.clone(),
            cron: s.value.cron.clone(),
            // Whoever writes the default branch schedules its builds, none of another's.
            branch: default.clone(),
            vars: s.value.vars.clone(),
            timezone: s.value.timezone.clone().unwrap_or_else(|| "UTC".to_owned()),
            from_file: true,
        })
        .collect::<Vec<_>>();
    for schedule in &schedules {
        if let Err(why) = schedule.when() {
            tracing::warn!(repo = %repo.name, schedule = %schedule.name, %why,
                "a schedule of the default branch's .kiln.yml is never due");
        }
    }
    Ok(Some(schedules))
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
    let Some(noted) = store.schedule_noted(&repo.name, &schedule.key()).await? else {
        store
            .note_schedule(&repo.name, &schedule.key(), due_ms)
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
        .note_schedule(&repo.name, &schedule.key(), due_ms)
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
    let delivery = format!("{}:{}:{}", repo.name, schedule.key(), due.timestamp());
    Ok(ingress::accept_new(app, DOOR, &delivery, new).await?)
}

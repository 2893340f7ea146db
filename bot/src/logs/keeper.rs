//! Retention's keeper: archives an ended build's logs, then lets Redis expire what the build
//! left ([`crate::config::Retention`]).
//!
//! Ending a build notes it due [`ARCHIVE_AFTER`] later (before the end is stored, so a bot
//! stopped in between leaves it noted; a build that did not end after all is dropped). Every
//! bot runs a keeper; each claims due builds for [`CLAIM`] before working on them, so two do
//! not archive one build at once, and a claim left by a stopped bot runs out and is taken
//! up again. Archiving twice is harmless: blobs are stored by content. Builds that ended
//! before there was retention are noted due by the first keeper that finds the installation
//! not yet swept ([`sweep`]).

use std::time::Duration;

use anyhow::Context as _;
use kiln_shared::build::BuildId;
use kiln_shared::record::ArchivedLog;
use tokio_util::sync::CancellationToken;

use super::archive::Blob;
use super::format;
use crate::app::App;

/// How long after its end a build's logs are archived: a task cancelled with its build may
/// still be writing its last lines.
pub const ARCHIVE_AFTER: Duration = Duration::from_secs(10);

/// How often the keeper looks for due builds.
const LOOK_EVERY: Duration = Duration::from_secs(5);

/// How long a keeper's claim on builds lasts: longer than archiving a batch takes.
const CLAIM: Duration = Duration::from_secs(5 * 60);

/// How many builds a keeper claims at once.
const BATCH: usize = 16;

/// How many builds' records the sweep looks at in one round trip.
const SWEEP_BATCH: u64 = 1000;

/// Archives and expires due builds every [`LOOK_EVERY`] until `shutdown`; first, once per
/// installation, notes due the builds that ended before there was retention.
pub async fn keep(app: App, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut swept = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(LOOK_EVERY) => {}
        }
        let _busy = app.watchdog.busy("retention's keeper");
        if !swept {
            match sweep(&app).await {
                Ok(0) => swept = true,
                Ok(noted) => {
                    tracing::info!(noted, "builds from before retention noted for it");
                    swept = true;
                }
                Err(error) => tracing::warn!(error = format!("{error:#}"), "the sweep waits"),
            }
        }
        match keep_due(&app).await {
            Ok(0) => {}
            Ok(kept) => tracing::info!(kept, "ended builds archived"),
            Err(error) => tracing::warn!(error = format!("{error:#}"), "retention waits"),
        }
    }
}

/// Notes due every build whose record has no expiry and no due note (it ended before this
/// bot's version), unless a bot has done so already; returns how many. Notes of running
/// builds are dropped by the keeper and come again when they end.
async fn sweep(app: &App) -> anyhow::Result<usize> {
    if app.store.retention_swept().await? {
        return Ok(0);
    }
    let mut noted = 0;
    let mut high = app.store.latest_build_id().await?.map_or(0, |id| id.0);
    while high > 0 {
        let low = high.saturating_sub(SWEEP_BATCH) + 1;
        let ids: Vec<BuildId> = (low..=high).map(BuildId).collect();
        noted += app.store.note_unexpiring(&ids).await?;
        high = low - 1;
    }
    app.store.mark_retention_swept().await?;
    Ok(noted)
}

/// Archives the due builds, batch after batch; returns how many. A build that cannot be
/// archived (the store unreachable) stays claimed, and is tried again once the claim runs out.
async fn keep_due(app: &App) -> anyhow::Result<usize> {
    let mut kept = 0;
    loop {
        let ids = app.store.retention_claim(BATCH, CLAIM).await?;
        if ids.is_empty() {
            return Ok(kept);
        }
        for id in ids {
            match archive_build(app, id).await {
                Ok(()) => {
                    app.store.retention_done(id).await?;
                    kept += 1;
                }
                Err(error) => tracing::warn!(
                    build_id = %id,
                    error = format!("{error:#}"),
                    "cannot archive a build's logs; trying again later"
                ),
            }
        }
    }
}

/// Archives build `id`'s logs, if it ended, and sets its records' and logs' expiry.
async fn archive_build(app: &App, id: BuildId) -> anyhow::Result<()> {
    let Some(record) = app.store.build(id).await? else {
        return Ok(());
    };
    if !record.status.is_final() {
        return Ok(());
    }
    let repo = &record.build.repo;
    let kept = app.config.retention_of(repo.as_str());
    let tasks = match &record.plan {
        Some(plan) => app.store.tasks(id, plan).await?,
        None => Vec::new(),
    };
    let mut logs_ttl = kept.builds;
    if let Some(archive) = &app.logs.archive {
        let mut archived = Vec::new();
        for task in &tasks {
            let lines = app.store.raw_log(id, &task.name).await?;
            if lines.is_empty() {
                // Archived before (a keeper stopped before it was done), or it wrote none.
                archived.extend(task.log_archive.as_ref().map(|log| {
                    let blob = Blob {
                        digest: log.digest.clone(),
                        size: log.size,
                    };
                    (task.name.clone(), blob)
                }));
                continue;
            }
            let count = lines.len() as u64;
            let bytes = tokio::task::spawn_blocking(move || format::encode(&lines)).await?;
            let blob = archive
                .put(repo.as_str(), bytes)
                .await
                .with_context(|| format!("archiving the log of task `{}`", task.name))?;
            let log = ArchivedLog {
                digest: blob.digest.clone(),
                size: blob.size,
                lines: count,
            };
            app.store.log_archived(id, &task.name, &log).await?;
            archived.push((task.name.clone(), blob));
        }
        if !archived.is_empty() {
            archive
                .keep(repo.as_str(), id, &archived)
                .await
                .context("naming the archived logs")?;
        }
        logs_ttl = kept.logs_in_redis;
    }
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    app.store
        .expire_build(id, &names, kept.builds, logs_ttl)
        .await?;
    Ok(())
}

//! Superseded builds: in a repository whose builds are `interruptible`, a newer push to a
//! branch cancels the branch's older push builds still queued or running whose commits the
//! new one descends from, each with the newer build named on its card. `master`, `main` and the branches of `promote` are left
//! alone unless `interruptible_default_branch` says otherwise.

use kiln_shared::build::BuildId;
use kiln_shared::trigger::TriggerKind;

use crate::app::App;
use crate::lifecycle::{self, Cancel};
use crate::store::BuildRecord;

/// Builds looked back over, newest first, for older builds of the branch.
const LOOKBACK: u64 = 200;

/// Cancels the builds `record`, a push's just planned, supersedes; returns their numbers.
pub async fn cancel_older(app: &App, record: &BuildRecord) -> anyhow::Result<Vec<BuildId>> {
    let build = &record.build;
    let interrupts = app
        .config
        .repository(&build.repo)
        .is_some_and(|r| r.interrupts(&build.branch));
    if record.kind != TriggerKind::Push || !interrupts {
        return Ok(Vec::new());
    }
    let by = format!("build #{}, a newer push to {}", build.id, build.branch);
    let mut cancelled = Vec::new();
    for older in app.store.recent_builds(LOOKBACK).await? {
        let candidate = older.build.id < build.id
            && older.kind == TriggerKind::Push
            && !older.status.is_final()
            && older.build.repo.eq_ignore_ascii_case(&build.repo)
            && older.build.branch == build.branch
            && older.build.commit != build.commit;
        // Only what the new commit carries on from: a retry of an old commit, or a push held
        // while Redis was away, supersedes nothing newer.
        let superseded = candidate
            && app
                .mirrors
                .is_ancestor(&record.clone_url, &older.build.commit, &build.commit)
                .await?;
        if superseded
            && let Cancel::Cancelled { .. } =
                lifecycle::cancel_build(app, older.build.id, &by).await?
        {
            tracing::info!(build_id = %older.build.id, by = %build.id, "superseded build cancelled");
            cancelled.push(older.build.id);
        }
    }
    Ok(cancelled)
}

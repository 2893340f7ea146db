//! Review environments: what each branch's builds deployed (a step with `environment:` that
//! passed), and stopping them when the branch goes (deleted, or its pull or merge request
//! closed or merged): a build of kind `stop`, at the commit deployed last, that runs the
//! spec's `on_stop` steps and nothing else.

use kiln_shared::build::BuildId;
use kiln_shared::trigger::{BranchGone, TriggerKind};
use kiln_shared::wire::NewBuild;

use crate::app::App;
use crate::config::Repository;
use crate::ingress::{self, Unavailable};
use crate::store::{BuildRecord, Deployed};

/// Records that `record`'s build deployed `environment`; if its branch went while it ran,
/// stops it at once.
pub async fn deployed(app: &App, record: &BuildRecord, environment: &str) -> anyhow::Result<()> {
    let b = &record.build;
    let deployed = Deployed {
        commit: b.commit.clone(),
        clone_url: record.clone_url.clone(),
        build: b.id,
    };
    app.store
        .deployed(&b.repo, &b.branch, environment, &deployed)
        .await?;
    if app
        .store
        .built_before_gone(&b.repo, &b.branch, b.id)
        .await?
        && let Some(repo) = app.config.repository(&b.repo)
    {
        // The branch went while this build ran: what it deployed is stopped at once.
        let gone = BranchGone {
            repo: b.repo.clone(),
            branch: b.branch.clone(),
            why: format!("gone while build #{} deployed {environment}", b.id),
        };
        stop(app, repo, &gone).await?;
    }
    Ok(())
}

/// Stops the environments of the branch that went: the stop build's id and the
/// environments' names, or `None` when the branch deployed none.
pub async fn stop(
    app: &App,
    repo: &Repository,
    gone: &BranchGone,
) -> Result<Option<(BuildId, Vec<String>)>, Unavailable> {
    if let Some(newest) = app.store.latest_build_id().await? {
        app.store
            .branch_gone(&repo.name, &gone.branch, newest)
            .await?;
    }
    let taken = app
        .store
        .take_environments(&repo.name, &gone.branch)
        .await?;
    let Some((_, last)) = taken.iter().max_by_key(|(_, d)| d.build) else {
        return Ok(None);
    };
    let names: Vec<String> = taken.iter().map(|(name, _)| name.clone()).collect();
    let requested = ingress::accept_command(
        app,
        None,
        NewBuild {
            repo: repo.name.clone(),
            branch: gone.branch.clone(),
            commit: last.commit.clone(),
            clone_url: last.clone_url.clone(),
            author: String::new(),
            subject: format!("stop {} (branch {})", names.join(", "), gone.why),
            kind: TriggerKind::Stop,
            changed_paths: None,
            reuse: None,
            note: None,
            vars: Default::default(),
            request: None,
            rerun: None,
            priority: repo.priority_of(TriggerKind::Stop, &gone.branch),
        },
    )
    .await;
    match requested {
        Ok(id) => {
            tracing::info!(build_id = %id, repo = %repo.name, branch = %gone.branch,
                environments = ?names, why = %gone.why, "stopping environments");
            Ok(Some((id, names)))
        }
        Err(error) => {
            // Kept for the forge's retry of this delivery.
            let _ = app
                .store
                .restore_environments(&repo.name, &gone.branch, &taken)
                .await;
            Err(error)
        }
    }
}

//! Reconciliation: no push is missed for good. A webhook lost while the bot was down (the
//! forges do not deliver it again by themselves) would otherwise be a build that silently
//! never happens.
//!
//! Every `[reconcile] every`, each bot fetches each repository's branches into its mirror
//! and compares their heads with the newest push each branch was built for
//! ([`crate::store::Store::branch_heads`]). A head never built is built as a push, noted
//! [`FOUND`] on its card; once per branch and commit across bots, as a delivery of its own.
//!
//! A head is built when two passes in a row saw it unbuilt, so that a webhook on its way
//! builds it rather than both; the first pass after the bot starts builds at once, since
//! what was pushed while it was down has no webhook coming. A branch no webhook ever named
//! is left alone unless the repository's `reconcile_branches` names it.

use std::collections::HashMap;

use kiln_shared::ident::{BranchName, CommitId, RepoName};
use kiln_shared::trigger::{Push, Pushed};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Repository;
use crate::ingress::{self, Accepted};
use crate::mirror::Head;
use crate::repositories;

/// What a build found by reconciliation says on its card.
pub const FOUND: &str = "found by reconciliation";

/// The "forge" of reconciliation's deliveries, in their keys.
pub const DOOR: &str = "reconcile";

/// The most builds one pass starts; the rest wait for the next.
const BUILDS_PER_PASS: usize = 20;

/// Heads seen unbuilt in a pass, by repository and branch.
type Unbuilt = HashMap<(RepoName, BranchName), CommitId>;

/// Reconciles every `[reconcile] every` until `shutdown`, the first time at once; not at
/// all when that is zero.
pub async fn reconcile(app: App, shutdown: CancellationToken) -> anyhow::Result<()> {
    let every = app.config.reconcile.every;
    if every.is_zero() {
        return Ok(());
    }
    let mut unbuilt = Unbuilt::new();
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(every) => {}
            }
        }
        let _busy = app.watchdog.busy("reconciliation");
        let mut seen = Unbuilt::new();
        let mut built = 0;
        for repo in &app.config.repositories {
            let pass = Pass {
                app: &app,
                repo,
                last: &unbuilt,
                first,
            };
            match pass.run(&mut seen, &mut built).await {
                Ok(()) => {}
                Err(error) => tracing::warn!(repo = %repo.name, error = format!("{error:#}"),
                    "reconciliation waits for the next pass"),
            }
        }
        if built > 0 {
            tracing::info!(built, "pushes no webhook announced are built");
        }
        unbuilt = seen;
        first = false;
    }
}

/// One pass over one repository.
struct Pass<'a> {
    app: &'a App,
    repo: &'a Repository,
    /// What the pass before saw unbuilt.
    last: &'a Unbuilt,
    /// Whether this is the bot's first pass.
    first: bool,
}

impl Pass<'_> {
    /// Builds the repository's unbuilt heads that are due, counting them in `built`, and
    /// notes in `seen` those left for the next pass.
    async fn run(&self, seen: &mut Unbuilt, built: &mut usize) -> anyhow::Result<()> {
        let (app, repo) = (self.app, self.repo);
        let Some(clone_url) = repositories::clone_url(app, repo).await? else {
            return Ok(()); // Never pushed to, and no clone URL configured.
        };
        let heads = app.mirrors.branch_heads(&clone_url).await?;
        let known = app.store.branch_heads(&repo.name).await?;
        for branch in known.keys() {
            if !heads.iter().any(|head| head.branch == *branch) {
                app.store.forget_branch_head(&repo.name, branch).await?;
            }
        }
        for head in heads {
            let told = known.get(&head.branch);
            if told == Some(&head.commit)
                || (told.is_none() && !app.config.reconciles_unknown(&repo.name, &head.branch))
            {
                continue;
            }
            let key = (repo.name.clone(), head.branch.clone());
            let again = self.last.get(&key) == Some(&head.commit);
            if !(self.first || again) || *built == BUILDS_PER_PASS {
                seen.insert(key, head.commit);
                continue;
            }
            self.build(head, &clone_url).await?;
            *built += 1;
        }
        Ok(())
    }

    async fn build(&self, head: Head, clone_url: &str) -> anyhow::Result<()> {
        let (app, repo) = (self.app, self.repo);
        let push = Push {
            repo: repo.name.clone(),
            branch: head.branch.clone(),
            pushed: Pushed::Branch,
            commit: head.commit.clone(),
            clone_url: clone_url.to_owned(),
            author: head.author,
            subject: head.subject,
            changed_paths: None,
        };
        // One delivery per branch and commit, however many bots find it.
        let delivery = format!("{}:{}:{}", repo.name, head.branch, head.commit);
        let note = Some(FOUND.to_owned());
        let accepted = ingress::accept_noted(app, repo, DOOR, &delivery, push, note).await?;
        if let Accepted::Promoted(_) = accepted {
            // A promotion moved the branch and builds it; nothing more to find there.
            app.store
                .note_branch_head(&repo.name, &head.branch, &head.commit)
                .await?;
        }
        tracing::info!(repo = %repo.name, branch = %head.branch, commit = %head.commit,
            ?accepted, "a push no webhook announced is built");
        Ok(())
    }
}

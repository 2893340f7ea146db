//! `promote` and `approve`: moving a repository's `production` branch to a commit of
//! `master` whose build passed, by fast-forward, once others approved it.
//!
//! The rules are [`kiln_shared::promotion`]'s; this module holds them against the repository
//! (a bare mirror, fetched first), Redis (the promotion, its approvals, its repository's slot)
//! and RabbitMQ (an event for every step). The push is a plain `git push`, which the remote
//! refuses unless it is a fast-forward; a rollback is the one push that moves the branch
//! back, and only from exactly where Kiln last put it (`--force-with-lease`).

use kiln_shared::build::{BuildId, BuildStatus};
use kiln_shared::command::Target;
use kiln_shared::ident::{BranchName, CommitId, RepoName};
use kiln_shared::promotion::{
    Approver, BuildSummary, PromotionEvent, PromotionId, PromotionStatus, Refusal, may_approve,
    passing_build, rollback_target,
};
use kiln_shared::trigger::TriggerKind;
use kiln_shared::view::PromotionMessage;
use kiln_shared::wire::NewBuild;

use crate::app::App;
use crate::commands::actor::Actor;
use crate::commands::reply::Reply;
use crate::config::Promote;
use crate::mirror::Pushed;
use crate::notify::Buttons;
use crate::store::{Approved, BuildRecord, PromotionRecord};
use crate::{ingress, repositories};

/// Builds a promotion looks back over, newest first, for the ones of a commit.
const BUILD_LOOKBACK: u64 = 500;

/// `promote <repo> [commit] [--rollback]`.
pub async fn promote(
    app: &App,
    actor: Actor<'_>,
    repo: &RepoName,
    commit: Option<&CommitId>,
    rollback: bool,
) -> anyhow::Result<Reply> {
    let Some(repository) = app.config.repository(repo) else {
        return Ok(Reply::invalid(format!("Kiln does not build {repo}.")));
    };
    let Some(gates) = &repository.promote else {
        return Ok(Reply::invalid(format!(
            "Kiln does not promote {repo}: its configuration has no `[repository.promote]`."
        )));
    };
    let name = &repository.name;
    let Some(clone_url) = repositories::clone_url(app, repository).await? else {
        return Ok(Reply::invalid(format!(
            "Kiln does not know where to fetch {repo} from yet: push to it once, or set its \
             `clone_url` in Kiln's configuration."
        )));
    };
    let heads = app
        .mirrors
        .heads(&clone_url, &[&gates.from, &gates.to])
        .await?;
    let [Some(source), production] = [heads[0].clone(), heads[1].clone()] else {
        return Ok(Reply::invalid(format!(
            "{repo} has no branch `{}`.",
            gates.from
        )));
    };
    let chosen = choose(
        app,
        name,
        gates,
        &clone_url,
        &source,
        production.as_ref(),
        commit,
        rollback,
    )
    .await?;
    let (commit, build) = match chosen {
        Ok(chosen) => chosen,
        Err(Chosen::Refused(refusal)) => {
            return Ok(refuse(app, actor, name, gates, (None, None), &refusal).await);
        }
        Err(Chosen::NoCommit(prefix)) => {
            return Ok(Reply::invalid(format!("{repo} has no commit `{prefix}`.")));
        }
    };
    // Checked again, atomically, when it begins; this spares a number.
    if let Some(holder) = app.store.promoting(name).await? {
        let about = (None, Some(&commit));
        return Ok(refuse(app, actor, name, gates, about, &Refusal::InFlight(holder)).await);
    }
    let record = PromotionRecord {
        id: app.store.next_promotion_id().await?,
        repo: name.clone(),
        clone_url,
        to: gates.to.clone(),
        commit,
        previous: production,
        rollback,
        build,
        requester: actor.id.to_owned(),
        requester_name: actor.name.to_owned(),
        channel: actor.channel.cloned(),
        required: gates.approvals,
        status: PromotionStatus::AwaitingApproval,
        detail: None,
        started: None,
        approvals: Vec::new(),
        card: None,
    };
    if let Err(holder) = app
        .store
        .begin_promotion(&record, gates.approval_ttl)
        .await?
    {
        let refusal = Refusal::InFlight(holder);
        let about = (None, Some(&record.commit));
        return Ok(refuse(app, actor, name, gates, about, &refusal).await);
    }
    announce(app, event(&record, "requested", Some(actor.id), 0)).await;
    show(app, record.id).await;
    if gates.approvals == 0 {
        if !app.store.start_pushing(record.id).await? {
            return Ok(Reply::invalid(format!(
                "Promotion #{} was taken up meanwhile.",
                record.id
            )));
        }
        return push(app, &record, gates, 0).await;
    }
    Ok(Reply::done(format!(
        "Promotion #{id}: {what} (build #{build} passed). It needs {n} approval(s) from \
         approvers other than {who}: `approve {id}`.",
        id = record.id,
        what = describe(&record),
        build = record.build,
        n = gates.approvals,
        who = actor.name,
    )))
}

/// `approve <promotion>`.
pub async fn approve(app: &App, actor: Actor<'_>, id: PromotionId) -> anyhow::Result<Reply> {
    let Some(record) = app.store.promotion(id).await? else {
        return Ok(Reply::invalid(format!("There is no promotion #{id}.")));
    };
    let Some(gates) = app
        .config
        .repository(&record.repo)
        .and_then(|r| r.promote.as_ref())
    else {
        return Ok(Reply::invalid(format!(
            "Kiln no longer promotes {}: its configuration has no `[repository.promote]`.",
            record.repo
        )));
    };
    let approver = Approver {
        id: actor.id,
        roles: actor.roles,
        person: &app.config.person_key(actor.id),
    };
    let requester = app.config.person_key(&record.requester);
    if let Err(refusal) = may_approve(&requester, approver, &gates.approvers) {
        let about = (Some(id), Some(&record.commit));
        let reply = refuse(app, actor, &record.repo, gates, about, &refusal).await;
        return Ok(Reply::refused(reply.text));
    }
    let approved = app
        .store
        .approve_promotion(&record, approver.person, actor.name, gates.approval_ttl)
        .await?;
    match approved {
        Approved::Ended => Ok(Reply::invalid(format!(
            "Promotion #{id} has ended ({}).",
            record.status
        ))),
        Approved::Lapsed => {
            announce(app, event(&record, "lapsed", None, 0)).await;
            show(app, id).await;
            Ok(Reply::invalid(format!(
                "Promotion #{id} lapsed: it went {} without an approval. `promote {}` asks again.",
                humantime::format_duration(gates.approval_ttl),
                record.repo
            )))
        }
        Approved::Counted(count) => {
            announce(app, event(&record, "approved", Some(actor.id), count)).await;
            show(app, id).await;
            Ok(Reply::done(format!(
                "Promotion #{id} approved by {}: {count} of {} approval(s).",
                actor.name, record.required
            )))
        }
        Approved::Ready(count) => {
            announce(app, event(&record, "approved", Some(actor.id), count)).await;
            push(app, &record, gates, count).await
        }
    }
}

/// Why a promotion could not choose its commit.
enum Chosen {
    Refused(Refusal),
    /// No commit starts with this.
    NoCommit(CommitId),
}

impl From<Refusal> for Chosen {
    fn from(refusal: Refusal) -> Self {
        Self::Refused(refusal)
    }
}

/// The commit a promotion moves the branch to, and the build that passed it.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site, each argument named there"
)]
async fn choose(
    app: &App,
    repo: &RepoName,
    gates: &Promote,
    clone_url: &str,
    source: &CommitId,
    production: Option<&CommitId>,
    commit: Option<&CommitId>,
    rollback: bool,
) -> anyhow::Result<Result<(CommitId, BuildId), Chosen>> {
    let builds = builds_of(app, repo, &gates.from).await?;
    let summaries = |commit: &CommitId| -> Vec<BuildSummary> {
        builds
            .iter()
            .filter(|(record, _)| &record.build.commit == commit)
            .map(|(_, summary)| summary.clone())
            .collect()
    };
    if rollback {
        let promoted = app.store.promoted(repo).await?;
        let target = match rollback_target(&promoted, production, &gates.to) {
            Ok(target) => target.clone(),
            Err(refusal) => return Ok(Err(refusal.into())),
        };
        return Ok(passing_build(&target, &summaries(&target), &gates.requires)
            .map(|build| (target, build))
            .map_err(Chosen::from));
    }
    let commit = match commit {
        Some(prefix) => {
            let target = Target::Commit(prefix.clone());
            let Some(resolved) = app.mirrors.resolve(clone_url, &target).await? else {
                return Ok(Err(Chosen::NoCommit(prefix.clone())));
            };
            resolved.commit
        }
        None => {
            // The newest build of the source branch that passed, of a commit production
            // lacks.
            let mut newest = None;
            for (record, _) in &builds {
                let candidate = &record.build.commit;
                if record.status != BuildStatus::Passed
                    || !app
                        .mirrors
                        .is_ancestor(clone_url, candidate, source)
                        .await?
                {
                    continue;
                }
                if let Some(production) = production
                    && app
                        .mirrors
                        .is_ancestor(clone_url, candidate, production)
                        .await?
                {
                    // In production already (a build of an older commit, say, retried).
                    continue;
                }
                if passing_build(candidate, &summaries(candidate), &gates.requires).is_ok() {
                    newest = Some(candidate.clone());
                    break;
                }
            }
            let Some(newest) = newest else {
                return Ok(Err(Refusal::NothingToPromote {
                    from: gates.from.clone(),
                    to: gates.to.clone(),
                }
                .into()));
            };
            newest
        }
    };
    if !app.mirrors.is_ancestor(clone_url, &commit, source).await? {
        return Ok(Err(Refusal::NotOnSource {
            commit,
            from: gates.from.clone(),
        }
        .into()));
    }
    let build = match passing_build(&commit, &summaries(&commit), &gates.requires) {
        Ok(build) => build,
        Err(refusal) => return Ok(Err(refusal.into())),
    };
    if let Some(production) = production {
        if *production == commit {
            return Ok(Err(Refusal::AlreadyThere {
                commit,
                to: gates.to.clone(),
            }
            .into()));
        }
        if !app
            .mirrors
            .is_ancestor(clone_url, production, &commit)
            .await?
        {
            return Ok(Err(Refusal::NotFastForward {
                commit,
                to: gates.to.clone(),
            }
            .into()));
        }
    }
    Ok(Ok((commit, build)))
}

/// The recent builds of `repo`'s `branch`, newest first, each with what its tasks did.
async fn builds_of(
    app: &App,
    repo: &RepoName,
    branch: &BranchName,
) -> anyhow::Result<Vec<(BuildRecord, BuildSummary)>> {
    let mut builds = Vec::new();
    for record in app.store.recent_builds(BUILD_LOOKBACK).await? {
        if !record.build.repo.eq_ignore_ascii_case(repo) || &record.build.branch != branch {
            continue;
        }
        let mut tasks = Vec::new();
        if let Some(plan) = &record.plan {
            let records = app.store.tasks(record.build.id, plan).await?;
            for (planned, task) in plan.tasks.iter().zip(records) {
                tasks.push((planned.step.clone(), task.status));
            }
        }
        let summary = BuildSummary {
            id: record.build.id,
            status: record.status,
            tasks,
        };
        builds.push((record, summary));
    }
    Ok(builds)
}

/// Pushes an approved promotion (already moved to `pushing`), starts the build of the moved
/// branch, and ends the promotion.
async fn push(
    app: &App,
    record: &PromotionRecord,
    gates: &Promote,
    approvals: u32,
) -> anyhow::Result<Reply> {
    let pushed = push_now(app, record, gates, approvals).await;
    if let Err(error) = &pushed {
        // Whatever failed (a fetch, Redis), the promotion ends rather than hold its
        // repository's slot; one that ended already is left as it is.
        let why = format!("{error:#}");
        let _ = app
            .store
            .end_promotion(record, PromotionStatus::Failed, Some(&why), None)
            .await;
        let mut failed = event(record, "failed", None, approvals);
        failed.reason = Some(why);
        announce(app, failed).await;
    }
    show(app, record.id).await;
    pushed
}

async fn push_now(
    app: &App,
    record: &PromotionRecord,
    gates: &Promote,
    approvals: u32,
) -> anyhow::Result<Reply> {
    let id = record.id;
    let heads = app
        .mirrors
        .heads(&record.clone_url, &[&gates.from, &record.to])
        .await?;
    // What held when it was asked for must hold still.
    let moved = if heads[1] != record.previous {
        Some(format!(
            "`{}` moved since the promotion was asked for (from {} to {})",
            record.to,
            short(record.previous.as_deref()),
            short(heads[1].as_deref())
        ))
    } else if !record.rollback {
        match &heads[0] {
            Some(source)
                if app
                    .mirrors
                    .is_ancestor(&record.clone_url, &record.commit, source)
                    .await? =>
            {
                None
            }
            _ => Some(
                Refusal::NotOnSource {
                    commit: record.commit.clone(),
                    from: gates.from.clone(),
                }
                .to_string(),
            ),
        }
    } else {
        None
    };
    if let Some(why) = moved {
        return end_rejected(app, record, approvals, &why).await;
    }
    let push_url = gates.push_url.as_deref().unwrap_or(&record.clone_url);
    let lease = record.previous.as_ref().filter(|_| record.rollback);
    app.store
        .mark_push(&record.repo, &record.to, &record.commit, id)
        .await?;
    let pushed = app
        .mirrors
        .push(
            &record.clone_url,
            push_url,
            &record.commit,
            &record.to,
            lease,
        )
        .await;
    match pushed {
        Ok(Pushed::Moved) => {}
        Ok(Pushed::Rejected(why)) => {
            app.store
                .unmark_push(&record.repo, &record.to, &record.commit)
                .await?;
            let why = format!("the forge refused the push of `{}`: {why}", record.to);
            return end_rejected(app, record, approvals, &why).await;
        }
        Err(error) => {
            app.store
                .unmark_push(&record.repo, &record.to, &record.commit)
                .await?;
            let why = format!("Kiln could not push `{}`: {error}", record.to);
            app.store
                .end_promotion(record, PromotionStatus::Failed, Some(&why), None)
                .await?;
            let mut failed = event(record, "failed", None, approvals);
            failed.reason = Some(why.clone());
            announce(app, failed).await;
            return Ok(Reply::failed(format!("Promotion #{id} failed: {why}.")));
        }
    };
    app.store
        .record_promoted(&record.repo, &record.commit, record.rollback)
        .await?;
    let started = start_build(app, record).await;
    let (started, note) = match started {
        Ok(build) => (Some(build), format!("Build #{build} runs it.")),
        Err(error) => {
            // The forge's webhook for the push builds it instead.
            let _ = app
                .store
                .unmark_push(&record.repo, &record.to, &record.commit)
                .await;
            tracing::error!(promotion = %id, error = %error, "cannot start the promoted build");
            (
                None,
                format!("Kiln could not start its build ({error}); the forge's webhook will."),
            )
        }
    };
    app.store
        .end_promotion(record, PromotionStatus::Promoted, None, started)
        .await?;
    let mut promoted = event(record, "promoted", None, approvals);
    promoted.build = started;
    announce(app, promoted).await;
    Ok(Reply::done(format!(
        "Promotion #{id}: {} is at {} now{}. {note}",
        record.to,
        short(Some(&record.commit)),
        match &record.previous {
            Some(previous) if record.rollback =>
                format!(", rolled back from {}", short(Some(previous))),
            Some(previous) => format!(", fast-forwarded from {}", short(Some(previous))),
            None => String::new(),
        },
    )))
}

/// Requests the build of the moved branch, followed by the channel the promotion was asked
/// in: a push, as the forge would announce it.
async fn start_build(app: &App, record: &PromotionRecord) -> anyhow::Result<BuildId> {
    let (author, subject) = match app.store.build(record.build).await? {
        Some(passed) => (passed.author, passed.subject),
        None => (String::new(), String::new()),
    };
    let id = ingress::accept_command(
        app,
        record.channel.as_ref(),
        NewBuild {
            repo: record.repo.clone(),
            branch: record.to.clone(),
            commit: record.commit.clone(),
            clone_url: record.clone_url.clone(),
            author,
            subject,
            kind: TriggerKind::Push,
            changed_paths: None,
            reuse: None,
            note: None,
            vars: Default::default(),
            request: None,
            rerun: None,
            priority: app
                .config
                .repository(&record.repo)
                .map(|r| r.priority_of(TriggerKind::Push, &record.to))
                .unwrap_or_default(),
        },
    )
    .await?;
    Ok(id)
}

async fn end_rejected(
    app: &App,
    record: &PromotionRecord,
    approvals: u32,
    why: &str,
) -> anyhow::Result<Reply> {
    app.store
        .end_promotion(record, PromotionStatus::Rejected, Some(why), None)
        .await?;
    let mut rejected = event(record, "rejected", None, approvals);
    rejected.reason = Some(why.to_owned());
    announce(app, rejected).await;
    Ok(Reply::invalid(format!(
        "Promotion #{} did not happen: {why}.",
        record.id
    )))
}

/// Announces a refusal (of a promotion asked for, or of an approval of one) and says it to
/// the person.
async fn refuse(
    app: &App,
    actor: Actor<'_>,
    repo: &RepoName,
    gates: &Promote,
    (promotion, commit): (Option<PromotionId>, Option<&CommitId>),
    refusal: &Refusal,
) -> Reply {
    announce(
        app,
        PromotionEvent {
            what: "refused".into(),
            promotion,
            repo: repo.to_owned(),
            branch: gates.to.clone(),
            commit: commit.cloned(),
            rollback: false,
            actor: Some(actor.id.to_owned()),
            approvals: 0,
            required: gates.approvals,
            build: None,
            reason: Some(refusal.to_string()),
        },
    )
    .await;
    let mut text = refusal.to_string();
    if let Some(first) = text.get(..1) {
        text.replace_range(..1, &first.to_uppercase());
    }
    Reply::invalid(format!("{text}."))
}

/// What happened to `record`, as an event.
fn event(
    record: &PromotionRecord,
    what: &str,
    actor: Option<&str>,
    approvals: u32,
) -> PromotionEvent {
    PromotionEvent {
        what: what.to_owned(),
        promotion: Some(record.id),
        repo: record.repo.clone(),
        branch: record.to.clone(),
        commit: Some(record.commit.clone()),
        rollback: record.rollback,
        actor: actor.map(str::to_owned),
        approvals,
        required: record.required,
        build: None,
        reason: None,
    }
}

/// Publishes `event`. A promotion goes on when RabbitMQ cannot take it: the command's entry
/// in the audit stream says what happened all the same.
async fn announce(app: &App, event: PromotionEvent) {
    if let Err(error) = app.broker.publish_promotion(&event).await {
        tracing::error!(%error, key = %event.routing_key(), "cannot publish a promotion event");
    }
}

/// Posts the promotion's card in the channel it was asked in, or brings it up to date:
/// who approved, how it ended, an Approve button while it waits. Chat being down holds up
/// no promotion: the failure is logged.
async fn show(app: &App, id: PromotionId) {
    if let Err(error) = show_now(app, id).await {
        tracing::warn!(promotion = %id, error = format!("{error:#}"), "cannot show a promotion's card");
    }
}

async fn show_now(app: &App, id: PromotionId) -> anyhow::Result<()> {
    let Some(record) = app.store.promotion(id).await? else {
        return Ok(());
    };
    let Some(channel) = record.channel.as_ref().filter(|c| app.chat.can_post(c)) else {
        return Ok(());
    };
    let Some(dialect) = app.chat.dialect(channel) else {
        return Ok(());
    };
    let build_url = format!(
        "{}/builds/{}",
        app.config.public_url.trim_end_matches('/'),
        record.build
    );
    let awaiting = record.status == PromotionStatus::AwaitingApproval;
    let message = PromotionMessage {
        id: id.0,
        repo: record.repo.clone(),
        branch: record.to.clone(),
        short_commit: short(Some(&record.commit)),
        rollback: record.rollback,
        build_id: record.build.0,
        build_url: build_url.clone(),
        requester: record.requester_name.clone(),
        approvers: record.approvals.iter().map(|a| a.name.clone()).collect(),
        required: record.required,
        status: record.status.to_string(),
        icon: match record.status {
            PromotionStatus::AwaitingApproval => "⏳",
            PromotionStatus::Pushing => "🔄",
            PromotionStatus::Promoted => "✅",
            PromotionStatus::Rejected | PromotionStatus::Failed => "❌",
            PromotionStatus::Lapsed => "⌛",
        },
        detail: record.detail.clone(),
        started: record.started.map(|b| b.0),
    };
    let text = app.templates.promotion(dialect, &message)?;
    let buttons = Buttons {
        commands: if awaiting {
            vec![("Approve", format!("approve {id}"))]
        } else {
            Vec::new()
        },
        link: ("Build", build_url),
    };
    match &record.card {
        Some(card) => app.chat.edit(channel, card, &text, Some(&buttons)).await,
        None => {
            let card = app.chat.post(channel, &text, Some(&buttons), None).await?;
            app.store.promotion_card(id, &card).await?;
            Ok(())
        }
    }
}

/// `acme/api production → 1a2b3c4d`, or the rollback.
fn describe(record: &PromotionRecord) -> String {
    format!(
        "{} `{}` {} {}",
        record.repo,
        record.to,
        if record.rollback { "back to" } else { "→" },
        short(Some(&record.commit))
    )
}

fn short(commit: Option<&str>) -> String {
    commit.map_or_else(|| "nothing".to_owned(), |c| c.chars().take(8).collect())
}

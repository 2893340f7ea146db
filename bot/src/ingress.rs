//! Accepting a build: what every trigger does once its request has been verified and
//! translated, whichever forge or chat it came from.
//!
//! A build is accepted once its record is in Redis together with an outbox entry (and, for a
//! forge's push, the delivery marked seen), all in one script. Its request is then published
//! and, once RabbitMQ confirms it, taken out of the outbox. If the broker cannot take it now,
//! the build stays accepted and the outbox's relay ([`crate::outbox`]) publishes it when the
//! broker is back. A Redis that cannot record the build is the caller's to answer: the
//! forges' door holds a push in RabbitMQ until Redis is back ([`accept_held`]); a command is
//! refused.

use std::time::Duration;

use kiln_shared::build::BuildId;
use kiln_shared::ident::ChannelName;
use kiln_shared::promotion::PromotionId;
use kiln_shared::trigger::{Push, Pushed, Request, TriggerKind};
use kiln_shared::wire::{BuildRequested, Event, NewBuild, PushHeld};

use crate::amqp::PublishError;
use crate::app::App;
use crate::config::Repository;
use crate::store::Created;

/// The longest an answer waits for RabbitMQ's confirm of its publish. GitHub gives a
/// delivery 10 s, and Redis's part of the answer must fit beside it: a broker that takes the
/// connection and never answers must not keep a webhook past that. A publish not confirmed
/// by then is left to the outbox (a build) or refused (a comment's command).
pub const BROKER_BUDGET: Duration = Duration::from_secs(4);

/// What became of a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// A new build; `waiting` when its request waits in the outbox for RabbitMQ.
    New { id: BuildId, waiting: bool },
    /// The same delivery was accepted before, as this build.
    Duplicate(BuildId),
    /// The push was a promotion's, which builds it.
    Promoted(PromotionId),
}

/// Kiln could not take the build now; the sender should retry.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("Redis is unavailable: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Accepts a push delivered as `delivery` by `forge`, at most once per delivery.
pub async fn accept_push(
    app: &App,
    repo: &Repository,
    forge: &str,
    delivery: &str,
    push: Push,
) -> Result<Accepted, Unavailable> {
    accept_noted(app, repo, forge, delivery, push, None).await
}

/// [`accept_push`], with `note` on the build's card (why it was built, when there is more to
/// say than a push).
pub async fn accept_noted(
    app: &App,
    repo: &Repository,
    forge: &str,
    delivery: &str,
    push: Push,
    note: Option<String>,
) -> Result<Accepted, Unavailable> {
    let store = &app.store;
    if let Some(promote) = &repo.promote
        && push.pushed == Pushed::Branch
        && push.branch == promote.to
        && let Some(promotion) = store
            .pushed_by(&repo.name, &push.branch, &push.commit)
            .await?
    {
        return Ok(Accepted::Promoted(promotion));
    }
    let kind = push.pushed.trigger();
    let new = NewBuild {
        repo: repo.name.clone(),
        priority: repo.priority_of(kind, &push.branch),
        branch: push.branch,
        commit: push.commit,
        clone_url: repo.clone_url.clone().unwrap_or(push.clone_url),
        author: push.author,
        subject: push.subject,
        kind,
        changed_paths: push.changed_paths,
        reuse: None,
        note,
        vars: Default::default(),
        request: None,
        rerun: None,
    };
    accept_new(app, forge, delivery, new).await
}

/// What became of a pull or merge request's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestAccepted {
    /// Built (or a build of it already was).
    Built(Accepted),
    /// From a fork, by an author the configuration does not trust: it waits for a writer's
    /// `/kiln ok-to-test`.
    Waits,
}

/// Accepts the head of `request`, delivered as `delivery` by `forge`: built at once, unless
/// it comes from a fork whose owner is not trusted. A fork's build gets no secrets.
pub async fn accept_request(
    app: &App,
    repo: &Repository,
    forge: &str,
    delivery: &str,
    request: Request,
) -> Result<RequestAccepted, Unavailable> {
    if request.about.from_fork && !repo.trusts(&request.head_owner) {
        return Ok(RequestAccepted::Waits);
    }
    let new = request_build(repo, request);
    Ok(RequestAccepted::Built(
        accept_new(app, forge, delivery, new).await?,
    ))
}

/// The build of `request`'s head.
pub fn request_build(repo: &Repository, request: Request) -> NewBuild {
    let about = request.about;
    NewBuild {
        repo: repo.name.clone(),
        branch: about.branch(),
        commit: request.head,
        clone_url: repo.clone_url.clone().unwrap_or(request.clone_url),
        author: request.author,
        subject: request.title,
        kind: TriggerKind::MergeRequest,
        changed_paths: None,
        reuse: None,
        note: Some(format!(
            "request #{} from {}{} into {}",
            about.number,
            if about.from_fork { "a fork's " } else { "" },
            about.source_branch,
            about.target_branch
        )),
        vars: Default::default(),
        priority: repo.priority_of(TriggerKind::MergeRequest, &about.target_branch),
        request: Some(about),
        rerun: None,
    }
}

/// Accepts `new`, asked for by `delivery` from `forge` (or another door: a schedule's),
/// at most once per delivery.
pub async fn accept_new(
    app: &App,
    forge: &str,
    delivery: &str,
    new: NewBuild,
) -> Result<Accepted, Unavailable> {
    let request = match app.store.create_build(new, Some((forge, delivery))).await? {
        Created::New(request) => request,
        Created::Seen(existing) => return Ok(Accepted::Duplicate(existing)),
    };
    let waiting = !announce(app, &request).await;
    Ok(Accepted::New {
        id: request.build.id,
        waiting,
    })
}

/// Accepts a push that was held in RabbitMQ while Redis was unreachable, as [`accept_push`]
/// would have when it came; a failure (Redis still away) hands it back to wait again. A push
/// for a repository no longer configured is dropped.
pub async fn accept_held(app: &App, held: PushHeld) -> anyhow::Result<()> {
    let Some(repo) = app.config.repository(&held.repo) else {
        tracing::warn!(repo = %held.repo, delivery = %held.delivery,
            "a held push for a repository no longer configured is dropped");
        return Ok(());
    };
    let accepted = accept_push(app, repo, &held.forge, &held.delivery, held.push).await?;
    tracing::info!(repo = %held.repo, forge = %held.forge, delivery = %held.delivery,
        ?accepted, "a push held while Redis was away is accepted");
    Ok(())
}

/// Accepts a build someone asked for with a command given in `channel` (which then follows
/// the build, if Kiln can post there); returns its number.
pub async fn accept_command(
    app: &App,
    channel: Option<&ChannelName>,
    new: NewBuild,
) -> Result<BuildId, Unavailable> {
    let request = match app.store.create_build(new, None).await? {
        Created::New(request) => request,
        // Without a delivery, every build is new.
        Created::Seen(id) => return Ok(id),
    };
    let id = request.build.id;
    if let Some(channel) = channel.filter(|c| app.chat.can_post(c))
        && let Err(error) = app.store.follow_build(id, channel).await
    {
        let _ = app.store.delete_build(id).await;
        return Err(error.into());
    }
    announce(app, &request).await;
    Ok(id)
}

/// Publishes `build.requested` for a build just stored and in the outbox, and takes it out
/// once RabbitMQ confirms it. Returns whether it did; if not, the build waits in the outbox,
/// due at once, and the relay is told.
async fn announce(app: &App, request: &BuildRequested) -> bool {
    let id = request.build.id;
    tracing::info!(build_id = %id, repo = %request.build.repo,
        branch = %request.build.branch, commit = %request.build.commit, kind = ?request.kind,
        "build accepted");
    let event = Event::BuildRequested(request.clone());
    let published = tokio::time::timeout(BROKER_BUDGET, app.broker.publish_event(&event)).await;
    match published.unwrap_or_else(|_| Err(PublishError::NotWithin(BROKER_BUDGET))) {
        Ok(()) => {
            // Off the answer's path: if this is lost, the relay publishes the build again
            // after the grace, and planning it twice changes nothing.
            let store = app.store.clone();
            tokio::spawn(async move {
                if let Err(error) = store.outbox_done(&[id]).await {
                    tracing::warn!(build_id = %id, %error, "cannot take a build out of the outbox");
                }
            });
            true
        }
        Err(error) => {
            tracing::warn!(build_id = %id, %error, "RabbitMQ did not take the build; it waits in the outbox");
            if let Err(error) = app.store.outbox_later(&[id], Duration::ZERO).await {
                tracing::warn!(build_id = %id, %error, "the build waits for the outbox's grace");
            }
            app.outbox.poke();
            false
        }
    }
}

//! Accepting a build: what every trigger does once its request has been verified and
//! translated, whichever forge or chat it came from.
//!
//! A build is accepted only when its request is durably on RabbitMQ (confirmed). If Redis or
//! RabbitMQ cannot take it, nothing is half-recorded and the caller is told to retry.

use kiln_shared::build::BuildId;
use kiln_shared::promotion::PromotionId;
use kiln_shared::trigger::{Push, TriggerKind};
use kiln_shared::wire::{BuildRef, BuildRequested, Event};

use crate::app::App;
use crate::config::Repository;

/// What became of a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// A new build.
    New(BuildId),
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
    #[error(transparent)]
    Broker(#[from] crate::amqp::PublishError),
}

/// Accepts a push delivered as `delivery` by `forge`, at most once per delivery.
pub async fn accept_push(
    app: &App,
    repo: &Repository,
    forge: &str,
    delivery: &str,
    push: Push,
) -> Result<Accepted, Unavailable> {
    let store = &app.store;
    if let Some(promote) = &repo.promote
        && push.branch == promote.to
        && let Some(promotion) = store
            .pushed_by(&repo.name, &push.branch, &push.commit)
            .await?
    {
        return Ok(Accepted::Promoted(promotion));
    }
    let mut request = BuildRequested {
        build: BuildRef {
            id: BuildId(0),
            repo: repo.name.clone(),
            branch: push.branch,
            commit: push.commit,
        },
        clone_url: repo.clone_url.clone().unwrap_or(push.clone_url),
        author: push.author,
        subject: push.subject,
        kind: TriggerKind::Push,
        changed_paths: push.changed_paths,
        reuse: None,
    };
    if let Some(existing) = store
        .create_build(&mut request, Some((forge, delivery)))
        .await?
    {
        return Ok(Accepted::Duplicate(existing));
    }
    if let Err(error) = announce(app, &request).await {
        // Undo, so the forge's retry is not taken for a duplicate. If Redis is what failed,
        // this may fail too; the delivery key then expires on its own.
        let _ = store.forget_delivery(forge, delivery).await;
        return Err(error);
    }
    Ok(Accepted::New(request.build.id))
}

/// Accepts a build someone asked for with a command given in `channel` (which then follows
/// the build, if Kiln can post there). `request`'s id is not looked at: the build is given
/// a new one, which is returned.
pub async fn accept_command(
    app: &App,
    channel: Option<&str>,
    mut request: BuildRequested,
) -> Result<BuildId, Unavailable> {
    app.store.create_build(&mut request, None).await?;
    let id = request.build.id;
    if let Some(channel) = channel.filter(|c| app.chat.can_post(c))
        && let Err(error) = app.store.follow_build(id, channel).await
    {
        let _ = app.store.delete_build(id).await;
        return Err(error.into());
    }
    announce(app, &request).await?;
    Ok(id)
}

/// Publishes `build.requested` for a build just stored, confirmed; removes the record again
/// if that fails.
async fn announce(app: &App, request: &BuildRequested) -> Result<(), Unavailable> {
    let event = Event::BuildRequested(request.clone());
    if let Err(error) = app.broker.publish_event(&event).await {
        let _ = app.store.delete_build(request.build.id).await;
        return Err(error.into());
    }
    tracing::info!(build = %request.build.id, repo = %request.build.repo,
        branch = %request.build.branch, commit = %request.build.commit, kind = ?request.kind,
        "build accepted");
    Ok(())
}

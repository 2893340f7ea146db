//! The one webhook door of every forge: an extractor ([`Delivery`]) finds the delivery's
//! repository, verifies it against the repository's secret and translates it, through the
//! forge's [`Door`] (`crate::vendors::github::door`, `crate::vendors::gitlab::door`); then a
//! push becomes a build (`202`, or `200` for a delivery seen before), anything else is
//! answered with why nothing happened.

use std::marker::PhantomData;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kiln_shared::build::BuildId;
use kiln_shared::trigger::{ForgeEvent, Push};
use kiln_shared::wire::{CommentRequested, PushHeld};
use secrecy::ExposeSecret;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::error;
use crate::amqp::PublishError;
use crate::app::App;
use crate::config::{Forge, Repository};
use crate::ingress::{self, Accepted, BROKER_BUDGET, RequestAccepted, Unavailable};
use crate::review;
use crate::spool::Spooled;

/// A refused delivery: the status and why.
#[derive(Debug)]
pub struct Refusal(pub StatusCode, pub String);

impl Refusal {
    /// A delivery that is not what the forge sends (`400`).
    pub fn bad(why: impl ToString) -> Self {
        Self(StatusCode::BAD_REQUEST, why.to_string())
    }

    /// A delivery that is not signed as it must be (`401`).
    pub fn unsigned(why: impl Into<String>) -> Self {
        Self(StatusCode::UNAUTHORIZED, why.into())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

/// How one forge's deliveries are found, verified and translated; nothing else happens at
/// the door.
pub trait Door: Send + Sync + 'static {
    /// The forge the door is for.
    const FORGE: Forge;
    /// What the forge calls a repository, for answers: `GitHub repository`.
    const REPOSITORY: &str;

    /// The repository the delivery names, read before it is verified; or why the delivery
    /// cannot be one (a header missing, a body that is no event).
    fn repository(headers: &HeaderMap, body: &[u8]) -> Result<String, Refusal>;

    /// Whether the delivery is signed with `secret`, the repository's webhook secret.
    fn verify(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<(), Refusal>;

    /// The verified delivery, translated.
    fn translate(headers: &HeaderMap, body: &[u8]) -> Result<ForgeEvent, Refusal>;

    /// The delivery's identity, the same on the forge's retries; empty when it has none.
    fn delivery(headers: &HeaderMap, body: &[u8]) -> String;
}

/// A delivery through door `D`, verified and translated.
#[derive(Debug)]
pub struct Delivery<D> {
    pub repo: Repository,
    pub id: String,
    pub event: ForgeEvent,
    door: PhantomData<D>,
}

impl<D: Door> FromRequest<App> for Delivery<D> {
    type Rejection = Response;

    async fn from_request(request: Request, app: &App) -> Result<Self, Response> {
        let headers = request.headers().clone();
        let body = Bytes::from_request(request, app)
            .await
            .map_err(IntoResponse::into_response)?;
        let name = D::repository(&headers, &body).map_err(IntoResponse::into_response)?;
        let Some(repo) = app.config.repository(&name) else {
            tracing::warn!(repo = %name, forge = D::FORGE.as_str(), "webhook for a repository Kiln does not build");
            return Err(error(
                StatusCode::NOT_FOUND,
                format!("repository `{name}` is not configured in Kiln"),
            ));
        };
        if repo.forge != D::FORGE {
            return Err(error(
                StatusCode::NOT_FOUND,
                format!(
                    "repository `{name}` is not configured as a {} (`forge`)",
                    D::REPOSITORY
                ),
            ));
        }
        let id = D::delivery(&headers, &body);
        if let Err(refusal) = D::verify(
            repo.webhook_secret.expose_secret().as_bytes(),
            &headers,
            &body,
        ) {
            tracing::warn!(repo = %name, forge = D::FORGE.as_str(), delivery = %id, why = %refusal.1, "webhook refused");
            return Err(refusal.into_response());
        }
        let event = D::translate(&headers, &body).map_err(IntoResponse::into_response)?;
        Ok(Self {
            repo: repo.clone(),
            id,
            event,
            door: PhantomData,
        })
    }
}

/// `POST /hooks/<forge>`: a verified delivery, accepted; one that could only be answered
/// "retry later" is spooled instead, and accepted when it can be.
pub async fn handle<D: Door>(State(app): State<App>, delivery: Delivery<D>) -> Response {
    let spooled = Spooled {
        repo: delivery.repo.name.clone(),
        forge: D::FORGE,
        delivery: delivery.id,
        event: delivery.event,
    };
    let answer = accept(
        &app,
        &delivery.repo,
        D::FORGE,
        &spooled.delivery,
        spooled.event.clone(),
    )
    .await;
    // A comment's command is not spooled: a publish given up on may have reached RabbitMQ
    // all the same, and replayed again and again it could be carried out as many times.
    // A delivery without an id could not be told from its replay.
    let spoolable =
        !matches!(spooled.event, ForgeEvent::Comment(_)) && !spooled.delivery.is_empty();
    if answer.status() != StatusCode::SERVICE_UNAVAILABLE || !spoolable {
        return answer;
    }
    match app.spool.keep(&spooled).await {
        Ok(()) => {
            tracing::warn!(repo = %spooled.repo, forge = D::FORGE.as_str(), delivery = %spooled.delivery,
                "delivery spooled until Redis or RabbitMQ is back");
            (
                StatusCode::ACCEPTED,
                Json(json!({
                    "spooled": true,
                    "message": "Kiln cannot reach its Redis or RabbitMQ now; the delivery is kept and will be accepted when they are back",
                })),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(repo = %spooled.repo, delivery = %spooled.delivery, error = %e, "cannot spool a delivery");
            answer
        }
    }
}

/// How often the spooled deliveries are tried again.
pub const SPOOL_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// How long one spooled delivery's acceptance may take before the pass gives up on it for
/// now (a broker that takes a publish and never confirms it).
const REPLAY_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// Accepts the spooled deliveries again, oldest first, every [`SPOOL_EVERY`], until
/// `shutdown`: each leaves the spool once its answer is not "retry later" (a build, a
/// duplicate, or why nothing happens). A pass stops at the first that must still wait.
pub async fn replay_spooled(app: App, shutdown: CancellationToken) {
    // Accepted, but their files could not be removed: not accepted again by this bot.
    let mut accepted = std::collections::HashSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(SPOOL_EVERY) => {}
        }
        let kept = match app.spool.kept().await {
            Ok(kept) => kept,
            Err(error) => {
                tracing::error!(%error, "cannot read the spool");
                continue;
            }
        };
        for (file, spooled) in kept {
            if accepted.contains(&file) {
                continue;
            }
            let repo = app
                .config
                .repository(spooled.repo.as_str())
                .filter(|r| r.forge == spooled.forge);
            let Some(repo) = repo else {
                tracing::warn!(repo = %spooled.repo, delivery = %spooled.delivery,
                    "a spooled delivery's repository is no longer built from that forge; dropped");
                let _ = app.spool.done(&file).await;
                continue;
            };
            let accepting = accept(&app, repo, spooled.forge, &spooled.delivery, spooled.event);
            let Ok(answer) = tokio::time::timeout(REPLAY_WITHIN, accepting).await else {
                break;
            };
            if answer.status() == StatusCode::SERVICE_UNAVAILABLE {
                break;
            }
            tracing::info!(repo = %spooled.repo, delivery = %spooled.delivery, status = %answer.status(),
                "spooled delivery accepted");
            if let Err(error) = app.spool.done(&file).await {
                tracing::error!(file = %file.display(), %error, "cannot take a delivery out of the spool");
                accepted.insert(file);
            }
        }
    }
}

/// Answers the verified delivery `delivery` from `door`, translated to `event`.
pub async fn accept(
    app: &App,
    repo: &Repository,
    door: Forge,
    delivery: &str,
    event: ForgeEvent,
) -> Response {
    let name = &repo.name;
    let forge = door.as_str();
    match event {
        ForgeEvent::Ping => (StatusCode::OK, Json(json!({ "message": "pong" }))).into_response(),
        ForgeEvent::Comment(_) if delivery.is_empty() => error(
            StatusCode::BAD_REQUEST,
            "a comment without a delivery id cannot be told from its retries",
        ),
        ForgeEvent::Comment(comment) => {
            // A retried delivery must not give the command twice.
            match app.store.claim_comment(forge, delivery).await {
                Ok(true) => {}
                Ok(false) => {
                    return (StatusCode::OK, Json(json!({ "duplicate": true }))).into_response();
                }
                Err(e) => {
                    return error(StatusCode::SERVICE_UNAVAILABLE, format!("{e}; retry later"));
                }
            }
            tracing::info!(repo = %name, forge, delivery, command = %comment.command, "command in a comment");
            let command = comment.command.clone();
            let requested = CommentRequested {
                forge: forge.to_owned(),
                delivery: delivery.to_owned(),
                comment,
            };
            let published =
                tokio::time::timeout(BROKER_BUDGET, app.broker.request_comment(&requested)).await;
            // A publish given up on may still reach RabbitMQ: a retried delivery may then give
            // the command twice, which beats never.
            let published =
                published.unwrap_or_else(|_| Err(PublishError::NotWithin(BROKER_BUDGET)));
            if let Err(broker) = published {
                // Not taken: the forge's retry must find the delivery unclaimed.
                if let Err(e) = app.store.forget_delivery(forge, delivery).await {
                    tracing::error!(forge, delivery, error = %e, "cannot forget a comment's delivery");
                }
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{broker}; retry later"),
                );
            }
            (StatusCode::ACCEPTED, Json(json!({ "command": command }))).into_response()
        }
        ForgeEvent::BranchGone(gone) => match review::stop(app, repo, &gone).await {
            Ok(None) => (
                StatusCode::OK,
                Json(json!({ "ignored": format!("branch `{}` deployed no environment", gone.branch) })),
            )
                .into_response(),
            Ok(Some((id, stopping))) => (
                StatusCode::ACCEPTED,
                Json(json!({ "build_id": id, "url": build_url(app, id), "stopping": stopping })),
            )
                .into_response(),
            Err(e) => {
                tracing::error!(repo = %name, forge, delivery, error = %e, "cannot stop environments");
                error(StatusCode::SERVICE_UNAVAILABLE, format!("{e}; retry later"))
            }
        },
        ForgeEvent::Request(request) => {
            let (number, from) = (request.about.number, request.about.source_branch.clone());
            match ingress::accept_request(app, repo, forge, delivery, request).await {
                Ok(RequestAccepted::Built(accepted)) => answer(app, accepted),
                Ok(RequestAccepted::Waits) => {
                    let reason = format!(
                        "request #{number} comes from a fork ({from}): someone with write \
                         access comments `/kiln ok-to-test` to have it built"
                    );
                    tracing::info!(repo = %name, forge, delivery, %reason, "request waits");
                    (StatusCode::OK, Json(json!({ "ignored": reason }))).into_response()
                }
                Err(e) => {
                    tracing::error!(repo = %name, forge, delivery, error = %e, "cannot accept a request");
                    error(StatusCode::SERVICE_UNAVAILABLE, format!("{e}; retry later"))
                }
            }
        }
        ForgeEvent::Ignored { reason } => {
            tracing::info!(repo = %name, forge, delivery, %reason, "webhook ignored");
            (StatusCode::OK, Json(json!({ "ignored": reason }))).into_response()
        }
        ForgeEvent::Push(push) => {
            match ingress::accept_push(app, repo, forge, delivery, push.clone()).await {
                Ok(accepted) => answer(app, accepted),
                Err(e) => hold(app, repo, forge, delivery, push, e).await,
            }
        }
    }
}

/// What the forge is told of an accepted build: `202` for a new one, `200` for one its
/// delivery made before or a promotion's push.
fn answer(app: &App, accepted: Accepted) -> Response {
    match accepted {
        Accepted::New { id, waiting } => (
            StatusCode::ACCEPTED,
            Json(json!({ "build_id": id, "url": build_url(app, id), "outbox": waiting })),
        )
            .into_response(),
        Accepted::Duplicate(id) => (
            StatusCode::OK,
            Json(json!({ "build_id": id, "url": build_url(app, id), "duplicate": true })),
        )
            .into_response(),
        Accepted::Promoted(promotion) => (
            StatusCode::OK,
            Json(json!({
                "promotion": promotion,
                "message": format!("promotion #{promotion} made this push and builds it"),
            })),
        )
            .into_response(),
    }
}

/// Holds a push that could not be recorded, Redis being unreachable, in RabbitMQ until
/// Redis is back (`202`); only when RabbitMQ cannot take it either is the forge told to
/// retry (`503`).
async fn hold(
    app: &App,
    repo: &Repository,
    forge: &str,
    delivery: &str,
    push: Push,
    unrecorded: Unavailable,
) -> Response {
    let held = PushHeld {
        repo: repo.name.clone(),
        forge: forge.to_owned(),
        delivery: delivery.to_owned(),
        push,
    };
    match app.broker.hold_push(&held).await {
        Ok(()) => {
            tracing::warn!(repo = %repo.name, forge, delivery, error = %unrecorded,
                "push held in RabbitMQ until Redis is back");
            (
                StatusCode::ACCEPTED,
                Json(json!({
                    "held": true,
                    "message": format!("{unrecorded}; the push is held and will be built when Redis is back"),
                })),
            )
                .into_response()
        }
        Err(broker) => {
            tracing::error!(repo = %repo.name, forge, delivery, error = %unrecorded, %broker,
                "cannot accept a build");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{unrecorded}, and {broker}; retry later"),
            )
        }
    }
}

fn build_url(app: &App, id: BuildId) -> String {
    format!(
        "{}/builds/{id}",
        app.config.public_url.trim_end_matches('/')
    )
}

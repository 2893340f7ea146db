//! What every forge's webhook door does once a delivery is verified and translated: a push
//! becomes a build (`202`, or `200` for a delivery seen before), anything else is answered
//! with why nothing happened.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kiln_shared::build::BuildId;
use kiln_shared::trigger::{ForgeEvent, Push};
use kiln_shared::wire::PushHeld;
use serde_json::json;

use super::error;
use crate::app::App;
use crate::comments;
use crate::config::{Forge, Repository};
use crate::ingress::{self, Accepted, Unavailable};
use crate::review;

/// Answers the verified delivery `delivery` from `door`, translated to `event`.
pub async fn accept(
    app: &App,
    repo: &Repository,
    door: Forge,
    delivery: &str,
    event: ForgeEvent,
) -> Response {
    let name = &repo.name;
    let forge = forge_name(door);
    match event {
        ForgeEvent::Ping => (StatusCode::OK, Json(json!({ "message": "pong" }))).into_response(),
        ForgeEvent::Comment(_) if delivery.is_empty() => error(
            StatusCode::BAD_REQUEST,
            "a comment without a delivery id cannot be told from its retries",
        ),
        ForgeEvent::Comment(comment) => {
            // A retried delivery must not give the command twice.
            match app.store.claim_delivery(forge, delivery, BuildId(0)).await {
                Ok(None) => {}
                Ok(Some(_)) => {
                    return (StatusCode::OK, Json(json!({ "duplicate": true }))).into_response();
                }
                Err(e) => {
                    return error(StatusCode::SERVICE_UNAVAILABLE, format!("{e}; retry later"));
                }
            }
            tracing::info!(repo = %name, forge, delivery, command = %comment.command, "command in a comment");
            let command = comment.command.clone();
            tokio::spawn(comments::answer(app.clone(), door, comment));
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
        ForgeEvent::Ignored { reason } => {
            tracing::info!(repo = %name, forge, delivery, %reason, "webhook ignored");
            (StatusCode::OK, Json(json!({ "ignored": reason }))).into_response()
        }
        ForgeEvent::Push(push) => {
            match ingress::accept_push(app, repo, forge, delivery, push.clone()).await {
                Ok(Accepted::New { id, waiting }) => (
                    StatusCode::ACCEPTED,
                    Json(json!({ "build_id": id, "url": build_url(app, id), "outbox": waiting })),
                )
                    .into_response(),
                Ok(Accepted::Duplicate(id)) => (
                    StatusCode::OK,
                    Json(json!({ "build_id": id, "url": build_url(app, id), "duplicate": true })),
                )
                    .into_response(),
                Ok(Accepted::Promoted(promotion)) => (
                    StatusCode::OK,
                    Json(json!({
                        "promotion": promotion,
                        "message": format!("promotion #{promotion} made this push and builds it"),
                    })),
                )
                    .into_response(),
                Err(e) => hold(app, repo, forge, delivery, push, e).await,
            }
        }
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

fn forge_name(forge: Forge) -> &'static str {
    match forge {
        Forge::GitHub => "github",
        Forge::GitLab => "gitlab",
    }
}

fn build_url(app: &App, id: kiln_shared::build::BuildId) -> String {
    format!(
        "{}/builds/{id}",
        app.config.public_url.trim_end_matches('/')
    )
}

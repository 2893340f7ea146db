//! `POST /hooks/gitlab`: verify, translate, accept; nothing else happens at the door.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use secrecy::ExposeSecret;

use super::{error, forge, header};
use crate::app::App;
use crate::config::Forge;
use crate::gitlab;

/// Handles one GitLab delivery.
pub async fn handle_gitlab_hook(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| header(&headers, name);
    let event = header("x-gitlab-event");
    if event.is_empty() {
        return error(StatusCode::BAD_REQUEST, "missing X-Gitlab-Event header");
    }
    let token = header("x-gitlab-token");
    if token.is_empty() {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing X-Gitlab-Token header: set a secret token on the webhook",
        );
    }
    let name = match gitlab::project_name(event, &body) {
        Ok(name) => name,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let Some(repo) = app.config.repository(&name) else {
        tracing::warn!(repo = %name, event, "webhook for a repository Kiln does not build");
        return error(
            StatusCode::NOT_FOUND,
            format!("repository `{name}` is not configured in Kiln"),
        );
    };
    if repo.forge != Forge::GitLab {
        return error(
            StatusCode::NOT_FOUND,
            format!("repository `{name}` is not configured as a GitLab project (`forge`)"),
        );
    }
    if !gitlab::verify_token(repo.webhook_secret.expose_secret().as_bytes(), token) {
        tracing::warn!(repo = %name, event, "webhook with a wrong token refused");
        return error(
            StatusCode::UNAUTHORIZED,
            "the token does not match the webhook secret",
        );
    }
    let translated = match gitlab::translate(event, &body) {
        Ok(translated) => translated,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    // Every push has an identity; only events Kiln ignores may have none.
    let delivery = gitlab::delivery_id(
        header("idempotency-key"),
        header("x-gitlab-event-uuid"),
        &body,
    )
    .unwrap_or_default();
    forge::accept(&app, repo, Forge::GitLab, &delivery, translated).await
}

//! `POST /hooks/github`: verify, translate, accept; nothing else happens at the door.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use secrecy::ExposeSecret;

use super::{error, forge};
use crate::app::App;
use crate::config::Forge;
use crate::github;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Handles one GitHub delivery.
pub async fn handle_github_hook(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(event) = header(&headers, "x-github-event") else {
        return error(StatusCode::BAD_REQUEST, "missing X-GitHub-Event header");
    };
    let Some(delivery) = header(&headers, "x-github-delivery") else {
        return error(StatusCode::BAD_REQUEST, "missing X-GitHub-Delivery header");
    };
    let Some(signature) = header(&headers, "x-hub-signature-256") else {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing X-Hub-Signature-256 header: set a secret on the webhook",
        );
    };
    let name = match github::repository_name(event, &body) {
        Ok(name) => name,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let Some(repo) = app.config.repository(&name) else {
        tracing::warn!(repo = %name, delivery, "webhook for a repository Kiln does not build");
        return error(
            StatusCode::NOT_FOUND,
            format!("repository `{name}` is not configured in Kiln"),
        );
    };
    if repo.forge != Forge::GitHub {
        return error(
            StatusCode::NOT_FOUND,
            format!("repository `{name}` is not configured as a GitHub repository (`forge`)"),
        );
    }
    if !github::verify_signature(
        repo.webhook_secret.expose_secret().as_bytes(),
        &body,
        signature,
    ) {
        tracing::warn!(repo = %name, delivery, "webhook with a wrong signature refused");
        return error(
            StatusCode::UNAUTHORIZED,
            "the signature does not match the webhook secret",
        );
    }
    let translated = match github::translate(event, &body) {
        Ok(translated) => translated,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    forge::accept(&app, repo, Forge::GitHub, delivery, translated).await
}

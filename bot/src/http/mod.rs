//! The bot's HTTP surface: forge webhooks in, build status and logs out, cancels and
//! commands from operators.

mod builds;
mod cancel;
mod commands;
mod console;
mod discord;
mod follow;
mod forge;
mod github;
mod gitlab;
mod health;
mod reports;
mod slack;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::app::App;
use crate::config::Operator;

/// The largest webhook body accepted. GitHub caps payloads at 25 MB and drops larger ones;
/// GitLab's default limit is the same.
pub const MAX_WEBHOOK_BYTES: usize = 25 * 1024 * 1024;

/// The bot's routes; long answers (a followed log) end when `shutdown` is cancelled.
pub fn router(app: App, shutdown: CancellationToken) -> Router {
    Router::new()
        .route(
            "/hooks/github",
            post(github::handle_github_hook).layer(DefaultBodyLimit::max(MAX_WEBHOOK_BYTES)),
        )
        .route(
            "/hooks/gitlab",
            post(gitlab::handle_gitlab_hook).layer(DefaultBodyLimit::max(MAX_WEBHOOK_BYTES)),
        )
        .route("/builds/{id}", get(builds::handle_build))
        .route("/builds/{id}/logs", get(builds::handle_build_logs))
        .route("/builds/{id}/manifest", get(builds::handle_build_manifest))
        .route("/builds/{id}/cancel", post(cancel::handle_cancel))
        .route("/api/commands", post(commands::handle_command))
        .route("/api/reports", post(reports::handle_report))
        .route("/console", get(console::show).post(console::command))
        .route("/console/login", post(console::sign_in))
        .route("/console/logout", post(console::sign_out))
        .route("/slack/commands", post(slack::handle_slack_command))
        .route("/slack/actions", post(slack::handle_slack_action))
        .route("/discord/interactions", post(discord::handle_interaction))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .layer(TraceLayer::new_for_http())
        .layer(axum::Extension(shutdown))
        .with_state(app)
}

/// Serves the bot's routes on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(app, shutdown.clone()))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// The operator whose token the request carries (`Authorization: Bearer …`), if any.
fn operator<'a>(app: &'a App, headers: &HeaderMap) -> Option<&'a Operator> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))?;
    app.config.operator(token.trim())
}

/// A header's value as text; empty when it is missing or not text.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// Seconds since the Unix epoch: the clock signed requests are checked against.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The answer to a request that needs an operator and carries no known token.
fn unauthorized() -> Response {
    let mut answer = error(
        StatusCode::UNAUTHORIZED,
        "this needs an operator's token: Authorization: Bearer <token>",
    );
    answer.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    answer
}

/// A JSON error answer: `{"error": "..."}` with `status`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let message = message.into();
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

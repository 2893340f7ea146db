//! The bot's HTTP surface: forge webhooks in, build status and logs out, cancels and
//! commands from operators.

mod artifacts;
pub mod builds;
mod cancel;
mod commands;
mod console;
pub mod follow;
pub mod forge;
mod health;
mod metrics;
pub mod pages;
mod reports;
mod repositories;
pub mod respond;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::app::App;
use crate::vendors::{discord, github, gitlab, slack, zulip};
use respond::{error, operator, unauthorized};

/// The largest webhook body accepted. GitHub caps payloads at 25 MB and drops larger ones;
/// GitLab's default limit is the same.
pub const MAX_WEBHOOK_BYTES: usize = 25 * 1024 * 1024;

/// The bot's routes; long answers (a followed log) end when `shutdown` is cancelled.
pub fn router(app: App, shutdown: CancellationToken) -> Router {
    let counted = axum::middleware::from_fn_with_state(app.clone(), metrics::count_webhook);
    Router::new()
        .route(
            "/hooks/github",
            post(forge::handle::<github::door::GitHub>)
                .layer(DefaultBodyLimit::max(MAX_WEBHOOK_BYTES))
                .layer(counted.clone()),
        )
        .route(
            "/hooks/gitlab",
            post(forge::handle::<gitlab::door::GitLab>)
                .layer(DefaultBodyLimit::max(MAX_WEBHOOK_BYTES))
                .layer(counted),
        )
        .route("/builds/{id}", get(builds::handle_build))
        .route("/builds/{id}/logs", get(builds::handle_build_logs))
        .route("/builds/{id}/manifest", get(builds::handle_build_manifest))
        .route("/builds/{id}/artifacts", get(artifacts::list))
        .route("/builds/{id}/artifacts/{*path}", get(artifacts::download))
        .route("/builds/{id}/cancel", post(cancel::handle_cancel))
        .route("/api/commands", post(commands::handle_command))
        .route("/api/reports", post(reports::handle_report))
        .route("/api/repositories", get(repositories::list))
        .route("/console", get(console::show).post(console::command))
        .route("/console/login", post(console::sign_in))
        .route("/console/logout", post(console::sign_out))
        .route("/slack/commands", post(slack::door::handle_slack_command))
        .route("/slack/actions", post(slack::door::handle_slack_action))
        .route(
            "/discord/interactions",
            post(discord::door::handle_interaction),
        )
        .route("/zulip/commands", post(zulip::door::handle_zulip_command))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/readyz/webhooks", get(health::readyz_webhooks))
        .route("/metrics", get(metrics::show))
        .merge(pages::routes())
        .layer(TraceLayer::new_for_http())
        .layer(axum::Extension(shutdown))
        .with_state(app)
}

/// Serves the bot's routes on `listener`, and accepts the deliveries spooled while Redis and
/// RabbitMQ were away, until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let spooled = tokio::spawn(forge::replay_spooled(app.clone(), shutdown.clone()));
    let served = axum::serve(listener, router(app, shutdown.clone()))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    spooled.abort();
    served
}

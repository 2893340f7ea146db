//! `GET /metrics`: the bot's metrics for Prometheus ([`crate::metrics`]), and the layer that
//! counts forge deliveries by their answer.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::App;
use crate::metrics::WebhookLabels;

/// How long a scrape waits for the broker's queue depths; without them, it answers anyway.
const QUEUES_DEADLINE: Duration = Duration::from_secs(2);

/// Every metric, with the job queues' depths read from the broker now and what the caches
/// keep.
pub async fn show(State(app): State<App>) -> Response {
    match tokio::time::timeout(QUEUES_DEADLINE, app.broker.job_queues()).await {
        Ok(Ok(queues)) => {
            for q in queues {
                app.metrics
                    .queue(&q.platform.to_string(), q.waiting, q.workers);
            }
        }
        Ok(Err(error)) => tracing::debug!(%error, "no queue depths for this scrape"),
        Err(_) => tracing::debug!("no queue depths for this scrape: the broker is slow"),
    }
    app.metrics.kept("plans", app.store.plans_kept());
    app.metrics.kept("pipelines", app.specs.kept());
    app.metrics.kept("files", app.mirrors.kept());
    let text = app.metrics.encode();
    ([(CONTENT_TYPE, kiln_io::metrics::CONTENT_TYPE)], text).into_response()
}

/// Counts a forge delivery (`/hooks/<forge>`) by its answer, whatever gave it.
pub async fn count_webhook(State(app): State<App>, request: Request, next: Next) -> Response {
    let forge = request.uri().path().rsplit('/').next().unwrap_or_default();
    let forge = forge.to_owned();
    let response = next.run(request).await;
    let answer = response.status().as_u16();
    app.metrics
        .webhooks
        .get_or_create(&WebhookLabels { forge, answer })
        .inc();
    response
}

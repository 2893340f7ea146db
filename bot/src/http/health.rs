//! `/healthz` (is the bot alive?), `/readyz` (can it do all its work now?) and
//! `/readyz/webhooks` (can it take a push now?), for service managers, monitoring and load
//! balancers; see [`crate::health`].

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kiln_io::amqp::LinkState;
use serde_json::json;

use crate::app::App;
use crate::health::STALLED_AFTER;

/// How long `/readyz` waits for Redis's answer.
const REDIS_PING_DEADLINE: Duration = Duration::from_secs(2);

/// `200 ok`, or `503` with why the bot is stuck: restart it.
pub async fn healthz(State(app): State<App>) -> Response {
    match alive(&app) {
        Ok(()) => "ok".into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

/// `200` when RabbitMQ and Redis are both reachable, `503` otherwise; the JSON answer says
/// `"up"` or why not for each.
pub async fn readyz(State(app): State<App>) -> Response {
    let services = readiness(&app).await;
    let ready = services.iter().all(|(_, state)| state.is_ok());
    answer(ready, services, None)
}

/// `200` while the bot can take a push: Redis answers (the build is recorded, its request
/// waiting in the outbox while RabbitMQ is away), RabbitMQ does (the push is held there until
/// Redis is back), or, with both away, its spool can be written (the delivery is kept on disk
/// until they are back); `503` otherwise. The same JSON answer as `/readyz`, with `spool`.
/// This is the load balancers' check: every bot shares both services, so one that took bots
/// out of rotation while they are away would refuse webhooks the bots would have taken.
pub async fn readyz_webhooks(State(app): State<App>) -> Response {
    let services = readiness(&app).await;
    if services.iter().any(|(_, state)| state.is_ok()) {
        return answer(true, services, None);
    }
    let spool = app.spool.writable().await;
    answer(spool.is_ok(), services, Some(spool))
}

/// `200` or `503`, with what each service (and the spool, when asked) says.
fn answer(
    ready: bool,
    services: [(&'static str, Result<(), String>); 2],
    spool: Option<std::io::Result<()>>,
) -> Response {
    let spool = spool.map(|s| ("spool", s.map_err(|e| format!("cannot be written: {e}"))));
    let body: serde_json::Map<String, serde_json::Value> = services
        .into_iter()
        .chain(spool)
        .map(|(name, state)| {
            (
                name.to_owned(),
                json!(state.err().unwrap_or_else(|| "up".into())),
            )
        })
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `Err` with why, when the bot is stuck.
fn alive(app: &App) -> Result<(), String> {
    match app.watchdog.stalled(STALLED_AFTER) {
        None => Ok(()),
        Some((what, running)) => Err(format!(
            "stuck: {what} has been running for {} s",
            running.as_secs()
        )),
    }
}

/// What each service the bot needs says: `Ok` when it is up, else why not.
async fn readiness(app: &App) -> [(&'static str, Result<(), String>); 2] {
    let rabbitmq = match app.broker.state() {
        LinkState::Up(_) => Ok(()),
        LinkState::Down { since, error } => Err(format!(
            "unreachable for {} s{}",
            since.elapsed().as_secs(),
            error.map(|e| format!(": {e}")).unwrap_or_default()
        )),
    };
    let redis = match tokio::time::timeout(REDIS_PING_DEADLINE, app.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(format!("unreachable: {error}")),
        Err(_) => Err(format!("no answer within {REDIS_PING_DEADLINE:?}")),
    };
    [("rabbitmq", rabbitmq), ("redis", redis)]
}

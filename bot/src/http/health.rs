//! `/healthz` (is the bot alive?) and `/readyz` (can it do its work now?), for service
//! managers and load balancers; see [`crate::health`].

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::App;
use crate::health;

/// `200 ok`, or `503` with why the bot is stuck: restart it.
pub async fn healthz(State(app): State<App>) -> Response {
    match health::alive(&app) {
        Ok(()) => "ok".into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

/// `200` when RabbitMQ and Redis are both reachable, `503` otherwise; the JSON answer says
/// `"up"` or why not for each. While RabbitMQ is away the bot still accepts builds (into
/// its outbox), so a load balancer may keep sending it webhooks.
pub async fn readyz(State(app): State<App>) -> Response {
    let services = health::readiness(&app).await;
    let ready = services.iter().all(|(_, state)| state.is_ok());
    let body: serde_json::Map<String, serde_json::Value> = services
        .into_iter()
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

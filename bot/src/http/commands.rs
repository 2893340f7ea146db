//! `POST /api/commands`: the command grammar for scripts, as an operator.
//!
//! ```sh
//! curl -H "Authorization: Bearer $TOKEN" -d '{"command": "status acme/api"}' \
//!      -H 'content-type: application/json' http://kiln/api/commands
//! ```

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{operator, unauthorized};
use crate::app::App;
use crate::commands::{self, Actor, Outcome};

#[derive(Debug, Deserialize)]
pub struct CommandRequest {
    /// As typed in chat, e.g. `cancel 12`.
    pub command: String,
}

pub async fn handle_command(
    State(app): State<App>,
    headers: HeaderMap,
    Json(request): Json<CommandRequest>,
) -> Response {
    let Some(operator) = operator(&app, &headers) else {
        return unauthorized();
    };
    let id = format!("operator:{}", operator.name);
    let actor = Actor {
        name: &operator.name,
        via: "api",
        id: &id,
        operator: true,
        channel: None,
        writes: None,
        roles: &[],
    };
    let reply = commands::run(&app, actor, &request.command).await;
    let status = match reply.outcome {
        Outcome::Done => StatusCode::OK,
        Outcome::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        Outcome::Refused => StatusCode::FORBIDDEN,
        Outcome::Failed => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(reply)).into_response()
}

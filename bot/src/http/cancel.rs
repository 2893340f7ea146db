//! `POST /builds/{id}/cancel`: an operator stops a build. The request carries the operator's
//! token as `Authorization: Bearer …`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kiln_shared::build::BuildId;
use serde_json::json;

use super::{error, operator, unauthorized};
use crate::app::App;
use crate::lifecycle::{self, Cancel};

pub async fn handle_cancel(
    State(app): State<App>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> Response {
    let Some(operator) = operator(&app, &headers) else {
        return unauthorized();
    };
    let id = BuildId(id);
    match lifecycle::cancel_build(&app, id, &operator.name).await {
        Ok(Cancel::Cancelled { tasks }) => Json(json!({
            "build": id,
            "status": "cancelled",
            "cancelled_tasks": tasks,
        }))
        .into_response(),
        Ok(Cancel::AlreadyEnded(status)) => error(
            StatusCode::CONFLICT,
            format!("build {id} has already ended: {status}"),
        ),
        Ok(Cancel::NoSuchBuild) => error(StatusCode::NOT_FOUND, format!("there is no build {id}")),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")),
    }
}

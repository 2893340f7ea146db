//! `/static/{file}`: the pages' style sheet and script, built into the bot.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const CSS: &str = include_str!("../../../templates/static/kiln.css");
const JS: &str = include_str!("../../../templates/static/kiln.js");

/// `GET /static/{file}`.
pub async fn file(Path(file): Path<String>) -> Response {
    let (kind, body) = match file.as_str() {
        "kiln.css" => ("text/css; charset=utf-8", CSS),
        "kiln.js" => ("text/javascript; charset=utf-8", JS),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

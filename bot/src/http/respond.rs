//! What every HTTP handler of the bot answers with: JSON errors, the operator a request is
//! from, and the clock signed requests are checked against.

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::app::App;
use crate::config::Operator;

/// The operator whose token the request carries (`Authorization: Bearer …`), if any.
pub fn operator<'a>(app: &'a App, headers: &HeaderMap) -> Option<&'a Operator> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))?;
    app.config.operator(token.trim())
}

/// A header's value as text; empty when it is missing or not text.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// Seconds since the Unix epoch: the clock signed requests are checked against.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The answer to a request that needs an operator and carries no known token.
pub fn unauthorized() -> Response {
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
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let message = message.into();
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

//! The web pages: builds, a build with its task graph and logs, a repository's history,
//! the workers and queues. Rendered on the server (tera) from the records chat cards come
//! from, kept current by Server-Sent Events and a small script with no build step.

mod ansi;
mod assets;
pub mod build;
mod builds;
mod fleet;
pub mod log;
pub mod readers;
mod repo;
mod sign_in;
pub mod view;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::app::App;
use readers::Reader;

/// How often an open page looks for changes to send it.
pub const LIVE_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// The pages' routes (`/builds/{id}` itself is the API's, which hands browsers over).
pub fn routes() -> Router<App> {
    Router::new()
        .route("/", get(builds::index))
        .route("/live/builds", get(builds::live))
        .route("/builds/{id}/live", get(build::live))
        .route("/builds/{id}/actions", post(build::act))
        .route("/builds/{id}/tasks/{task}/live", get(log::live))
        .route("/repos/{*repo}", get(repo::page))
        .route("/workers", get(fleet::workers))
        .route("/queue", get(fleet::workers))
        .route("/login", get(sign_in::page).post(sign_in::with_token))
        .route("/login/{forge}", get(sign_in::to_forge))
        .route("/login/{forge}/callback", get(sign_in::back_from_forge))
        .route("/logout", post(sign_in::sign_out))
        .route("/static/{file}", get(assets::file))
}

/// Whether the request is a browser's, which wants a page rather than JSON.
pub fn wants_html(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    accept.contains("text/html") && !accept.contains("application/json")
}

/// Page `name` for `view`, or why it cannot be shown. No other site may frame a page: its
/// buttons act.
pub fn render(app: &App, name: &str, view: &impl serde::Serialize) -> Response {
    match app.templates.page(name, view) {
        Ok(html) => (
            [
                (header::X_FRAME_OPTIONS, "DENY"),
                (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
            ],
            Html(html),
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, page = name, "cannot render a page");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page cannot be shown",
            )
                .into_response()
        }
    }
}

/// The answer to a reader who may read nothing yet: the sign-in page, then back to `path`.
pub fn sign_in_first(path: &str) -> Response {
    let next = percent_encoding::utf8_percent_encode(path, percent_encoding::NON_ALPHANUMERIC);
    Redirect::to(&format!("/login?next={next}")).into_response()
}

/// The answer to a page that cannot be read: Redis away, say.
pub fn unavailable(app: &App, reader: &Reader, what: impl std::fmt::Display) -> Response {
    let mut page = render(
        app,
        "said.html",
        &view::Said::new(reader, "Kiln cannot show this now", what.to_string()),
    );
    *page.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    page
}

/// The answer to a build that could not be read: not found (or not theirs to see), or
/// Redis away.
pub fn unreadable(app: &App, reader: &Reader, (status, message): (StatusCode, String)) -> Response {
    match status {
        StatusCode::NOT_FOUND => not_found(app, reader),
        _ => unavailable(app, reader, message),
    }
}

/// The answer to an unknown page, or one the reader may not see: the same.
pub fn not_found(app: &App, reader: &Reader) -> Response {
    let mut page = render(
        app,
        "said.html",
        &view::Said::new(
            reader,
            "Not found",
            "There is nothing here, or you may not see it.".into(),
        ),
    );
    *page.status_mut() = StatusCode::NOT_FOUND;
    page
}

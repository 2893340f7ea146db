//! `GET /api/repositories`, for operators: the repositories Kiln builds, each with where its images and
//! artifacts live in registries (`path`: `kiln/<path>/…`) and its branches now (fetched;
//! `null`, with an `error`, when they could not be), so `kiln-worker gc --registry` can tell a
//! gone branch's image tags from a live one's.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use kiln_shared::template::repo_path;
use serde_json::json;

use super::respond::{operator, unauthorized};
use crate::app::App;
use crate::repositories::clone_url;

/// For operators only (`Authorization: Bearer <operator token>`): it names every repository
/// and branch, and fetches each repository.
pub async fn list(State(app): State<App>, headers: HeaderMap) -> Response {
    if operator(&app, &headers).is_none() {
        return unauthorized();
    }
    let mut listed = Vec::new();
    for repository in &app.config.repositories {
        let branches = match clone_url(&app, repository).await {
            Ok(Some(url)) => app.mirrors.branches(&url).await.map_err(|e| e.to_string()),
            Ok(None) => Err("not fetched yet: no clone URL configured and no build".into()),
            Err(error) => Err(error.to_string()),
        };
        let (branches, error) = match branches {
            Ok(branches) => (Some(branches), None),
            Err(error) => (None, Some(error)),
        };
        listed.push(json!({
            "name": repository.name,
            "path": repo_path(&repository.name),
            "branches": branches,
            "error": error,
        }));
    }
    Json(json!({ "repositories": listed })).into_response()
}

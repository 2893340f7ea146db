//! `GET /builds/{id}/artifacts` and `GET /builds/{id}/artifacts/{path}`: what a build's tasks
//! kept, listed and downloaded from the installation's registry, for whoever may read the
//! build's logs.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kiln_shared::build::BuildId;
use kiln_shared::wire::Artifact;
use serde::Deserialize;
use serde_json::json;

use kiln_io::registry::oci::ARTIFACTS;

use super::builds::build_and_tasks;
use super::error;
use super::pages::readers::Reader;
use crate::app::App;

/// Every artifact of build `id`, with where to download it.
pub async fn list(State(app): State<App>, reader: Reader, Path(id): Path<u64>) -> Response {
    let id = BuildId(id);
    let tasks = match build_and_tasks(&app, &reader, id).await {
        Ok((_, tasks)) => tasks,
        Err((status, message)) => return error(status, message),
    };
    let base = app.config.public_url.trim_end_matches('/');
    let listed: Vec<_> = tasks
        .iter()
        .flat_map(|t| &t.artifacts)
        .map(|a| {
            json!({
                "task": a.task,
                "path": a.path,
                "digest": a.digest,
                "size": a.size,
                "url": format!("{base}/builds/{id}/artifacts/{}?task={}", a.path, a.task),
            })
        })
        .collect();
    Json(json!({ "build": id, "artifacts": listed })).into_response()
}

#[derive(Debug, Deserialize)]
pub struct Which {
    /// The task that kept it, when several kept a file at the path.
    task: Option<String>,
}

/// The artifact at `path` of build `id`, streamed from the registry.
pub async fn download(
    State(app): State<App>,
    reader: Reader,
    Path((id, path)): Path<(u64, String)>,
    Query(which): Query<Which>,
) -> Response {
    let id = BuildId(id);
    let (record, tasks) = match build_and_tasks(&app, &reader, id).await {
        Ok(found) => found,
        Err((status, message)) => return error(status, message),
    };
    let found: Vec<&Artifact> = tasks
        .iter()
        .flat_map(|t| &t.artifacts)
        .filter(|a| a.path == path && which.task.as_ref().is_none_or(|t| *t == a.task))
        .collect();
    let artifact = match found.as_slice() {
        [] => {
            return error(
                StatusCode::NOT_FOUND,
                format!("build {id} kept no `{path}`"),
            );
        }
        [one] => *one,
        [first, rest @ ..] if rest.iter().all(|a| a.digest == first.digest) => *first,
        several => {
            let tasks: Vec<&str> = several.iter().map(|a| a.task.as_str()).collect();
            return error(
                StatusCode::CONFLICT,
                format!(
                    "several tasks of build {id} kept a different `{path}`: choose one with \
                     `?task=` ({})",
                    tasks.join(", ")
                ),
            );
        }
    };
    let Some(registry) = &app.registry else {
        return error(
            StatusCode::NOT_FOUND,
            "this Kiln has no `[registry]` in its configuration: its artifacts are in the \
             workers' store directory (`kiln-worker export` reads them there)",
        );
    };
    let repo = record.build.repo.as_str();
    let stream = match registry
        .blob_stream(repo, ARTIFACTS, &artifact.digest, artifact.size)
        .await
    {
        Ok(stream) => stream,
        Err(e) => return error(StatusCode::BAD_GATEWAY, e.to_string()),
    };
    let name = path.rsplit('/').next().unwrap_or(&path).replace('"', "");
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
        (header::CONTENT_LENGTH, artifact.size.to_string()),
        (
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ),
        (header::ETAG, format!("\"{}\"", artifact.digest)),
        (
            header::HeaderName::from_static("content-digest"),
            content_digest(&artifact.digest),
        ),
    ];
    (headers, Body::from_stream(stream.stream)).into_response()
}

/// `sha-256=:<base64>:` (RFC 9530) of a `sha256:<hex>` digest.
fn content_digest(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let bytes = hex::decode(hex).unwrap_or_default();
    format!("sha-256=:{}:", STANDARD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_digest_is_the_digest_in_base64() {
        let digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            content_digest(digest),
            "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"
        );
    }
}

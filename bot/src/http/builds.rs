//! `GET /builds/{id}` and `GET /builds/{id}/logs`: a build's state and logs, readable with no
//! chat at all (a running task's log can be followed: see `follow`).

use std::fmt::Write as _;

use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use kiln_shared::build::BuildId;
use kiln_shared::trigger::TriggerKind;
use kiln_shared::wire::Manifest;
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::error;
use super::pages::{self, build::Shown, readers::Reader};
use crate::app::App;
use crate::store::{BuildRecord, StoreError, TaskRecord};

/// Build `id` and its tasks' records (none before it is planned), or the error to answer.
/// A build `reader` may not read is answered as one that does not exist.
pub(crate) async fn build_and_tasks(
    app: &App,
    reader: &Reader,
    id: BuildId,
) -> Result<(BuildRecord, Vec<TaskRecord>), (StatusCode, String)> {
    // Redis away is passing; a record that does not decode is not, and says which field.
    let unavailable = |e: StoreError| match e {
        StoreError::Redis(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        unreadable @ StoreError::Unreadable { .. } => {
            (StatusCode::INTERNAL_SERVER_ERROR, unreadable.to_string())
        }
    };
    let record = app
        .store
        .build(id)
        .await
        .map_err(unavailable)?
        .filter(|r| reader.may_read(&r.build.repo))
        .ok_or_else(|| (StatusCode::NOT_FOUND, format!("there is no build {id}")))?;
    let tasks = match &record.plan {
        Some(plan) => app.store.tasks(id, plan).await.map_err(unavailable)?,
        None => Vec::new(),
    };
    Ok((record, tasks))
}

/// The build's status and each task's; its page, to a browser.
pub async fn handle_build(
    State(app): State<App>,
    headers: HeaderMap,
    reader: Reader,
    Path(id): Path<u64>,
    RawQuery(query): RawQuery,
) -> Response {
    let id = BuildId(id);
    // The same URL answers a page or JSON: caches must keep them apart.
    let mut answer = if pages::wants_html(&headers) {
        let shown = Shown::from_query(query.as_deref());
        pages::build::page(&app, &reader, id, shown, None).await
    } else {
        build_json(&app, &reader, id).await
    };
    answer
        .headers_mut()
        .insert(header::VARY, header::HeaderValue::from_static("accept"));
    answer
}

/// The build's record as JSON.
async fn build_json(app: &App, reader: &Reader, id: BuildId) -> Response {
    let (record, tasks) = match build_and_tasks(app, reader, id).await {
        Ok(found) => found,
        Err((status, message)) => return error(status, message),
    };
    let tasks: Vec<_> = tasks
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "status": t.status,
                "attempt": t.attempt,
                "exit_code": t.exit_code,
                "outcome": t.outcome,
                "worker": t.worker,
                "artifacts": t.artifacts,
                "images": t.images,
            })
        })
        .collect();
    let reports = match app.store.reports(id).await {
        Ok(reports) => reports,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    // A tag's build is of its tag, not of a branch.
    let tag = record.kind == TriggerKind::Tag;
    Json(json!({
        "id": id,
        "repo": record.build.repo,
        "event": record.kind,
        "branch": (!tag).then_some(&record.build.branch),
        "tag": tag.then_some(&record.build.branch),
        "note": record.note,
        "vars": record.vars,
        "priority": record.priority,
        "merged_with": record.plan.as_ref().and_then(|p| p.merged_with.as_ref()),
        "commit": record.build.commit,
        "author": record.author,
        "subject": record.subject,
        "status": record.status,
        "error": record.error,
        "tasks": tasks,
        "reports": reports,
    }))
    .into_response()
}

/// The build's manifest: every artifact and in-tree image, with its digest.
pub async fn handle_build_manifest(
    State(app): State<App>,
    reader: Reader,
    Path(id): Path<u64>,
) -> Response {
    let id = BuildId(id);
    let (record, tasks) = match build_and_tasks(&app, &reader, id).await {
        Ok(found) => found,
        Err((status, message)) => return error(status, message),
    };
    Json(Manifest::new(
        &record.build,
        tasks.iter().flat_map(|t| &t.artifacts),
        tasks.iter().flat_map(|t| &t.images),
    ))
    .into_response()
}

#[derive(Debug, Deserialize)]
pub struct LogsQuery {
    /// Only this task's lines, without headers.
    task: Option<String>,
    /// Keep the answer open and send the task's lines as they come, until it ends.
    #[serde(default)]
    follow: bool,
}

/// The build's logs as plain text, task by task.
pub async fn handle_build_logs(
    State(app): State<App>,
    Extension(stopping): Extension<CancellationToken>,
    reader: Reader,
    Path(id): Path<u64>,
    Query(query): Query<LogsQuery>,
) -> Response {
    let id = BuildId(id);
    let (record, tasks) = match build_and_tasks(&app, &reader, id).await {
        Ok(found) => found,
        Err((status, message)) => return error(status, message),
    };
    if query.follow {
        let Some(task) = query.task else {
            return error(
                StatusCode::BAD_REQUEST,
                "`follow` needs `task`: one task's log is followed",
            );
        };
        // Right after the push the build may not be planned yet: its tasks are then waited for.
        let planned = record.plan.is_some() || record.status.is_final();
        if planned && !tasks.iter().any(|t| t.name == task) {
            return error(
                StatusCode::NOT_FOUND,
                format!("build {id} has no task `{task}`"),
            );
        }
        return super::follow::follow(app, &record.build.repo, id, task, stopping).await;
    }
    let mut text = String::new();
    if let Some(reason) = &record.error {
        let _ = writeln!(text, "{reason}");
    }
    for task in tasks {
        if query.task.as_ref().is_some_and(|only| *only != task.name) {
            continue;
        }
        let lines = match app.logs.all(&record.build.repo, id, &task.name).await {
            Ok(lines) => lines,
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")),
        };
        if query.task.is_none() {
            let outcome = task.outcome.as_deref().unwrap_or(task.status.as_str());
            let _ = writeln!(text, "==> {} ({outcome})", task.name);
        }
        for line in lines {
            let _ = writeln!(text, "{line}");
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

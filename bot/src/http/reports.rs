//! `POST /api/reports`: a subscriber reports its verdict on a build, with a token Kiln's
//! configuration gives it for that repository; the verdict shows on the build's cards.
//!
//! ```sh
//! curl -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
//!      -d '{"build": 12, "verdict": "failed", "summary": "2 known vulnerabilities"}' \
//!      http://kiln/api/reports
//! ```

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_shared::build::BuildId;
use kiln_shared::view::{MAX_REPORT_SUMMARY_CHARS, Report, Verdict, truncate};
use serde::Deserialize;
use serde_json::json;

use super::error;
use crate::app::App;
use crate::notify::cards;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    pub build: u64,
    pub verdict: Verdict,
    /// One line; longer text is cut.
    pub summary: String,
}

pub async fn handle_report(
    State(app): State<App>,
    headers: HeaderMap,
    request: Result<Json<ReportRequest>, JsonRejection>,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim();
    let Json(request) = match request {
        Ok(request) => request,
        Err(rejection) => return error(rejection.status(), rejection.body_text()),
    };
    let id = BuildId(request.build);
    // Where access is not public, a wrong token learns nothing of the build, not even
    // whether there is one.
    let public = app.config.access.public;
    let not_theirs = || {
        error(
            StatusCode::UNAUTHORIZED,
            "the token is not a reporter's of that build's repository: see \
             `[[repository.reporter]]`",
        )
    };
    let record = match app.store.build(id).await {
        Ok(Some(record)) => record,
        Ok(None) if public => {
            return error(StatusCode::NOT_FOUND, format!("there is no build #{id}"));
        }
        Ok(None) => return not_theirs(),
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let reporter = app
        .config
        .repository(&record.build.repo)
        .and_then(|repository| repository.reporter(token));
    let Some(reporter) = reporter else {
        if !public {
            return not_theirs();
        }
        return error(
            StatusCode::UNAUTHORIZED,
            format!(
                "the token is not a reporter's of {}: see `[[repository.reporter]]`",
                record.build.repo
            ),
        );
    };
    let report = Report {
        reporter: reporter.name.clone(),
        verdict: request.verdict,
        summary: truncate(
            request.summary.lines().next().unwrap_or_default(),
            MAX_REPORT_SUMMARY_CHARS,
        ),
    };
    if let Err(e) = app.store.report(id, &report).await {
        return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    }
    tracing::info!(build_id = %id, reporter = %report.reporter, verdict = ?report.verdict, "report");
    cards::refresh(&app, id);
    (
        StatusCode::OK,
        Json(json!({ "build": id, "reporter": report.reporter })),
    )
        .into_response()
}

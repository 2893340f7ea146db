//! `/repos/{owner}/{name}`: a repository's branches with their latest build, and its build
//! history, pass or fail over time.

use axum::extract::{Path, State};
use axum::response::Response;
use serde::Serialize;

use super::builds::{Filter, rows};
use super::readers::Reader;
use super::view::{Row, Who};
use super::{not_found, render, sign_in_first, unavailable};
use crate::app::App;

#[derive(Debug, Serialize)]
struct Page {
    who: Who,
    title: String,
    repo: String,
    /// Each branch (or tag) once, with its newest build.
    branches: Vec<Row>,
    /// Newest first.
    history: Vec<Row>,
    /// Oldest first: the strip of outcomes.
    strip: Vec<Row>,
}

/// `GET /repos/{owner}/{name}`.
pub async fn page(State(app): State<App>, reader: Reader, Path(repo): Path<String>) -> Response {
    if !reader.may_read_some() {
        return sign_in_first(&format!("/repos/{repo}"));
    }
    let Some(configured) = app
        .config
        .repositories
        .iter()
        .find(|r| r.name.as_str().eq_ignore_ascii_case(&repo))
    else {
        return not_found(&app, &reader);
    };
    if !reader.may_read(&configured.name) {
        return not_found(&app, &reader);
    }
    let filter = Filter {
        repo: configured.name.to_string(),
        ..Filter::default()
    };
    let history = match rows(&app, &reader, &filter).await {
        Ok(rows) => rows,
        Err(e) => return unavailable(&app, &reader, format!("{e:#}")),
    };
    let mut branches: Vec<Row> = Vec::new();
    for row in &history {
        if !branches
            .iter()
            .any(|b| b.target == row.target && b.tag == row.tag)
        {
            branches.push(row.clone());
        }
    }
    let strip = history.iter().rev().cloned().collect();
    render(
        &app,
        "repo.html",
        &Page {
            who: Who::of(&reader),
            title: configured.name.to_string(),
            repo: configured.name.to_string(),
            branches,
            history,
            strip,
        },
    )
}

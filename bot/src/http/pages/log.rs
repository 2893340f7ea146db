//! A task's log on its build's page: a page of its lines (the last by default: that is where
//! a task says why it failed), each with a link of its own (`#L120`), its colours rendered
//! and Kiln's own lines set apart; lines found by a search; and, while the task runs, its
//! new lines as they are written (`GET /builds/{id}/tasks/{task}/live`, Server-Sent Events
//! from the Redis stream the worker writes to).

use std::convert::Infallible;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use kiln_shared::build::BuildId;
use kiln_shared::log_line::KILN_PREFIX;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::ansi;
use super::build::{Shown, encoded};
use super::readers::Reader;
use super::{not_found, unreadable};
use crate::app::App;
use crate::http::builds::build_and_tasks;
use crate::http::follow::Follower;
use crate::store::{BuildRecord, TaskRecord};

/// Lines on one page of a log: enough to read around a failure, few enough that a browser
/// shows a log of any length at once.
pub const PAGE_LINES: usize = 1000;

/// Lines a search shows at most.
const FOUND_SHOWN: usize = 500;

/// One line as the page shows it.
#[derive(Debug, Serialize)]
pub struct Line {
    /// Its number in the log, from 1.
    n: usize,
    html: String,
    /// Kiln's own line, not the task's.
    kiln: bool,
}

/// A found line, with the link to it on its page.
#[derive(Debug, Serialize)]
pub struct Found {
    n: usize,
    html: String,
    url: String,
}

/// The log panel of a build's page.
#[derive(Debug, Serialize)]
pub struct LogView {
    task: String,
    status: String,
    /// The plain-text log.
    raw_url: String,
    /// The page's URL with no page chosen, for links to pages and lines.
    url: String,
    page: usize,
    pages: usize,
    /// Lines on a page, [`PAGE_LINES`]: the page's script finds a line's page with it.
    page_lines: usize,
    total: usize,
    lines: Vec<Line>,
    q: String,
    found: Option<Vec<Found>>,
    /// Where its new lines come from, while the task runs and the last page is shown.
    live: Option<String>,
    /// The number of the next line to come.
    next: usize,
}

fn line(n: usize, text: &str) -> Line {
    Line {
        n,
        html: ansi::to_html(text),
        kiln: text.starts_with(KILN_PREFIX),
    }
}

/// What of a task's log a page reads.
struct Read {
    /// Lines from the `from`-th (from 0) on: the page's, or every line for a search.
    lines: Vec<String>,
    from: usize,
    /// The page's first line (from 0).
    first: usize,
    /// How many lines the log has.
    total: usize,
    /// The last line's entry, when the page is the last and the log is in Redis.
    last_entry: Option<String>,
}

/// Reads page `page` of `task`'s log (its last when `None`), or every line when `all`.
/// A page of a log in Redis is read alone (the last with the log's length, at once); a
/// search, and a log only in its archive, read every line.
async fn read(
    app: &App,
    record: &BuildRecord,
    id: BuildId,
    task: &str,
    page: Option<usize>,
    all: bool,
) -> anyhow::Result<Read> {
    let page_of = |total: usize| {
        let pages = total.div_ceil(PAGE_LINES).max(1);
        (page.unwrap_or(pages).clamp(1, pages), pages)
    };
    if !all {
        let (end, total) = app.store.log_end(id, task, PAGE_LINES).await?;
        if total > 0 {
            let (page, pages) = page_of(total);
            let first = (page - 1) * PAGE_LINES;
            let (lines, last_entry) = if page == pages {
                let last_entry = end.last().map(|(entry, _)| entry.clone());
                let before_page = end.len().saturating_sub(total - first);
                (
                    end.into_iter().skip(before_page).collect::<Vec<_>>(),
                    last_entry,
                )
            } else {
                let head = app.store.log_head(id, task, first + PAGE_LINES).await?;
                (head.into_iter().skip(first).collect(), None)
            };
            return Ok(Read {
                lines: lines.into_iter().map(|(_, text)| text).collect(),
                from: first,
                first,
                total,
                last_entry,
            });
        }
    }
    let entries = app.store.log_entries(id, task).await?;
    let (lines, last_entry) = if entries.is_empty() {
        let archived = app.logs.archived(&record.build.repo, id, task).await?;
        (archived.unwrap_or_default(), None)
    } else {
        let last = entries.last().map(|(entry, _)| entry.clone());
        (entries.into_iter().map(|(_, text)| text).collect(), last)
    };
    let total = lines.len();
    let (page, _) = page_of(total);
    Ok(Read {
        lines,
        from: 0,
        first: (page - 1) * PAGE_LINES,
        total,
        last_entry,
    })
}

/// The log panel of `task`, as `shown` asks.
pub async fn view(
    app: &App,
    record: &BuildRecord,
    id: BuildId,
    task: &TaskRecord,
    shown: &Shown,
) -> anyhow::Result<LogView> {
    let q = shown.q.clone().unwrap_or_default();
    let Read {
        lines,
        from,
        first,
        total,
        last_entry,
    } = read(app, record, id, &task.name, shown.page, !q.is_empty()).await?;
    let pages = total.div_ceil(PAGE_LINES).max(1);
    let page = first / PAGE_LINES + 1;
    let url = format!("/builds/{id}?task={}", encoded(&task.name));
    let found = (!q.is_empty()).then(|| {
        lines
            .iter()
            .enumerate()
            .filter(|(_, text)| text.contains(q.as_str()))
            .take(FOUND_SHOWN)
            .map(|(at, text)| Found {
                n: from + at + 1,
                html: ansi::to_html(text),
                url: format!(
                    "{url}&page={}#L{}",
                    (from + at) / PAGE_LINES + 1,
                    from + at + 1
                ),
            })
            .collect()
    });
    let live = (!task.status.is_final() && page == pages).then(|| {
        format!(
            "/builds/{id}/tasks/{}/live?after={}",
            encoded(&task.name),
            last_entry.as_deref().unwrap_or("0-0")
        )
    });
    Ok(LogView {
        task: task.name.clone(),
        status: task.status.to_string(),
        raw_url: format!("/builds/{id}/logs?task={}", encoded(&task.name)),
        url,
        page,
        pages,
        page_lines: PAGE_LINES,
        total,
        lines: lines
            .iter()
            .enumerate()
            .skip(first - from)
            .take(PAGE_LINES)
            .map(|(at, text)| line(from + at + 1, text))
            .collect(),
        q,
        found,
        live,
        next: total + 1,
    })
}

#[derive(Debug, Deserialize)]
pub struct After {
    /// The entry of the last line the page has.
    #[serde(default = "from_the_start")]
    after: String,
}

fn from_the_start() -> String {
    "0-0".into()
}

/// Whether `id` is a Redis stream entry's id: `<ms>-<sequence>`.
fn is_entry_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(ms, n)| {
        [ms, n].iter().all(|part| {
            !part.is_empty() && part.len() <= 20 && part.bytes().all(|b| b.is_ascii_digit())
        })
    })
}

/// `GET /builds/{id}/tasks/{task}/live`: the task's lines after `after` (or the event id the
/// browser last saw), as they are written; event `lines` carries a JSON list of
/// `{html, kiln}`, event `end` says the task ended.
pub async fn live(
    State(app): State<App>,
    Extension(stopping): Extension<CancellationToken>,
    headers: HeaderMap,
    reader: Reader,
    Path((id, task)): Path<(u64, String)>,
    Query(after): Query<After>,
) -> Response {
    let id = BuildId(id);
    match build_and_tasks(&app, &reader, id).await {
        Ok((_, tasks)) if tasks.iter().any(|t| t.name == task) => {}
        Ok(_) => return not_found(&app, &reader),
        Err(error) => return unreadable(&app, &reader, error),
    }
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map_or(after.after, str::to_owned);
    if !is_entry_id(&after) {
        return crate::http::respond::error(
            StatusCode::BAD_REQUEST,
            format!("`{after}` is not a log entry's id (`<ms>-<n>`)"),
        );
    }
    let status_of = app.clone();
    let follower = match Follower::start(app, id, task.clone(), after).await {
        Ok(follower) => follower,
        Err(refusal) => return refusal,
    };
    let events = futures_util::stream::unfold(Some(follower), move |follower| {
        let stopping = stopping.clone();
        let (status_of, task) = (status_of.clone(), task.clone());
        async move {
            let mut follower = follower?;
            let next = tokio::select! {
                next = follower.next() => next,
                () = stopping.cancelled() => return None,
            };
            let event = match next {
                Ok(Some((lines, last))) => {
                    let lines: Vec<_> = lines
                        .iter()
                        .map(|text| {
                            json!({ "html": ansi::to_html(text), "kiln": text.starts_with(KILN_PREFIX) })
                        })
                        .collect();
                    let data = serde_json::Value::Array(lines).to_string();
                    Event::default().event("lines").id(last).data(data)
                }
                Ok(None) => {
                    // The task's status as it ended, for the page to show.
                    let status = match status_of.store.task(id, &task).await {
                        Ok(Some(record)) => record.status.to_string(),
                        _ => "ended".to_owned(),
                    };
                    return Some((
                        Ok::<_, Infallible>(Event::default().event("end").data(status)),
                        None,
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %e, build = %id, "a followed log cannot be read");
                    return None;
                }
            };
            Some((Ok(event), Some(follower)))
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_entry_ids_are_followed_from() {
        assert!(is_entry_id("0-0"));
        assert!(is_entry_id("1765112400000-3"));
        for bad in ["", "0", "-0", "0-", "a-1", "1-1-1", "$", "+"] {
            assert!(!is_entry_id(bad), "{bad}");
        }
    }
}

//! `/`: the recent builds of the repositories the reader may see, filtered, kept current
//! while the page is open.

use axum::Extension;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use kiln_shared::build::BuildStatus;
use kiln_shared::trigger::TriggerKind;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::convert::Infallible;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;

use super::readers::Reader;
use super::view::{Row, Who};
use super::{LIVE_EVERY, render, sign_in_first, unavailable};
use crate::app::App;

/// Pages kept current at once, at most: each looks at Redis twice a second.
pub const MAX_LIVE_PAGES: usize = 256;

static LIVE_PAGES: Semaphore = Semaphore::const_new(MAX_LIVE_PAGES);

/// The answer to a page that asks to be kept current when [`MAX_LIVE_PAGES`] are: the page
/// stays as it is (a browser does not try again after an error status).
fn too_many() -> Response {
    crate::http::respond::error(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        format!("{MAX_LIVE_PAGES} pages are kept current already"),
    )
}

/// How many of the newest builds a list looks through, and shows at most.
const LOOKED_AT: u64 = 500;
const SHOWN: usize = 50;

/// What the list is narrowed to.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Filter {
    #[serde(default)]
    pub repo: String,
    #[serde(default)]
    pub branch: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub trigger: String,
}

impl Filter {
    fn keeps(&self, row: &Row) -> bool {
        (self.repo.is_empty() || row.repo.eq_ignore_ascii_case(self.repo.trim()))
            && (self.branch.is_empty() || row.target == self.branch.trim())
            && (self.status.is_empty() || row.status.as_str() == self.status)
            && (self.trigger.is_empty() || row.trigger.as_str() == self.trigger)
    }

    /// The query string of the list's live rows.
    fn query(&self) -> String {
        serde_urlencoded::to_string(self).unwrap_or_default()
    }
}

#[derive(Debug, Serialize)]
struct Index {
    who: Who,
    title: String,
    filter: Filter,
    live: String,
    rows: Vec<Row>,
    statuses: Vec<&'static str>,
    triggers: Vec<&'static str>,
    repos: Vec<String>,
}

/// The newest builds `reader` may see that `filter` keeps: of its repository's list when it
/// names one, else of the newest builds of all.
pub async fn rows(app: &App, reader: &Reader, filter: &Filter) -> anyhow::Result<Vec<Row>> {
    let repo = app.config.repository(filter.repo.trim());
    let records = match repo {
        Some(repo) => {
            app.store
                .repo_builds(&repo.name, LOOKED_AT as usize)
                .await?
        }
        None => app.store.recent_builds(LOOKED_AT).await?,
    };
    Ok(records
        .iter()
        .filter(|r| reader.may_read(&r.build.repo))
        .map(Row::of)
        .filter(|row| filter.keeps(row))
        .take(SHOWN)
        .collect())
}

/// `GET /`.
pub async fn index(
    State(app): State<App>,
    reader: Reader,
    Query(filter): Query<Filter>,
) -> Response {
    if !reader.may_read_some() {
        return sign_in_first("/");
    }
    let rows = match rows(&app, &reader, &filter).await {
        Ok(rows) => rows,
        Err(e) => return unavailable(&app, &reader, format!("{e:#}")),
    };
    let repos = app
        .config
        .repositories
        .iter()
        .filter(|r| reader.may_read(&r.name))
        .map(|r| r.name.to_string())
        .collect();
    render(
        &app,
        "index.html",
        &Index {
            who: Who::of(&reader),
            title: "Builds".into(),
            live: format!("/live/builds?{}", filter.query()),
            filter,
            rows,
            statuses: BuildStatus::ALL.iter().map(|s| s.as_str()).collect(),
            triggers: TriggerKind::ALL.iter().map(|t| t.as_str()).collect(),
            repos,
        },
    )
}

/// `GET /live/builds`: the list's rows, sent again whenever they change.
pub async fn live(
    State(app): State<App>,
    Extension(stopping): Extension<CancellationToken>,
    reader: Reader,
    Query(filter): Query<Filter>,
) -> Response {
    if !reader.may_read_some() {
        return sign_in_first("/");
    }
    let look = move || {
        let (app, reader, filter) = (app.clone(), reader.clone(), filter.clone());
        async move {
            let rows = rows(&app, &reader, &filter).await.ok()?;
            let html = app
                .templates
                .page("rows.html", &json!({ "rows": rows }))
                .ok()?;
            Some((html, false))
        }
    };
    live_response(stopping, "rows", look)
}

/// The answer that keeps a page current with `look` ([`changes`]), if there is room.
pub fn live_response<F, Fut>(stopping: CancellationToken, name: &'static str, look: F) -> Response
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Option<(String, bool)>> + Send + 'static,
{
    let Ok(place) = LIVE_PAGES.try_acquire() else {
        return too_many();
    };
    Sse::new(changes(stopping, name, look, place))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Events named `name`, each a new value of `look` (looked at every [`LIVE_EVERY`]), sent
/// when it changes. `look` answers the value and whether it is the last (a build that
/// ended), or `None` to skip a turn. The stream also ends when the bot stops; it holds
/// `place` until then.
fn changes<F, Fut>(
    stopping: CancellationToken,
    name: &'static str,
    look: F,
    place: SemaphorePermit<'static>,
) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Option<(String, bool)>> + Send,
{
    let start = (None::<String>, false, (look, place));
    futures_util::stream::unfold(start, move |(last, ended, (look, place))| {
        let stopping = stopping.clone();
        async move {
            if ended {
                return None;
            }
            let mut wait = last.is_some();
            loop {
                if wait {
                    tokio::select! {
                        () = tokio::time::sleep(LIVE_EVERY) => {}
                        () = stopping.cancelled() => return None,
                    }
                }
                wait = true;
                let Some((now, ended)) = look().await else {
                    continue;
                };
                if last.as_ref() != Some(&now) || ended {
                    let event = Event::default().event(name).data(&now);
                    return Some((Ok(event), (Some(now), ended, (look, place))));
                }
            }
        }
    })
}

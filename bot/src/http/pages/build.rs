//! A build's page: its header, its task graph column by column, the log of the task that
//! matters most (the first that failed), its artifacts and reports, and the buttons that run
//! it again, cancel it, or run a step by hand. The header and graph are kept current while
//! the page is open.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use kiln_shared::build::{BuildId, BuildStatus, TaskStatus};
use kiln_shared::plan::Plan;
use kiln_shared::priority::Priority;
use kiln_shared::trigger::TriggerKind;
use kiln_shared::view::Report;
use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::builds::live_response;
use super::log::{self, LogView};
use super::readers::{Reader, from_elsewhere};
use super::view::{Who, duration, first_line, time};
use super::{render, sign_in_first, unavailable, unreadable};
use crate::app::App;
use crate::commands::reply::Outcome;
use crate::commands::{self, Actor, Reply};
use crate::http::builds::build_and_tasks;
use crate::store::{BuildRecord, TaskRecord};

/// What the page is asked to show.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Shown {
    /// The task whose log is open; the first that failed when absent.
    pub task: Option<String>,
    /// The log's page (1 is its first lines); its last when absent.
    pub page: Option<usize>,
    /// Lines of the log to find.
    pub q: Option<String>,
}

#[derive(Debug, Serialize)]
struct Page {
    who: Who,
    title: String,
    header: Header,
    graph: String,
    live: String,
    actions: Actions,
    reports: Vec<Report>,
    artifacts: Vec<ArtifactLink>,
    log: Option<LogView>,
    said: Option<Reply>,
}

/// What the header and the graph show: what changes while the build runs.
#[derive(Debug, Serialize)]
struct Graph {
    header: Header,
    columns: Vec<Vec<TaskView>>,
}

#[derive(Debug, Clone, Serialize)]
struct Header {
    id: u64,
    repo: String,
    repo_url: String,
    status: BuildStatus,
    /// Its status will not change again: the page stops asking.
    ended: bool,
    trigger: TriggerKind,
    target: String,
    tag: bool,
    commit: String,
    short_commit: String,
    subject: String,
    author: String,
    note: Option<String>,
    vars: Vec<String>,
    high_priority: bool,
    error: Option<String>,
    created: String,
    duration: String,
    reuse: Option<u64>,
    request: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
struct TaskView {
    name: String,
    url: String,
    status: TaskStatus,
    platform: String,
    attempt: u32,
    exit_code: Option<i64>,
    outcome: Option<String>,
    worker: Option<String>,
    duration: Option<String>,
    reused_from: Option<u64>,
    allow_failure: bool,
    selected: bool,
}

#[derive(Debug, Default, Serialize)]
struct Actions {
    /// The token the forms carry; none: nobody signed in, and no button is shown.
    form_token: Option<String>,
    retry: bool,
    retry_failed: bool,
    cancel: bool,
    /// Steps run by hand that can be run.
    run: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ArtifactLink {
    task: String,
    path: String,
    size: u64,
    digest: String,
    url: String,
}

/// What an artifact's path cannot hold as it is in a URL's path.
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`');

impl Shown {
    /// What a query asks to be shown; a query that does not say is the page's default.
    pub fn from_query(query: Option<&str>) -> Self {
        serde_urlencoded::from_str(query.unwrap_or_default()).unwrap_or_default()
    }

    /// `path` showing this.
    fn url(&self, path: &str) -> String {
        match serde_urlencoded::to_string(self) {
            Ok(query) if !query.is_empty() => format!("{path}?{query}"),
            _ => path.to_owned(),
        }
    }
}

/// A task's name in a URL's query.
pub fn encoded(name: &str) -> String {
    utf8_percent_encode(name, NON_ALPHANUMERIC).to_string()
}

fn header(id: BuildId, record: &BuildRecord) -> Header {
    Header {
        id: id.0,
        repo: record.build.repo.to_string(),
        repo_url: format!("/repos/{}", record.build.repo),
        status: record.status,
        ended: record.status.is_final(),
        trigger: record.kind,
        target: record.build.branch.to_string(),
        tag: record.kind == TriggerKind::Tag,
        commit: record.build.commit.to_string(),
        short_commit: record.build.commit.chars().take(8).collect(),
        subject: first_line(&record.subject),
        author: record.author.clone(),
        note: record.note.clone(),
        vars: record
            .vars
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        high_priority: record.priority == Priority::High,
        error: record.error.clone().filter(|e| !e.is_empty()),
        created: time(record.created_ms),
        duration: duration(record.created_ms, record.finished_ms),
        reuse: record.reuse.map(|b| b.0),
        request: record.request.as_ref().map(|r| r.number),
    }
}

/// The task whose log opens first: the first that failed, else one that runs, else the last.
fn chosen<'a>(tasks: &'a [TaskRecord], asked: Option<&str>) -> Option<&'a TaskRecord> {
    if let Some(name) = asked {
        return tasks.iter().find(|t| t.name == name);
    }
    tasks
        .iter()
        .find(|t| matches!(t.status, TaskStatus::Failed | TaskStatus::Errored))
        .or_else(|| tasks.iter().find(|t| t.status == TaskStatus::Running))
        .or_else(|| tasks.last())
}

fn graph(id: BuildId, record: &BuildRecord, tasks: &[TaskRecord], selected: Option<&str>) -> Graph {
    let empty = Plan {
        tasks: Vec::new(),
        merged_with: None,
    };
    let plan = record.plan.as_deref().unwrap_or(&empty);
    let columns = plan
        .columns()
        .into_iter()
        .map(|column| {
            column
                .into_iter()
                .map(|planned| {
                    let stored = tasks.iter().find(|t| t.name == planned.name);
                    let not_stored = TaskRecord::not_stored(&planned.name);
                    let task = stored.unwrap_or(&not_stored);
                    TaskView {
                        name: planned.name.clone(),
                        url: format!("/builds/{id}?task={}", encoded(&planned.name)),
                        status: task.status,
                        platform: planned.platform.to_string(),
                        attempt: task.attempt,
                        exit_code: task.exit_code,
                        outcome: task.outcome.clone(),
                        worker: task.worker.clone(),
                        duration: task.started_ms.map(|s| duration(s, task.finished_ms)),
                        reused_from: task.reused_from.map(|b| b.0),
                        allow_failure: planned.allow_failure,
                        selected: selected == Some(planned.name.as_str()),
                    }
                })
                .collect()
        })
        .collect();
    Graph {
        header: header(id, record),
        columns,
    }
}

/// The build's page for `reader`, with `said` the answer to what they just asked.
pub async fn page(
    app: &App,
    reader: &Reader,
    id: BuildId,
    shown: Shown,
    said: Option<Reply>,
) -> Response {
    let path = format!("/builds/{id}");
    if !reader.may_read_some() {
        return sign_in_first(&shown.url(&path));
    }
    let (record, tasks) = match build_and_tasks(app, reader, id).await {
        Ok(found) => found,
        Err(error) => return unreadable(app, reader, error),
    };
    let reports = match app.store.reports(id).await {
        Ok(reports) => reports,
        Err(e) => return unavailable(app, reader, e),
    };
    let selected = chosen(&tasks, shown.task.as_deref());
    let selected_name = selected.map(|t| t.name.clone());
    let log = match selected {
        Some(task) => match log::view(app, &record, id, task, &shown).await {
            Ok(view) => Some(view),
            Err(e) => return unavailable(app, reader, format!("{e:#}")),
        },
        None => None,
    };
    let graph_view = graph(id, &record, &tasks, selected_name.as_deref());
    let graph_html = match app.templates.page("graph.html", &graph_view) {
        Ok(html) => html,
        Err(e) => return unavailable(app, reader, e),
    };
    let ended = record.status.is_final();
    let failed = tasks
        .iter()
        .any(|t| !matches!(t.status, TaskStatus::Passed | TaskStatus::Manual));
    let actions = Actions {
        form_token: reader.form_token(),
        retry: ended,
        retry_failed: ended && failed && record.plan.is_some(),
        cancel: !ended,
        // `run` takes the rest of an ended build.
        run: tasks
            .iter()
            .filter(|t| ended && t.status == TaskStatus::Manual)
            .map(|t| t.name.clone())
            .collect(),
    };
    let artifacts = tasks
        .iter()
        .flat_map(|t| &t.artifacts)
        .map(|a| ArtifactLink {
            task: a.task.clone(),
            path: a.path.clone(),
            size: a.size,
            digest: a.digest.clone(),
            url: format!(
                "/builds/{id}/artifacts/{}?task={}",
                utf8_percent_encode(&a.path, PATH),
                encoded(&a.task)
            ),
        })
        .collect();
    let live = match &selected_name {
        Some(task) => format!("{path}/live?task={}", encoded(task)),
        None => format!("{path}/live"),
    };
    let mut answer = render(
        app,
        "build.html",
        &Page {
            who: Who::of(reader),
            title: format!("#{id} {} {}", record.build.repo, record.build.branch),
            header: graph_view.header,
            graph: graph_html,
            live,
            actions,
            reports,
            artifacts,
            log,
            said: said.clone(),
        },
    );
    if said.is_some_and(|s| s.outcome == Outcome::Refused) {
        *answer.status_mut() = StatusCode::FORBIDDEN;
    }
    answer
}

/// `GET /builds/{id}/live`: the header and graph, sent again whenever they change, until
/// the build has ended.
pub async fn live(
    State(app): State<App>,
    Extension(stopping): Extension<CancellationToken>,
    reader: Reader,
    Path(id): Path<u64>,
    Query(shown): Query<Shown>,
) -> Response {
    let id = BuildId(id);
    if let Err(error) = build_and_tasks(&app, &reader, id).await {
        return unreadable(&app, &reader, error);
    }
    let look = move || {
        let (app, reader, task) = (app.clone(), reader.clone(), shown.task.clone());
        async move {
            let (record, tasks) = build_and_tasks(&app, &reader, id).await.ok()?;
            let selected = chosen(&tasks, task.as_deref()).map(|t| t.name.clone());
            let view = graph(id, &record, &tasks, selected.as_deref());
            let html = app.templates.page("graph.html", &view).ok()?;
            Some((html, record.status.is_final()))
        }
    };
    live_response(stopping, "graph", look)
}

/// A button of the page.
#[derive(Debug, Deserialize)]
pub struct Action {
    /// The form's token.
    form_token: String,
    /// `retry`, `retry_failed`, `cancel` or `run`.
    action: String,
    /// The step to run, for `run`.
    #[serde(default)]
    step: String,
}

/// `POST /builds/{id}/actions`: a button, carried out as the command chat takes, with the
/// same permissions; a build it starts is shown next.
pub async fn act(
    State(app): State<App>,
    headers: HeaderMap,
    reader: Reader,
    Path(id): Path<u64>,
    Form(action): Form<Action>,
) -> Response {
    if let Some(refusal) = from_elsewhere(&headers) {
        return refusal;
    }
    let id = BuildId(id);
    let Some(session) = reader.session().cloned() else {
        return sign_in_first(&format!("/builds/{id}"));
    };
    if let Some(refusal) = reader.refuse_form(&action.form_token) {
        return refusal;
    }
    if let Err(error) = build_and_tasks(&app, &reader, id).await {
        return unreadable(&app, &reader, error);
    }
    let command = match action.action.as_str() {
        "retry" => format!("retry {id}"),
        "retry_failed" => format!("retry {id} --failed"),
        "cancel" => format!("cancel {id}"),
        "run" => format!("run {id} {}", action.step),
        other => {
            return (
                StatusCode::BAD_REQUEST,
                format!("there is no button `{other}`"),
            )
                .into_response();
        }
    };
    let actor = Actor {
        name: &session.name,
        via: "web",
        id: &session.id,
        operator: session.operator,
        channel: None,
        writes: None,
        roles: &[],
    };
    let reply = commands::run(&app, actor, &command).await;
    match reply.started {
        Some(started) => Redirect::to(&format!("/builds/{started}")).into_response(),
        None => page(&app, &reader, id, Shown::default(), Some(reply)).await,
    }
}

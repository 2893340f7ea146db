//! Fake GitHub and GitLab REST APIs on loopback: they take commit statuses and comments as
//! the real ones do, and answer for pull requests and permissions what the test set, so
//! octocrab and the `gitlab` crate run as in production.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

/// The token both fakes accept.
pub const FORGE_TOKEN: &str = "forge-token-for-tests";

/// One status a forge was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// `owner/name`.
    pub repo: String,
    pub commit: String,
    pub context: String,
    /// As the forge spells it (`pending`, `success`, `running`, `failed`, …).
    pub state: String,
    pub description: String,
    pub target_url: String,
}

/// A fake forge, what it took and what it answers.
#[derive(Debug, Clone)]
pub struct FakeForge {
    pub addr: SocketAddr,
    state: Shared,
}

#[derive(Debug, Default)]
struct Forge {
    statuses: Vec<Posted>,
    /// `(repo, number, body)` of each comment, in order, as last edited; a comment's id is
    /// its place in this list, from 1.
    comments: Vec<(String, u64, String)>,
    /// How many edits comments took.
    edits: usize,
    /// Pull (merge) requests by number.
    pulls: HashMap<u64, Pull>,
    /// Users' permissions: GitHub's names (`write`), GitLab's access levels (`30`).
    permissions: HashMap<String, String>,
}

/// A pull (merge) request the fake answers for.
#[derive(Debug, Clone)]
struct Pull {
    branch: String,
    from_fork: bool,
    /// Its head commit.
    head: String,
}

type Shared = Arc<Mutex<Forge>>;

impl FakeForge {
    /// A fake of GitHub's API, at `http://<addr>` (what `[github] api_url` takes).
    pub async fn github() -> Self {
        Self::serve(
            Router::new()
                .route("/repos/{owner}/{name}/statuses/{sha}", post(github_status))
                .route("/repos/{owner}/{name}/pulls/{number}", get(github_pull))
                .route(
                    "/repos/{owner}/{name}/collaborators/{user}/permission",
                    get(github_permission),
                )
                .route(
                    "/repos/{owner}/{name}/issues/{number}/comments",
                    post(github_comment),
                )
                .route(
                    "/repos/{owner}/{name}/issues/comments/{id}",
                    axum::routing::patch(github_edit_comment),
                ),
        )
        .await
    }

    /// A fake of GitLab's API, at `http://<addr>` (what `[gitlab] url` takes).
    pub async fn gitlab() -> Self {
        Self::serve(
            Router::new()
                .route("/api/v4/user", get(gitlab_user))
                .route(
                    "/api/v4/projects/{project}/statuses/{sha}",
                    post(gitlab_status),
                )
                .route(
                    "/api/v4/projects/{project}/merge_requests/{iid}",
                    get(gitlab_merge_request),
                )
                .route(
                    "/api/v4/projects/{project}/members/all/{user}",
                    get(gitlab_member),
                )
                .route(
                    "/api/v4/projects/{project}/merge_requests/{iid}/notes",
                    post(gitlab_note),
                )
                .route(
                    "/api/v4/projects/{project}/merge_requests/{iid}/notes/{id}",
                    axum::routing::put(gitlab_edit_note),
                ),
        )
        .await
    }

    async fn serve(routes: Router<Shared>) -> Self {
        let state: Shared = Arc::default();
        let app = routes.with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every status taken so far.
    pub fn statuses(&self) -> Vec<Posted> {
        self.state.lock().expect("not poisoned").statuses.clone()
    }

    /// Every comment taken so far, as last edited: `(repo, number, body)`.
    pub fn comments(&self) -> Vec<(String, u64, String)> {
        self.state.lock().expect("not poisoned").comments.clone()
    }

    /// How many edits of comments the forge took.
    pub fn edits(&self) -> usize {
        self.state.lock().expect("not poisoned").edits
    }

    /// Makes pull (merge) request `number` ask to merge `branch`, from a fork or not.
    pub fn open_pull(&self, number: u64, branch: &str, from_fork: bool) {
        let mut state = self.state.lock().expect("not poisoned");
        let head = "0".repeat(40);
        let pull = Pull {
            branch: branch.to_owned(),
            from_fork,
            head,
        };
        state.pulls.insert(number, pull);
    }

    /// Moves the head of request `number` (opened before) to `head`.
    pub fn push_to_pull(&self, number: u64, head: &str) {
        let mut state = self.state.lock().expect("not poisoned");
        if let Some(pull) = state.pulls.get_mut(&number) {
            head.clone_into(&mut pull.head);
        }
    }

    /// Gives `user` `permission` on every repository (GitHub: `write`; GitLab: `30`).
    pub fn grant(&self, user: &str, permission: &str) {
        let mut state = self.state.lock().expect("not poisoned");
        state
            .permissions
            .insert(user.to_owned(), permission.to_owned());
    }

    /// The latest state of each context on `commit`, as the forge would show them.
    pub fn latest(&self, commit: &str) -> HashMap<String, String> {
        self.statuses()
            .into_iter()
            .filter(|s| s.commit == commit)
            .map(|s| (s.context, s.state))
            .collect()
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("authorization")?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("token "))
}

/// Like GitHub's Create a commit status: `201` and the status.
async fn github_status(
    State(posted): State<Shared>,
    Path((owner, name, sha)): Path<(String, String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if bearer(&headers) != Some(FORGE_TOKEN) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "message": "Bad credentials" })),
        );
    }
    let field = |name: &str| body[name].as_str().unwrap_or_default().to_owned();
    posted.lock().expect("not poisoned").statuses.push(Posted {
        repo: format!("{owner}/{name}"),
        commit: sha,
        context: field("context"),
        state: field("state"),
        description: field("description"),
        target_url: field("target_url"),
    });
    let mut status = body.clone();
    status["id"] = 1.into();
    status["url"] = "http://fake/status/1".into();
    status["created_at"] = "2026-11-23T12:00:00Z".into();
    status["updated_at"] = "2026-11-23T12:00:00Z".into();
    (StatusCode::CREATED, Json(status))
}

fn gitlab_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("private-token")
        .and_then(|v| v.to_str().ok())
        .or_else(|| bearer(headers))
}

/// Like GitLab's Get the current user: what the `gitlab` crate checks its token with.
async fn gitlab_user(headers: HeaderMap) -> (StatusCode, Json<Value>) {
    if gitlab_token(&headers) != Some(FORGE_TOKEN) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "message": "401 Unauthorized" })),
        );
    }
    (
        StatusCode::OK,
        Json(json!({ "id": 1, "username": "kiln", "name": "Kiln", "state": "active" })),
    )
}

/// Like GitLab's Set the pipeline status of a commit: the form's fields, `201`.
async fn gitlab_status(
    State(posted): State<Shared>,
    Path((project, sha)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    if gitlab_token(&headers) != Some(FORGE_TOKEN) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "message": "401 Unauthorized" })),
        );
    }
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let field = |name: &str| form.get(name).cloned().unwrap_or_default();
    // Like GitLab, refuse a status that keeps the state it has.
    let current = posted
        .lock()
        .expect("not poisoned")
        .statuses
        .iter()
        .rev()
        .find(|s| s.commit == sha && s.context == field("name"))
        .map(|s| s.state.clone());
    if current.as_deref() == Some(field("state").as_str()) {
        return (
            StatusCode::BAD_REQUEST,
            Json(
                json!({ "message": format!("Cannot transition status via :run from :{}", field("state")) }),
            ),
        );
    }
    posted.lock().expect("not poisoned").statuses.push(Posted {
        repo: project,
        commit: sha.clone(),
        context: field("name"),
        state: field("state"),
        description: field("description"),
        target_url: field("target_url"),
    });
    (
        StatusCode::CREATED,
        Json(json!({ "id": 1, "sha": sha, "status": field("state"), "name": field("name") })),
    )
}

fn not_found() -> (StatusCode, Json<Value>) {
    (
        StatusCode::NOT_FOUND,
        Json(
            json!({ "message": "Not Found", "documentation_url": "https://docs.github.com/rest" }),
        ),
    )
}

/// Like GitHub's Get a pull request: the fields of its head Kiln reads.
async fn github_pull(
    State(state): State<Shared>,
    Path((owner, name, number)): Path<(String, String, u64)>,
) -> (StatusCode, Json<Value>) {
    let state = state.lock().expect("not poisoned");
    let Some(pull) = state.pulls.get(&number) else {
        return not_found();
    };
    let head_repo = if pull.from_fork {
        format!("someone/{name}")
    } else {
        format!("{owner}/{name}")
    };
    (
        StatusCode::OK,
        Json(json!({
            "number": number,
            "title": "A change",
            "user": { "login": "someone" },
            "head": { "ref": pull.branch, "sha": pull.head, "repo": { "full_name": head_repo } },
            "base": { "ref": "master" }
        })),
    )
}

/// Like GitHub's Get repository permissions for a user: `404` for a stranger.
async fn github_permission(
    State(state): State<Shared>,
    Path((_owner, _name, user)): Path<(String, String, String)>,
) -> (StatusCode, Json<Value>) {
    let state = state.lock().expect("not poisoned");
    match state.permissions.get(&user) {
        Some(permission) => (
            StatusCode::OK,
            Json(json!({ "permission": permission, "user": { "login": user } })),
        ),
        None => not_found(),
    }
}

/// Like GitHub's Create an issue comment.
async fn github_comment(
    State(state): State<Shared>,
    Path((owner, name, number)): Path<(String, String, u64)>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let text = body["body"].as_str().unwrap_or_default().to_owned();
    let id = keep_comment(&state, format!("{owner}/{name}"), number, &text);
    (StatusCode::CREATED, Json(json!({ "id": id, "body": text })))
}

/// Keeps a new comment; returns its id.
fn keep_comment(state: &Shared, repo: String, number: u64, text: &str) -> usize {
    let mut state = state.lock().expect("not poisoned");
    state.comments.push((repo, number, text.to_owned()));
    state.comments.len()
}

/// Replaces comment `id`'s text; false if there is no such comment.
fn edit_comment(state: &Shared, id: usize, text: &str) -> bool {
    let mut state = state.lock().expect("not poisoned");
    let Some(comment) = id.checked_sub(1).and_then(|i| state.comments.get_mut(i)) else {
        return false;
    };
    comment.2 = text.to_owned();
    state.edits += 1;
    true
}

/// Like GitHub's Update an issue comment.
async fn github_edit_comment(
    State(state): State<Shared>,
    Path((_owner, _name, id)): Path<(String, String, usize)>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let text = body["body"].as_str().unwrap_or_default();
    if !edit_comment(&state, id, text) {
        return not_found();
    }
    (StatusCode::OK, Json(json!({ "id": id, "body": text })))
}

/// Like GitLab's Modify existing merge request note.
async fn gitlab_edit_note(
    State(state): State<Shared>,
    Path((_project, _iid, id)): Path<(String, u64, usize)>,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let text = form.get("body").cloned().unwrap_or_default();
    if !edit_comment(&state, id, &text) {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "message": "404 Not found" })),
        );
    }
    (StatusCode::OK, Json(json!({ "id": id, "body": text })))
}

/// Like GitLab's Get single merge request: the fields Kiln reads.
async fn gitlab_merge_request(
    State(state): State<Shared>,
    Path((_project, iid)): Path<(String, u64)>,
) -> (StatusCode, Json<Value>) {
    let state = state.lock().expect("not poisoned");
    let Some(pull) = state.pulls.get(&iid) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "message": "404 Not found" })),
        );
    };
    let source = if pull.from_fork { 99 } else { 5 };
    (
        StatusCode::OK,
        Json(json!({
            "iid": iid, "source_branch": pull.branch, "source_project_id": source,
            "target_project_id": 5, "sha": pull.head, "target_branch": "master",
            "title": "A change", "author": { "username": "someone" }
        })),
    )
}

/// Like GitLab's Get a member of a project, including inherited members.
async fn gitlab_member(
    State(state): State<Shared>,
    Path((_project, user)): Path<(String, String)>,
) -> (StatusCode, Json<Value>) {
    let state = state.lock().expect("not poisoned");
    match state
        .permissions
        .get(&user)
        .and_then(|l| l.parse::<u64>().ok())
    {
        Some(level) => (
            StatusCode::OK,
            Json(json!({ "id": user.parse::<u64>().unwrap_or(0), "access_level": level })),
        ),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "message": "404 Not found" })),
        ),
    }
}

/// Like GitLab's Create new merge request note.
async fn gitlab_note(
    State(state): State<Shared>,
    Path((project, iid)): Path<(String, u64)>,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let text = form.get("body").cloned().unwrap_or_default();
    let id = keep_comment(&state, project, iid, &text);
    (StatusCode::CREATED, Json(json!({ "id": id, "body": text })))
}

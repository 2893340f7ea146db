//! Fake GitHub and GitLab REST APIs on loopback: they take commit statuses as the real ones
//! do, so octocrab and the `gitlab` crate run as in production, and record them.

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

/// A fake forge and the statuses it took, in order.
#[derive(Debug, Clone)]
pub struct FakeForge {
    pub addr: SocketAddr,
    posted: Arc<Mutex<Vec<Posted>>>,
}

type Shared = Arc<Mutex<Vec<Posted>>>;

impl FakeForge {
    /// A fake of GitHub's API, at `http://<addr>` (what `[github] api_url` takes).
    pub async fn github() -> Self {
        Self::serve(
            Router::new().route("/repos/{owner}/{name}/statuses/{sha}", post(github_status)),
        )
        .await
    }

    /// A fake of GitLab's API, at `http://<addr>` (what `[gitlab] url` takes).
    pub async fn gitlab() -> Self {
        Self::serve(Router::new().route("/api/v4/user", get(gitlab_user)).route(
            "/api/v4/projects/{project}/statuses/{sha}",
            post(gitlab_status),
        ))
        .await
    }

    async fn serve(routes: Router<Shared>) -> Self {
        let posted: Shared = Arc::default();
        let app = routes.with_state(posted.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, posted }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every status taken so far.
    pub fn statuses(&self) -> Vec<Posted> {
        self.posted.lock().expect("not poisoned").clone()
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
    posted.lock().expect("not poisoned").push(Posted {
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
    posted.lock().expect("not poisoned").push(Posted {
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

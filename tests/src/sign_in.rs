//! A fake GitHub or GitLab to sign in with, on loopback: its OAuth endpoints (the
//! authorization page answers at once, as if the reader agreed) and the two API calls Kiln
//! makes with the reader's token, so the bot's real OAuth client runs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::json;
use sha2::Digest as _;

/// Each reader's login and the repositories (`owner/name`) they may read.
type Readers = Arc<HashMap<String, Vec<String>>>;

/// A fake forge that signs in whoever the test names.
#[derive(Debug, Clone)]
pub struct FakeSignIn {
    pub addr: SocketAddr,
    pub client_id: String,
    /// `github` or `gitlab`.
    forge: &'static str,
}

/// The OAuth app's secret the fake expects.
pub const CLIENT_SECRET: &str = "oauth-secret-for-tests";

impl FakeSignIn {
    /// A fake GitHub whose authorization page signs in `login`; `readers` are each login
    /// with the repositories it reads.
    pub async fn github(login: &str, readers: &[(&str, &[&str])]) -> Self {
        let routes = Router::new()
            .route("/login/oauth/authorize", get(authorize))
            .route("/login/oauth/access_token", post(token))
            .route("/user", get(user))
            .route("/repos/{owner}/{name}", get(repo));
        Self::serve("github", routes, login, readers).await
    }

    /// The same as GitLab: its endpoints, and projects by their URL-encoded path.
    pub async fn gitlab(login: &str, readers: &[(&str, &[&str])]) -> Self {
        let routes = Router::new()
            .route("/oauth/authorize", get(authorize))
            .route("/oauth/token", post(token))
            .route("/api/v4/user", get(user))
            .route("/api/v4/projects/{project}", get(project));
        Self::serve("gitlab", routes, login, readers).await
    }

    async fn serve(
        forge: &'static str,
        routes: Router<(Readers, String)>,
        login: &str,
        readers: &[(&str, &[&str])],
    ) -> Self {
        let readers: Readers = Arc::new(
            readers
                .iter()
                .map(|(l, repos)| {
                    (
                        (*l).to_owned(),
                        repos.iter().map(|r| (*r).to_owned()).collect(),
                    )
                })
                .collect(),
        );
        let app = routes.with_state((readers, login.to_owned()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            addr,
            client_id: "kiln-client-id".into(),
            forge,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `[access.github]` or `[access.gitlab]` for a bot that signs in here.
    pub fn config(&self) -> String {
        let api = match self.forge {
            "github" => format!("api_url = \"{}\"\n", self.url()),
            _ => String::new(),
        };
        format!(
            "[access.{}]\nclient_id = \"{}\"\nclient_secret = \"{CLIENT_SECRET}\"\n\
             url = \"{}\"\n{api}",
            self.forge,
            self.client_id,
            self.url(),
        )
    }
}

type Shared = State<(Readers, String)>;

/// The authorization page: the reader agrees at once, and is sent back with a code that
/// names them.
async fn authorize(
    State((_, login)): Shared,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let (Some(back), Some(state)) = (query.get("redirect_uri"), query.get("state")) else {
        return (StatusCode::BAD_REQUEST, "redirect_uri and state are needed").into_response();
    };
    let (Some("S256"), Some(challenge)) = (
        query.get("code_challenge_method").map(String::as_str),
        query.get("code_challenge"),
    ) else {
        return (StatusCode::BAD_REQUEST, "PKCE (S256) is expected").into_response();
    };
    // The code carries the challenge, for the token endpoint to check the verifier against.
    Redirect::to(&format!(
        "{back}?code=code-{login}.{challenge}&state={state}"
    ))
    .into_response()
}

/// The code for a token: the client's secret must be right.
async fn token(headers: HeaderMap, Form(form): Form<HashMap<String, String>>) -> Response {
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let secret_in_form = form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET);
    let expected = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("kiln-client-id:{CLIENT_SECRET}")
        )
    );
    if !secret_in_form && basic != expected {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "bad_client"})),
        )
            .into_response();
    }
    let Some((login, challenge)) = form
        .get("code")
        .and_then(|c| c.strip_prefix("code-"))
        .and_then(|c| c.split_once('.'))
    else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "bad_verification_code"})),
        )
            .into_response();
    };
    // PKCE: the verifier is the one the challenge was made of.
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    let derived = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        sha2::Sha256::digest(verifier.as_bytes()),
    );
    if derived != challenge {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    }
    Json(json!({ "access_token": format!("token-{login}"), "token_type": "bearer", "scope": "repo" }))
        .into_response()
}

fn login_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer token-")
        .map(str::to_owned)
}

/// Who the token is of, as GitHub (`login`) and GitLab (`username`) say it.
async fn user(headers: HeaderMap) -> Response {
    match login_of(&headers) {
        Some(login) => Json(json!({ "login": login, "username": login, "id": 1 })).into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn repo(
    state: Shared,
    headers: HeaderMap,
    Path((owner, name)): Path<(String, String)>,
) -> Response {
    readable(state, &headers, format!("{owner}/{name}"))
}

async fn project(state: Shared, headers: HeaderMap, Path(project): Path<String>) -> Response {
    readable(state, &headers, project)
}

fn readable(State((readers, _)): Shared, headers: &HeaderMap, full: String) -> Response {
    let reads = login_of(headers)
        .and_then(|login| readers.get(&login).cloned())
        .is_some_and(|repos| repos.contains(&full));
    if reads {
        Json(json!({ "full_name": full, "private": true })).into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

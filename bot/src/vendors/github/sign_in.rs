//! Signing in to Kiln's pages with GitHub: an OAuth app's endpoints, whose token it is, and
//! whether that token reads a repository.

use anyhow::Context as _;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};

/// Where people sign in, and the API beside it.
pub const URL: &str = "https://github.com";
pub const API: &str = "https://api.github.com";

/// The API of the GitHub at `url`: GitHub's own beside `github.com`, an Enterprise
/// server's under `/api/v3`.
pub fn api(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url == URL {
        API.to_owned()
    } else {
        format!("{url}/api/v3")
    }
}
/// The OAuth endpoints, under [`URL`].
pub const AUTHORIZE: &str = "/login/oauth/authorize";
pub const TOKEN: &str = "/login/oauth/access_token";
/// `repo`: an OAuth app's token reads a private repository only with it (GitHub has no
/// read-only scope for them). Kiln uses the token once, at sign-in, and keeps it nowhere.
pub const SCOPES: &[&str] = &["repo"];

fn get(http: &reqwest::Client, url: String, token: &SecretString) -> reqwest::RequestBuilder {
    http.get(url)
        .bearer_auth(token.expose_secret())
        .header(reqwest::header::ACCEPT, "application/vnd.github+json")
        .header(reqwest::header::USER_AGENT, "kiln")
}

/// The token's owner: their number (which a rename does not change) and their name.
pub async fn login(
    http: &reqwest::Client,
    api: &str,
    token: &SecretString,
) -> anyhow::Result<(u64, String)> {
    let user: serde_json::Value = get(http, format!("{api}/user"), token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let name = user["login"]
        .as_str()
        .map(str::to_owned)
        .context("GitHub's user has no login")?;
    let id = user["id"].as_u64().context("GitHub's user has no id")?;
    Ok((id, name))
}

/// Whether the token reads `repo` (`owner/name`).
pub async fn reads(
    http: &reqwest::Client,
    api: &str,
    token: &SecretString,
    repo: &str,
) -> anyhow::Result<bool> {
    let answer = get(http, format!("{api}/repos/{repo}"), token)
        .send()
        .await?;
    match answer.status() {
        StatusCode::OK => Ok(true),
        StatusCode::NOT_FOUND | StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => Ok(false),
        other => anyhow::bail!("GitHub answered {other} for {repo}"),
    }
}

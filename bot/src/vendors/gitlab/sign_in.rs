//! Signing in to Kiln's pages with GitLab: an OAuth application's endpoints, whose token it
//! is, and whether that token reads a project.

use anyhow::Context as _;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};

/// Where people sign in; the API is under it (`/api/v4`).
pub const URL: &str = "https://gitlab.com";
/// The OAuth endpoints, under the instance's URL.
pub const AUTHORIZE: &str = "/oauth/authorize";
pub const TOKEN: &str = "/oauth/token";
/// `read_api`: who they are and the projects they read, nothing more.
pub const SCOPES: &[&str] = &["read_api"];

/// The API of the instance at `url`.
pub fn api(url: &str) -> String {
    format!("{}/api/v4", url.trim_end_matches('/'))
}

/// The token's owner: their number (which a rename does not change) and their name.
pub async fn login(
    http: &reqwest::Client,
    api: &str,
    token: &SecretString,
) -> anyhow::Result<(u64, String)> {
    let user: serde_json::Value = http
        .get(format!("{api}/user"))
        .bearer_auth(token.expose_secret())
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let name = user["username"]
        .as_str()
        .map(str::to_owned)
        .context("GitLab's user has no username")?;
    let id = user["id"].as_u64().context("GitLab's user has no id")?;
    Ok((id, name))
}

/// Whether the token reads the project `repo` (`group/name`).
pub async fn reads(
    http: &reqwest::Client,
    api: &str,
    token: &SecretString,
    repo: &str,
) -> anyhow::Result<bool> {
    let project = utf8_percent_encode(repo, NON_ALPHANUMERIC);
    let answer = http
        .get(format!("{api}/projects/{project}"))
        .bearer_auth(token.expose_secret())
        .send()
        .await?;
    match answer.status() {
        StatusCode::OK => Ok(true),
        StatusCode::NOT_FOUND | StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => Ok(false),
        other => anyhow::bail!("GitLab answered {other} for {repo}"),
    }
}

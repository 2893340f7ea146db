//! The repositories Kiln builds, as the rest of the bot needs to know them beyond their
//! configuration.

use crate::app::App;
use crate::config::Repository;

/// Builds looked back over, newest first, for where a repository was fetched from.
const CLONE_URL_LOOKBACK: u64 = 200;

/// Where to fetch `repository` from: its configured clone URL, else where the newest of its
/// recent builds fetched it from.
pub async fn clone_url(app: &App, repository: &Repository) -> anyhow::Result<Option<String>> {
    if let Some(url) = &repository.clone_url {
        return Ok(Some(url.clone()));
    }
    let recent = app.store.recent_builds(CLONE_URL_LOOKBACK).await?;
    Ok(recent
        .into_iter()
        .find(|r| r.build.repo.eq_ignore_ascii_case(&repository.name) && !r.clone_url.is_empty())
        .map(|r| r.clone_url))
}

//! `status [repo] [branch]`: the newest builds.

use super::reply::Reply;
use crate::app::App;

/// Builds `status` looks back over, newest first, to find the ones asked for.
const STATUS_LOOKBACK: u64 = 200;
/// Builds `status` shows.
const STATUS_SHOWN: usize = 10;

/// The newest builds, of `repo` and `branch` if named.
pub async fn status(app: &App, repo: Option<&str>, branch: Option<&str>) -> anyhow::Result<Reply> {
    let recent = app.store.recent_builds(STATUS_LOOKBACK).await?;
    if recent.is_empty() {
        return Ok(Reply::done("No builds yet."));
    }
    let mut lines = Vec::new();
    for record in recent {
        let b = &record.build;
        let id = b.id;
        if repo.is_some_and(|r| !r.eq_ignore_ascii_case(&b.repo))
            || branch.is_some_and(|br| br != b.branch)
        {
            continue;
        }
        let commit: String = b.commit.chars().take(8).collect();
        lines.push(format!(
            "#{id} {} {} {commit} {}: {}",
            b.repo, b.branch, record.status, record.subject
        ));
        if lines.len() == STATUS_SHOWN {
            break;
        }
    }
    if lines.is_empty() {
        let what = match (repo, branch) {
            (Some(repo), Some(branch)) => format!(" of {repo} {branch}"),
            (Some(repo), None) => format!(" of {repo}"),
            _ => String::new(),
        };
        return Ok(Reply::done(format!("No recent builds{what}.")));
    }
    Ok(Reply::done(lines.join("\n")))
}

//! `status [repo] [branch]`: the newest builds.

use kiln_shared::build::BuildStatus;
use kiln_shared::ident::{BranchName, RepoName};
use kiln_shared::wire::BuildRef;

use super::reply::Reply;
use crate::app::App;
use crate::config::Schedule;
use crate::schedules;

/// Builds `status` looks back over, newest first, to find the ones asked for.
const STATUS_LOOKBACK: u64 = 200;
/// Builds `status` shows.
const STATUS_SHOWN: usize = 10;

/// The newest builds, of `repo` and `branch` if named.
pub async fn status(
    app: &App,
    repo: Option<&RepoName>,
    branch: Option<&BranchName>,
) -> anyhow::Result<Reply> {
    let recent = app.store.recent_builds(STATUS_LOOKBACK).await?;
    let lines: Vec<String> = recent
        .iter()
        .filter(|r| {
            repo.is_none_or(|repo| repo.eq_ignore_ascii_case(&r.build.repo))
                && branch.is_none_or(|branch| *branch == r.build.branch)
        })
        .take(STATUS_SHOWN)
        .map(|r| line(&r.build, r.status, &r.subject))
        .collect();
    let mut reply = listed(
        recent.is_empty(),
        &lines,
        repo.map(|r| r.as_str()),
        branch.map(|b| b.as_str()),
    );
    let repository = repo.and_then(|r| app.config.repository(r));
    for schedule in repository
        .map(|r| schedules::of(app, r))
        .unwrap_or_default()
    {
        reply.text.push('\n');
        reply
            .text
            .push_str(&scheduled(&schedule, chrono::Utc::now()));
        if schedule.from_file {
            reply.text.push_str(" (.kiln.yml)");
        }
    }
    Ok(reply)
}

/// A schedule and when it is next due after `now`.
fn scheduled(schedule: &Schedule, now: chrono::DateTime<chrono::Utc>) -> String {
    let next = schedule
        .when()
        .ok()
        .and_then(|when| when.next(now))
        .map_or_else(|| "never".to_owned(), |next| next.to_rfc3339());
    format!(
        "Schedule {}: `{}` ({}) builds {}, next at {next}",
        schedule.name, schedule.cron, schedule.timezone, schedule.branch
    )
}

/// One build, on one line.
fn line(build: &BuildRef, status: BuildStatus, subject: &str) -> String {
    let commit: String = build.commit.chars().take(8).collect();
    format!(
        "#{} {} {} {commit} {status}: {subject}",
        build.id, build.repo, build.branch
    )
}

fn listed(no_builds: bool, lines: &[String], repo: Option<&str>, branch: Option<&str>) -> Reply {
    if no_builds {
        return Reply::done("No builds yet.");
    }
    if lines.is_empty() {
        let what = match (repo, branch) {
            (Some(repo), Some(branch)) => format!(" of {repo} {branch}"),
            (Some(repo), None) => format!(" of {repo}"),
            _ => String::new(),
        };
        return Reply::done(format!("No recent builds{what}."));
    }
    Reply::done(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_shared::build::BuildId;

    #[test]
    fn replies() {
        let build = BuildRef {
            id: BuildId(8),
            repo: "acme/app".into(),
            branch: "main".into(),
            commit: "0123456789abcdef".into(),
        };
        let one = line(&build, BuildStatus::Failed, "Fix `@everyone` <b>");
        insta::assert_snapshot!(one, @"#8 acme/app main 01234567 failed: Fix `@everyone` <b>");
        insta::assert_snapshot!(listed(true, &[], None, None).text, @"No builds yet.");
        insta::assert_snapshot!(listed(false, &[], Some("acme/app"), Some("dev")).text, @"No recent builds of acme/app dev.");
        insta::assert_snapshot!(listed(false, &[], Some("acme/app"), None).text, @"No recent builds of acme/app.");
        let nightly = Schedule {
            name: "nightly".into(),
            cron: "0 2 * * *".into(),
            branch: "master".into(),
            vars: Default::default(),
            timezone: "Europe/Berlin".into(),
            from_file: false,
        };
        assert_eq!(nightly.key(), "nightly");
        let from_file = Schedule {
            from_file: true,
            ..nightly.clone()
        };
        assert_eq!(from_file.key(), "file:nightly", "never the configuration's");
        let now = "2026-12-07T12:00:00Z".parse().expect("a time");
        insta::assert_snapshot!(scheduled(&nightly, now), @"Schedule nightly: `0 2 * * *` (Europe/Berlin) builds master, next at 2026-12-08T02:00:00+01:00");
        insta::assert_snapshot!(listed(false, &[one.clone(), one], None, None).text, @r"
        #8 acme/app main 01234567 failed: Fix `@everyone` <b>
        #8 acme/app main 01234567 failed: Fix `@everyone` <b>
        ");
    }
}

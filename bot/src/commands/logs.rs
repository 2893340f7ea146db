//! `logs <build> [task] [--lines N]`: the end of a task's log, from Redis or its archive.

use kiln_shared::build::{BuildId, TaskStatus};
use kiln_shared::view::log_excerpt;

use super::reply::{self, Reply};
use crate::app::App;

/// Lines `logs` shows unless told otherwise.
pub const DEFAULT_LOG_LINES: usize = 20;
/// How much of a log `logs` shows, in characters: Discord's messages hold 2,000.
const MAX_LOG_CHARS: usize = 1_600;

/// The end of `task`'s log (by default the first that did not pass), `lines` long.
pub async fn logs(
    app: &App,
    build: BuildId,
    task: Option<&str>,
    lines: usize,
) -> anyhow::Result<Reply> {
    let Some(record) = app.store.build(build).await? else {
        return Ok(reply::no_such_build(build));
    };
    let Some(plan) = &record.plan else {
        let why = record
            .error
            .as_deref()
            .unwrap_or("it has not been planned yet");
        return Ok(no_tasks(build, why));
    };
    let tasks = app.store.tasks(build, plan).await?;
    // Without a task named: the first that did not pass, else the last to run.
    let chosen = match task {
        Some(name) => tasks.iter().find(|t| t.name == name),
        None => tasks
            .iter()
            .find(|t| matches!(t.status, TaskStatus::Failed | TaskStatus::Errored))
            .or_else(|| tasks.iter().rev().find(|t| t.status != TaskStatus::Waiting)),
    };
    let Some(chosen) = chosen else {
        let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
        return Ok(not_found(build, task, &names));
    };
    let (tail, total) = app
        .logs
        .tail(&record.build.repo, build, &chosen.name, lines)
        .await?;
    // In a code block, within what a chat message holds: the end is what matters.
    let excerpt = log_excerpt(&tail, lines, MAX_LOG_CHARS);
    let state = chosen
        .outcome
        .clone()
        .unwrap_or_else(|| chosen.status.to_string());
    Ok(excerpt_of(build, &chosen.name, &state, &excerpt, total))
}

fn no_tasks(build: BuildId, why: &str) -> Reply {
    Reply::done(format!("Build #{build} has no tasks: {why}"))
}

fn not_found(build: BuildId, task: Option<&str>, names: &[&str]) -> Reply {
    Reply::invalid(match task {
        Some(name) => format!(
            "Build #{build} has no task `{name}`; its tasks: {}",
            names.join(", ")
        ),
        None => format!("No task of build #{build} has started yet."),
    })
}

fn excerpt_of(build: BuildId, task: &str, state: &str, excerpt: &str, total: usize) -> Reply {
    let shown = excerpt.lines().count();
    Reply::done(format!(
        "Build #{build}, task `{task}` ({state}), last {shown} of {total} line(s):\n```\n{excerpt}\n```"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        insta::assert_snapshot!(no_tasks(BuildId(5), "`.kiln.yml` line 3: bad").text, @"Build #5 has no tasks: `.kiln.yml` line 3: bad");
        insta::assert_snapshot!(not_found(BuildId(5), Some("lint"), &["test", "deploy"]).text, @"Build #5 has no task `lint`; its tasks: test, deploy");
        insta::assert_snapshot!(not_found(BuildId(5), None, &[]).text, @"No task of build #5 has started yet.");
        insta::assert_snapshot!(excerpt_of(BuildId(5), "test", "failed (exit 1)", "a\nb", 40).text, @r"
        Build #5, task `test` (failed (exit 1)), last 2 of 40 line(s):
        ```
        a
        b
        ```
        ");
    }
}

//! `logs <build> [task] [lines]`: the end of a task's log.

use kiln_shared::build::{BuildId, TaskStatus};
use kiln_shared::view::log_excerpt;

use super::reply::Reply;
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
        return Ok(Reply::invalid(format!("There is no build #{build}.")));
    };
    let Some(plan) = &record.plan else {
        let why = record
            .error
            .as_deref()
            .unwrap_or("it has not been planned yet");
        return Ok(Reply::done(format!("Build #{build} has no tasks: {why}")));
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
        return Ok(Reply::invalid(match task {
            Some(name) => format!(
                "Build #{build} has no task `{name}`; its tasks: {}",
                names.join(", ")
            ),
            None => format!("No task of build #{build} has started yet."),
        }));
    };
    let (tail, total) = app.store.log_tail(build, &chosen.name, lines).await?;
    // In a code block, within what a chat message holds: the end is what matters.
    let excerpt = log_excerpt(&tail, lines, MAX_LOG_CHARS);
    let shown = excerpt.lines().count();
    let state = chosen
        .outcome
        .clone()
        .unwrap_or_else(|| chosen.status.to_string());
    Ok(Reply::done(format!(
        "Build #{build}, task `{}` ({state}), last {shown} of {total} line(s):\n```\n{excerpt}\n```",
        chosen.name,
    )))
}

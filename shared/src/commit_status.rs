//! Commit statuses: what a forge shows beside a commit for its build (`kiln`) and for each of
//! its tasks (`kiln/<task>`), before a forge's adapter spells it its own way.

use crate::build::{BuildStatus, TaskStatus};
use crate::view::truncate;

/// The longest description a forge takes (GitHub's limit).
pub const MAX_DESCRIPTION_CHARS: usize = 140;

/// The context of the build's own status.
pub const BUILD_CONTEXT: &str = "kiln";

/// A status's state, as the forges between them know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitState {
    Pending,
    Running,
    Success,
    Failure,
    Error,
    Cancelled,
    Skipped,
}

/// One status of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitStatus {
    /// `kiln` or `kiln/<task>`: statuses with the same context replace each other.
    pub context: String,
    pub state: CommitState,
    pub description: String,
}

impl From<BuildStatus> for CommitState {
    fn from(status: BuildStatus) -> Self {
        match status {
            BuildStatus::Queued => Self::Pending,
            BuildStatus::Running => Self::Running,
            BuildStatus::Passed => Self::Success,
            BuildStatus::Failed => Self::Failure,
            BuildStatus::Errored => Self::Error,
            BuildStatus::Cancelled => Self::Cancelled,
        }
    }
}

impl From<TaskStatus> for CommitState {
    fn from(status: TaskStatus) -> Self {
        match status {
            TaskStatus::Waiting | TaskStatus::Queued => Self::Pending,
            TaskStatus::Running => Self::Running,
            TaskStatus::Passed => Self::Success,
            TaskStatus::Failed => Self::Failure,
            TaskStatus::Errored => Self::Error,
            TaskStatus::Cancelled => Self::Cancelled,
            TaskStatus::Skipped | TaskStatus::Manual => Self::Skipped,
        }
    }
}

/// The statuses of a build now `status` whose tasks are `tasks` (name, status, and the
/// outcome in words once ended): the build's first, then each task's.
pub fn statuses(
    build_id: u64,
    status: BuildStatus,
    tasks: &[(&str, TaskStatus, Option<&str>)],
) -> Vec<CommitStatus> {
    let mut all = vec![CommitStatus {
        context: BUILD_CONTEXT.to_owned(),
        state: status.into(),
        description: format!("build #{build_id} {status}"),
    }];
    all.extend(tasks.iter().map(|(name, status, outcome)| CommitStatus {
        context: format!("{BUILD_CONTEXT}/{name}"),
        state: (*status).into(),
        description: truncate(
            outcome.unwrap_or(status.as_str()),
            MAX_DESCRIPTION_CHARS - 1,
        ),
    }));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_then_each_task() {
        let tasks = [
            ("unit", TaskStatus::Failed, Some("failed with exit code 3")),
            ("ship", TaskStatus::Skipped, None),
            ("lint", TaskStatus::Running, None),
        ];
        let all = statuses(12, BuildStatus::Running, &tasks);
        let shown: Vec<(&str, CommitState, &str)> = all
            .iter()
            .map(|s| (s.context.as_str(), s.state, s.description.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                ("kiln", CommitState::Running, "build #12 running"),
                ("kiln/unit", CommitState::Failure, "failed with exit code 3"),
                ("kiln/ship", CommitState::Skipped, "skipped"),
                ("kiln/lint", CommitState::Running, "running"),
            ]
        );
    }

    #[test]
    fn descriptions_fit_the_forges() {
        let long = "x".repeat(500);
        let all = statuses(
            1,
            BuildStatus::Failed,
            &[("t", TaskStatus::Errored, Some(&long))],
        );
        assert_eq!(all[1].description.chars().count(), MAX_DESCRIPTION_CHARS);
    }
}

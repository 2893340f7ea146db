//! Builds and tasks, their statuses, and the transitions a status may make.
//!
//! A failed build is a value: [`BuildStatus::Failed`] is as ordinary an outcome as
//! [`BuildStatus::Passed`]. The store applies [`TaskStatus::may_become`] as a compare-and-set,
//! so a duplicate or late message can never move a finished task.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A build's number, unique across the installation and never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BuildId(pub u64);

impl fmt::Display for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a whole build stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildStatus {
    /// Accepted; its pipeline is being planned or its first tasks are waiting for a worker.
    Queued,
    /// At least one task has started.
    Running,
    /// Every task passed.
    Passed,
    /// A task failed, or the pipeline spec could not be used.
    Failed,
    /// Kiln itself could not run the build (the repository could not be fetched, say).
    Errored,
    /// Someone stopped it.
    Cancelled,
}

impl BuildStatus {
    /// Every status, in the order they are usually met.
    pub const ALL: [Self; 6] = [
        Self::Queued,
        Self::Running,
        Self::Passed,
        Self::Failed,
        Self::Errored,
        Self::Cancelled,
    ];

    /// The lowercase name used in Redis, routing keys and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::Errored => "errored",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses [`BuildStatus::as_str`] back.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// A final status never changes again.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }

    /// Whether a build in `self` may move to `next`.
    pub fn may_become(self, next: Self) -> bool {
        match self {
            Self::Queued => next != Self::Queued,
            Self::Running => !matches!(next, Self::Queued | Self::Running),
            _ => false,
        }
    }

    /// The statuses from which a build may move to `next`: what a compare-and-set accepts.
    pub fn sources_of(next: Self) -> Vec<Self> {
        Self::ALL
            .into_iter()
            .filter(|s| s.may_become(next))
            .collect()
    }

    /// The status of a build whose tasks have all reached a final status.
    ///
    /// Failures outrank errors, which outrank cancellations: the most useful thing to tell a
    /// person is that their code failed. (A task allowed to fail is counted as passed; see
    /// [`crate::wire::TaskSummary::counted_status`].)
    pub fn from_finished_tasks(tasks: impl IntoIterator<Item = TaskStatus>) -> Self {
        let mut status = Self::Passed;
        for task in tasks {
            let rank = |s: Self| match s {
                Self::Failed => 3,
                Self::Errored => 2,
                Self::Cancelled => 1,
                _ => 0,
            };
            let this = match task {
                TaskStatus::Failed => Self::Failed,
                TaskStatus::Errored => Self::Errored,
                TaskStatus::Cancelled => Self::Cancelled,
                _ => Self::Passed,
            };
            if rank(this) > rank(status) {
                status = this;
            }
        }
        status
    }
}

impl fmt::Display for BuildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one task of a build stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting for the tasks it needs.
    Waiting,
    /// Published to its platform's queue; no worker has it yet.
    Queued,
    /// A worker is running it.
    Running,
    /// Its commands exited with status 0.
    Passed,
    /// A command exited non-zero or the task ran out of time.
    Failed,
    /// Kiln could not run it (image missing, Docker down, checkout failed).
    Errored,
    /// Not run, because a task it needs did not pass.
    Skipped,
    /// Someone stopped it.
    Cancelled,
    /// Not run in this build: its step is run by hand (`when: { manual: true }`), or it
    /// needs such a step. `run <build> <step>` runs it in a new build.
    Manual,
}

impl TaskStatus {
    /// Every status, in the order they are usually met.
    pub const ALL: [Self; 9] = [
        Self::Waiting,
        Self::Queued,
        Self::Running,
        Self::Passed,
        Self::Failed,
        Self::Errored,
        Self::Skipped,
        Self::Cancelled,
        Self::Manual,
    ];

    /// The lowercase name used in Redis, routing keys and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::Errored => "errored",
            Self::Skipped => "skipped",
            Self::Cancelled => "cancelled",
            Self::Manual => "manual",
        }
    }

    /// Parses [`TaskStatus::as_str`] back.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// A final status never changes again.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Waiting | Self::Queued | Self::Running)
    }

    /// Whether a task in `self` may move to `next`.
    ///
    /// `Running → Running` is allowed: it is a redelivered job taken over by another worker
    /// after the first one died, and the store counts it as a new attempt.
    pub fn may_become(self, next: Self) -> bool {
        use TaskStatus::*;
        matches!(
            (self, next),
            (Waiting, Queued | Skipped | Cancelled)
                | (Queued, Running | Errored | Cancelled)
                | (Running, Running | Passed | Failed | Errored | Cancelled)
        )
    }

    /// The statuses from which a task may move to `next`: what a compare-and-set accepts.
    pub fn sources_of(next: Self) -> Vec<Self> {
        Self::ALL
            .into_iter()
            .filter(|s| s.may_become(next))
            .collect()
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a task's run ended, as the worker saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum TaskOutcome {
    /// Every command exited 0.
    Passed,
    /// A command exited with this non-zero status.
    Failed { exit_code: i64 },
    /// The task was still running when its timeout ran out, and was killed.
    TimedOut { after_secs: u64 },
    /// Kiln could not run the task; the reason is for people. Another attempt may do
    /// better (another worker, the engine back).
    Errored { reason: String },
    /// The task cannot run as written on any worker: its image does not exist, or the
    /// registry refuses Kiln. The reason is for people; another attempt would fail alike.
    Unrunnable { reason: String },
}

impl TaskOutcome {
    /// The final task status this outcome leads to.
    pub fn status(&self) -> TaskStatus {
        match self {
            Self::Passed => TaskStatus::Passed,
            Self::Failed { .. } | Self::TimedOut { .. } | Self::Unrunnable { .. } => {
                TaskStatus::Failed
            }
            Self::Errored { .. } => TaskStatus::Errored,
        }
    }

    /// The exit code, when a command's exit decided the outcome.
    pub fn exit_code(&self) -> Option<i64> {
        match self {
            Self::Passed => Some(0),
            Self::Failed { exit_code } => Some(*exit_code),
            _ => None,
        }
    }
}

impl fmt::Display for TaskOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Passed => f.write_str("passed"),
            Self::Failed { exit_code } => write!(f, "failed with exit code {exit_code}"),
            Self::TimedOut { after_secs } => write!(f, "timed out after {after_secs}s"),
            Self::Errored { reason } => write!(f, "errored: {reason}"),
            Self::Unrunnable { reason } => write!(f, "cannot run: {reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_statuses_never_move() {
        for from in TaskStatus::ALL.into_iter().filter(|s| s.is_final()) {
            for to in TaskStatus::ALL {
                assert!(!from.may_become(to), "{from} -> {to}");
            }
        }
        for from in BuildStatus::ALL.into_iter().filter(|s| s.is_final()) {
            for to in BuildStatus::ALL {
                assert!(!from.may_become(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn task_transitions() {
        use TaskStatus::*;
        let check = |from: TaskStatus, to: TaskStatus, expect: bool| {
            assert_eq!(from.may_become(to), expect, "{from} -> {to}");
        };
        check(Waiting, Queued, true);
        check(Waiting, Running, false);
        check(Queued, Running, true);
        check(Queued, Passed, false);
        check(Running, Running, true);
        check(Running, Failed, true);
        check(Running, Queued, false);
        assert_eq!(TaskStatus::sources_of(Running), vec![Queued, Running]);
    }

    #[test]
    fn status_names_round_trip() {
        for s in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(s.as_str()), Some(s));
        }
        for s in BuildStatus::ALL {
            assert_eq!(BuildStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(TaskStatus::parse("nope"), None);
    }

    #[test]
    fn build_status_from_tasks() {
        use TaskStatus::*;
        let check = |tasks: &[TaskStatus], expect: BuildStatus| {
            assert_eq!(
                BuildStatus::from_finished_tasks(tasks.iter().copied()),
                expect,
                "{tasks:?}"
            );
        };
        check(&[Passed, Passed], BuildStatus::Passed);
        check(&[], BuildStatus::Passed);
        check(&[Passed, Failed, Skipped], BuildStatus::Failed);
        check(&[Errored, Failed], BuildStatus::Failed);
        check(&[Cancelled, Errored], BuildStatus::Errored);
        check(&[Cancelled, Passed], BuildStatus::Cancelled);
    }

    #[test]
    fn outcomes_map_to_statuses() {
        assert_eq!(
            TaskOutcome::Failed { exit_code: 3 }.status(),
            TaskStatus::Failed
        );
        assert_eq!(
            TaskOutcome::TimedOut { after_secs: 1 }.status(),
            TaskStatus::Failed
        );
        assert_eq!(TaskOutcome::Failed { exit_code: 3 }.exit_code(), Some(3));
        assert_eq!(
            TaskOutcome::Errored { reason: "x".into() }.to_string(),
            "errored: x"
        );
    }
}

//! A task's record: the hash under [`Keys::task`](crate::keys::Keys::task).
//!
//! The bot writes it when the build is planned ([`planned`]); a worker's claim and end
//! ([`claimed`], [`finished`]), a dead-lettered job ([`ended`]) and a task taken from an
//! earlier build ([`reused`]) set their fields with a compare-and-set of its status; a
//! retry clears the fields of [`TaskField::cleared_on_retry`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{Fields, Reader, RecordError, to_json};
use crate::build::{BuildId, TaskOutcome, TaskStatus};
use crate::wire::{Artifact, ImageUse};

/// A field of a task's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskField {
    Status,
    /// Which attempt the record is of; the compare-and-sets of a job check it.
    Attempt,
    Worker,
    /// A token of the claim that gave the attempt to its worker: a worker started again
    /// under the same name is another claimant, and the compare-and-sets of a takeover, a
    /// run's end and its standing check the token, not only the name.
    Claim,
    StartedMs,
    FinishedMs,
    /// The outcome in words, e.g. `failed with exit code 3`.
    Outcome,
    /// The outcome as data (JSON).
    OutcomeJson,
    ExitCode,
    /// What the task kept (JSON).
    ArtifactsJson,
    /// The in-tree images it ran in (JSON).
    ImagesJson,
    /// The earlier build whose pass this task took.
    ReusedFrom,
    /// Where its log went once its build ended (JSON): Redis keeps the stream only for a
    /// while.
    LogArchiveJson,
}

impl TaskField {
    /// Every field.
    pub const ALL: [Self; 13] = [
        Self::Status,
        Self::Attempt,
        Self::Worker,
        Self::Claim,
        Self::StartedMs,
        Self::FinishedMs,
        Self::Outcome,
        Self::OutcomeJson,
        Self::ExitCode,
        Self::ArtifactsJson,
        Self::ImagesJson,
        Self::ReusedFrom,
        Self::LogArchiveJson,
    ];

    /// The field's name in the hash.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Attempt => "attempt",
            Self::Worker => "worker",
            Self::Claim => "claim",
            Self::StartedMs => "started_ms",
            Self::FinishedMs => "finished_ms",
            Self::Outcome => "outcome",
            Self::OutcomeJson => "outcome_json",
            Self::ExitCode => "exit_code",
            Self::ArtifactsJson => "artifacts_json",
            Self::ImagesJson => "images_json",
            Self::ReusedFrom => "reused_from",
            Self::LogArchiveJson => "log_archive_json",
        }
    }

    /// Whether the field belongs to one attempt (who ran it, when, how it ended, what it
    /// left), so that a retry clears it. The status and attempt are moved by the retry
    /// itself; a reused task has passed, and a passed task is never retried.
    pub const fn cleared_on_retry(self) -> bool {
        match self {
            Self::Status | Self::Attempt | Self::ReusedFrom => false,
            Self::Worker
            | Self::Claim
            | Self::StartedMs
            | Self::FinishedMs
            | Self::Outcome
            | Self::OutcomeJson
            | Self::ExitCode
            | Self::ArtifactsJson
            | Self::ImagesJson
            | Self::LogArchiveJson => true,
        }
    }

    /// The names of the fields a retry clears.
    pub fn cleared_on_retry_names() -> Vec<&'static str> {
        Self::ALL
            .into_iter()
            .filter(|f| f.cleared_on_retry())
            .map(Self::name)
            .collect()
    }
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    /// Its name is its key's, not a field.
    pub name: String,
    pub status: TaskStatus,
    pub attempt: u32,
    /// Who runs or ran the attempt; absent until a worker claims it.
    pub worker: Option<String>,
    /// The token of that worker's claim ([`TaskField::Claim`]); absent until a worker
    /// claims the attempt (and in records claimed before the field existed).
    pub claim: Option<String>,
    /// Absent until a worker claims the attempt.
    pub started_ms: Option<u64>,
    /// Absent until the attempt ends.
    pub finished_ms: Option<u64>,
    /// Absent unless a command's exit decided the outcome.
    pub exit_code: Option<i64>,
    /// The outcome in words, e.g. `failed with exit code 3`; absent until the attempt ends.
    pub outcome: Option<String>,
    /// How its attempt ended; absent until it has.
    pub ended: Option<TaskOutcome>,
    /// What the task kept for the tasks that need it; absent (none) until the attempt ends.
    pub artifacts: Vec<Artifact>,
    /// The in-tree images it ran in; absent (none) until the attempt ends.
    pub images: Vec<ImageUse>,
    /// The earlier build whose pass this task took; absent when it ran here.
    pub reused_from: Option<BuildId>,
    /// Where its log was archived; absent until its build ended and the log was archived.
    pub log_archive: Option<ArchivedLog>,
}

/// A task's log as archived: a blob of the installation's store (gzip of one JSON object
/// per line), by its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedLog {
    /// `sha256:<hex>` of the blob.
    pub digest: String,
    /// The blob's size, compressed.
    pub size: u64,
    /// How many lines it holds.
    pub lines: u64,
}

impl TaskRecord {
    /// The record of a task that has none stored yet (an earlier build that never had it,
    /// or one read before its plan is stored): waiting, at its first attempt.
    pub fn not_stored(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            status: TaskStatus::Waiting,
            attempt: 1,
            worker: None,
            claim: None,
            started_ms: None,
            finished_ms: None,
            exit_code: None,
            outcome: None,
            ended: None,
            artifacts: Vec::new(),
            images: Vec::new(),
            reused_from: None,
            log_archive: None,
        }
    }

    /// The fields the record has.
    pub fn encode(&self) -> Fields {
        let mut fields = vec![
            (TaskField::Status.name(), self.status.as_str().to_owned()),
            (TaskField::Attempt.name(), self.attempt.to_string()),
        ];
        let mut text = |field: TaskField, value: Option<String>| {
            fields.extend(value.map(|v| (field.name(), v)));
        };
        text(TaskField::Worker, self.worker.clone());
        text(TaskField::Claim, self.claim.clone());
        text(
            TaskField::StartedMs,
            self.started_ms.map(|ms| ms.to_string()),
        );
        text(
            TaskField::FinishedMs,
            self.finished_ms.map(|ms| ms.to_string()),
        );
        text(TaskField::ExitCode, self.exit_code.map(|c| c.to_string()));
        text(TaskField::Outcome, self.outcome.clone());
        text(TaskField::OutcomeJson, self.ended.as_ref().map(to_json));
        text(
            TaskField::ReusedFrom,
            self.reused_from.map(|b| b.0.to_string()),
        );
        text(
            TaskField::LogArchiveJson,
            self.log_archive.as_ref().map(to_json),
        );
        fields.extend(kept(&self.artifacts, &self.images));
        fields
    }

    /// Task `name`'s record from its hash's fields; `None` when the hash has none at all
    /// (there is no such task).
    pub fn decode(
        name: &str,
        fields: &HashMap<String, String>,
    ) -> Result<Option<Self>, RecordError> {
        if fields.is_empty() {
            return Ok(None);
        }
        let r = Reader { fields };
        let field = TaskField::Status.name();
        let status = r.get(field).ok_or(RecordError::Missing { field })?;
        let status = TaskStatus::parse(status).ok_or_else(|| RecordError::Malformed {
            field,
            value: status.to_owned(),
            reason: "not a task status".into(),
        })?;
        Ok(Some(Self {
            name: name.to_owned(),
            status,
            // Planning writes the status, then the attempt: between the two it is the first.
            attempt: r.parsed(TaskField::Attempt.name())?.unwrap_or(1),
            worker: r.get(TaskField::Worker.name()).map(str::to_owned),
            claim: r.get(TaskField::Claim.name()).map(str::to_owned),
            started_ms: r.parsed(TaskField::StartedMs.name())?,
            finished_ms: r.parsed(TaskField::FinishedMs.name())?,
            exit_code: r.parsed(TaskField::ExitCode.name())?,
            outcome: r.get(TaskField::Outcome.name()).map(str::to_owned),
            ended: r.json(TaskField::OutcomeJson.name())?,
            artifacts: r.json(TaskField::ArtifactsJson.name())?.unwrap_or_default(),
            images: r.json(TaskField::ImagesJson.name())?.unwrap_or_default(),
            reused_from: r.parsed(TaskField::ReusedFrom.name())?.map(BuildId),
            log_archive: r.json(TaskField::LogArchiveJson.name())?,
        }))
    }
}

/// What planning writes of a task, each field only if it is not there yet: its first
/// status and attempt.
pub fn planned(status: TaskStatus) -> Fields {
    vec![
        (TaskField::Status.name(), status.as_str().to_owned()),
        (TaskField::Attempt.name(), 1.to_string()),
    ]
}

/// What a worker's claim of an attempt sets with the status `running`: who, the claim's
/// own token, and when.
pub fn claimed(worker: &str, claim: &str, started_ms: u64) -> Fields {
    vec![
        (TaskField::Worker.name(), worker.to_owned()),
        (TaskField::Claim.name(), claim.to_owned()),
        (TaskField::StartedMs.name(), started_ms.to_string()),
    ]
}

/// What an attempt's end sets with its final status, when it left nothing (a dead-lettered
/// job): how it ended and when.
pub fn ended(outcome: &TaskOutcome, finished_ms: u64) -> Fields {
    let mut fields = outcome_fields(outcome, outcome.to_string());
    fields.push((TaskField::FinishedMs.name(), finished_ms.to_string()));
    fields
}

/// What a worker's record of an attempt's end sets with its final status: what it kept,
/// the images it ran in, how it ended and when.
pub fn finished(
    outcome: &TaskOutcome,
    artifacts: &[Artifact],
    images: &[ImageUse],
    finished_ms: u64,
) -> Fields {
    let mut fields = kept(artifacts, images);
    fields.extend(ended(outcome, finished_ms));
    fields
}

/// What archiving the task's log sets.
pub fn archived(log: &ArchivedLog) -> Fields {
    vec![(TaskField::LogArchiveJson.name(), to_json(log))]
}

/// What taking an earlier build's pass of the task sets with the status `passed`.
pub fn reused(from: BuildId, artifacts: &[Artifact], images: &[ImageUse]) -> Fields {
    let mut fields = outcome_fields(&TaskOutcome::Passed, format!("passed in build #{from}"));
    fields.extend(kept(artifacts, images));
    fields.push((TaskField::ReusedFrom.name(), from.0.to_string()));
    fields
}

/// How an attempt ended: in words, as data, and its exit code if a command's exit decided.
fn outcome_fields(outcome: &TaskOutcome, words: String) -> Fields {
    let mut fields = vec![
        (TaskField::Outcome.name(), words),
        (TaskField::OutcomeJson.name(), to_json(outcome)),
    ];
    fields.extend(
        outcome
            .exit_code()
            .map(|code| (TaskField::ExitCode.name(), code.to_string())),
    );
    fields
}

fn kept(artifacts: &[Artifact], images: &[ImageUse]) -> Fields {
    vec![
        (TaskField::ArtifactsJson.name(), to_json(&artifacts)),
        (TaskField::ImagesJson.name(), to_json(&images)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(fields: Fields) -> HashMap<String, String> {
        fields.into_iter().map(|(f, v)| (f.to_owned(), v)).collect()
    }

    fn artifacts() -> Vec<Artifact> {
        vec![Artifact {
            task: "unit.1".into(),
            path: "dist/app `x`".into(),
            digest: "sha256:ab".into(),
            size: 3,
        }]
    }

    fn finished_record() -> TaskRecord {
        let outcome = TaskOutcome::Failed { exit_code: 3 };
        TaskRecord {
            name: "unit.1".into(),
            status: TaskStatus::Failed,
            attempt: 2,
            worker: Some("worker-`1`".into()),
            claim: Some("c0ffee".into()),
            started_ms: Some(1_700_000_000_000),
            finished_ms: Some(1_700_000_001_000),
            exit_code: outcome.exit_code(),
            outcome: Some(outcome.to_string()),
            ended: Some(outcome),
            artifacts: artifacts(),
            images: Vec::new(),
            reused_from: None,
            log_archive: Some(ArchivedLog {
                digest: "sha256:cd".into(),
                size: 120,
                lines: 7,
            }),
        }
    }

    #[test]
    fn a_record_round_trips() {
        let reused = TaskRecord {
            status: TaskStatus::Passed,
            reused_from: Some(BuildId(4)),
            ended: Some(TaskOutcome::Passed),
            ..TaskRecord::not_stored("lint")
        };
        let errored = TaskRecord {
            status: TaskStatus::Errored,
            ended: Some(TaskOutcome::Errored {
                reason: "no \"docker\"\n<script>".into(),
            }),
            ..TaskRecord::not_stored("deploy")
        };
        for record in [
            finished_record(),
            TaskRecord::not_stored("build"),
            reused,
            errored,
        ] {
            let decoded = TaskRecord::decode(&record.name, &hash(record.encode()));
            assert_eq!(decoded, Ok(Some(record)));
        }
    }

    proptest::proptest! {
        /// Whatever text a record holds (backticks, quotes, newlines, `@everyone`), it
        /// reads back as it was written.
        #[test]
        fn any_text_round_trips(
            worker in ".*",
            outcome in proptest::option::of(".*"),
            reason in ".*",
            path in ".*",
            code in proptest::num::i64::ANY,
            attempt in 1u32..,
        ) {
            let record = TaskRecord {
                worker: Some(worker),
                attempt,
                outcome,
                exit_code: Some(code),
                ended: Some(TaskOutcome::Errored { reason }),
                artifacts: vec![Artifact { path, ..artifacts()[0].clone() }],
                ..finished_record()
            };
            let decoded = TaskRecord::decode(&record.name, &hash(record.encode()));
            proptest::prop_assert_eq!(decoded, Ok(Some(record)));
        }
    }

    #[test]
    fn what_the_writes_set_reads_back() {
        let outcome = TaskOutcome::Failed { exit_code: 3 };
        let mut h = hash(planned(TaskStatus::Queued));
        h.extend(hash(claimed("worker-`1`", "c0ffee", 1_700_000_000_000)));
        h.extend(hash(finished(
            &outcome,
            &artifacts(),
            &[],
            1_700_000_001_000,
        )));
        let log = finished_record().log_archive.expect("archived");
        h.extend(hash(archived(&log)));
        h.insert("status".into(), "failed".into());
        h.insert("attempt".into(), "2".into());
        assert_eq!(
            TaskRecord::decode("unit.1", &h),
            Ok(Some(finished_record()))
        );
        let mut h = hash(reused(BuildId(4), &[], &[]));
        h.insert("status".into(), "passed".into());
        let r = TaskRecord::decode("t", &h)
            .expect("readable")
            .expect("a task");
        assert_eq!(
            (r.outcome.as_deref(), r.exit_code, r.ended, r.reused_from),
            (
                Some("passed in build #4"),
                Some(0),
                Some(TaskOutcome::Passed),
                Some(BuildId(4))
            )
        );
        let dead = TaskOutcome::Errored {
            reason: "gone".into(),
        };
        assert_eq!(
            ended(&dead, 5),
            vec![
                ("outcome", "errored: gone".to_owned()),
                ("outcome_json", to_json(&dead)),
                ("finished_ms", "5".to_owned()),
            ]
        );
    }

    #[test]
    fn a_missing_hash_is_no_task_and_a_missing_attempt_the_first() {
        assert_eq!(TaskRecord::decode("t", &HashMap::new()), Ok(None));
        let h = hash(vec![("status", "queued".into())]);
        let r = TaskRecord::decode("t", &h)
            .expect("readable")
            .expect("a task");
        assert_eq!((r.status, r.attempt), (TaskStatus::Queued, 1));
    }

    #[test]
    fn a_retry_clears_the_fields_of_one_attempt() {
        assert_eq!(
            TaskField::cleared_on_retry_names(),
            [
                "worker",
                "claim",
                "started_ms",
                "finished_ms",
                "outcome",
                "outcome_json",
                "exit_code",
                "artifacts_json",
                "images_json",
                "log_archive_json"
            ]
        );
        // Whatever an attempt's end writes, a retry clears.
        let outcome = TaskOutcome::Failed { exit_code: 1 };
        let written = claimed("w", "c", 1)
            .into_iter()
            .chain(finished(&outcome, &[], &[], 2));
        for (field, _) in written {
            assert!(
                TaskField::cleared_on_retry_names().contains(&field),
                "{field}"
            );
        }
        let mut names: Vec<&str> = TaskField::ALL.iter().map(|f| f.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TaskField::ALL.len());
    }

    /// Each corrupt or missing field is an error naming it and its value, never a default.
    #[test]
    fn a_field_that_does_not_decode_is_an_error() {
        let check = |field: &'static str, value: Option<&str>, reason: &str| {
            let mut h = hash(finished_record().encode());
            match value {
                Some(value) => h.insert(field.to_owned(), value.to_owned()),
                None => h.remove(field),
            };
            match (TaskRecord::decode("unit.1", &h), value) {
                (
                    Err(RecordError::Malformed {
                        field: f,
                        value: v,
                        reason: r,
                    }),
                    Some(value),
                ) => {
                    assert_eq!((f, v.as_str()), (field, value));
                    assert!(r.contains(reason), "{field}: {r}");
                }
                (Err(RecordError::Missing { field: f }), None) => assert_eq!(f, field),
                (got, _) => panic!("{field} = {value:?} gave {got:?}"),
            }
        };
        check("status", Some("done"), "not a task status");
        check("status", None, "");
        check("attempt", Some("two"), "invalid digit");
        check("attempt", Some("-1"), "invalid digit");
        check("started_ms", Some("1.5"), "invalid digit");
        check("finished_ms", Some(""), "empty");
        check("exit_code", Some("x"), "invalid digit");
        check(
            "outcome_json",
            Some("{\"result\":\"exploded\"}"),
            "unknown variant",
        );
        check("artifacts_json", Some("{}"), "invalid type");
        check("artifacts_json", Some(""), "EOF");
        check("images_json", Some("[{\"tag\": 1}]"), "");
        check("reused_from", Some("#4"), "invalid digit");
    }
}

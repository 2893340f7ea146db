//! A build's record: the hash under [`Keys::build`](crate::keys::Keys::build).
//!
//! The record is written whole when the build is accepted ([`BuildRecord::encode`]); its
//! plan and the count of tasks not yet accounted for are added once when it is planned
//! ([`planned`]); its status moves by compare-and-set with [`ended`]'s fields at its end.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::{Fields, Reader, RecordError, decode_json, required, to_json};
use crate::build::{BuildId, BuildStatus};
use crate::plan::Plan;
use crate::priority::Priority;
use crate::trigger::{RequestRef, TriggerKind};
use crate::wire::{BuildRef, BuildRequested, NewBuild};

/// A field of a build's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuildField {
    Repo,
    Branch,
    Commit,
    CloneUrl,
    Author,
    Subject,
    /// What started it (JSON).
    Kind,
    /// The files its commits changed, or `null` when the forge did not say (JSON).
    ChangedPaths,
    Status,
    Error,
    Reuse,
    /// Why it was started, for people, when its trigger has more to say.
    Note,
    /// The variables it was asked for with (JSON).
    Vars,
    /// The pull or merge request it builds (JSON).
    Request,
    /// The task or step of `reuse` it runs again.
    Rerun,
    /// Its priority, when not normal.
    Priority,
    CreatedMs,
    FinishedMs,
    /// The build's tasks not yet accounted for: there once it is planned. The settle script
    /// counts it down.
    Remaining,
    /// The plan (JSON); never changes once stored, so it is read apart and kept in memory.
    Plan,
}

impl BuildField {
    /// Every field.
    pub const ALL: [Self; 20] = [
        Self::Repo,
        Self::Branch,
        Self::Commit,
        Self::CloneUrl,
        Self::Author,
        Self::Subject,
        Self::Kind,
        Self::ChangedPaths,
        Self::Status,
        Self::Error,
        Self::Reuse,
        Self::Note,
        Self::Vars,
        Self::Request,
        Self::Rerun,
        Self::Priority,
        Self::CreatedMs,
        Self::FinishedMs,
        Self::Remaining,
        Self::Plan,
    ];

    /// The field's name in the hash.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Repo => "repo",
            Self::Branch => "branch",
            Self::Commit => "commit",
            Self::CloneUrl => "clone_url",
            Self::Author => "author",
            Self::Subject => "subject",
            Self::Kind => "kind",
            Self::ChangedPaths => "changed_paths",
            Self::Status => "status",
            Self::Error => "error",
            Self::Reuse => "reuse",
            Self::Note => "note",
            Self::Vars => "vars",
            Self::Request => "request",
            Self::Rerun => "rerun",
            Self::Priority => "priority",
            Self::CreatedMs => "created_ms",
            Self::FinishedMs => "finished_ms",
            Self::Remaining => "remaining",
            Self::Plan => "plan",
        }
    }

    /// The fields [`BuildRecord::decode`] reads: all but the plan, which is read apart.
    pub fn read() -> impl Iterator<Item = &'static str> {
        Self::ALL
            .into_iter()
            .filter(|f| *f != Self::Plan)
            .map(Self::name)
    }
}

/// A build as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRecord {
    /// Its id is its key's, not a field.
    pub build: BuildRef,
    pub clone_url: String,
    pub author: String,
    pub subject: String,
    pub kind: TriggerKind,
    pub changed_paths: Option<Vec<String>>,
    pub status: BuildStatus,
    /// Why it ended as it did, when there is more to say than its tasks' statuses. Absent
    /// (or empty) until then.
    pub error: Option<String>,
    /// Absent until the build is planned; read apart (see [`BuildField::Plan`]).
    pub plan: Option<Arc<Plan>>,
    /// The earlier build whose passed tasks this one takes as they are. Absent (or empty)
    /// when there is none.
    pub reuse: Option<BuildId>,
    /// Why it was started, when its trigger has more to say (`found by reconciliation`).
    pub note: Option<String>,
    /// The variables it was asked for with (`build … KEY=VALUE`).
    pub vars: BTreeMap<String, String>,
    /// The pull or merge request it builds the head of.
    pub request: Option<RequestRef>,
    /// The task or step of `reuse` it runs again, with what needs it.
    pub rerun: Option<String>,
    /// Which of its platforms' job queues its tasks go to.
    pub priority: Priority,
    /// When it was accepted, in ms since the Unix epoch.
    pub created_ms: u64,
    /// When it ended; absent until then.
    pub finished_ms: Option<u64>,
}

impl BuildRecord {
    /// Build `id` just accepted, queued, as `new` asked for it.
    pub fn queued(id: BuildId, new: NewBuild, created_ms: u64) -> Self {
        let request = new.numbered(id);
        Self {
            build: request.build,
            clone_url: request.clone_url,
            author: request.author,
            subject: request.subject,
            kind: request.kind,
            changed_paths: request.changed_paths,
            status: BuildStatus::Queued,
            error: None,
            plan: None,
            reuse: request.reuse,
            note: request.note,
            vars: request.vars,
            request: request.request,
            rerun: request.rerun,
            priority: request.priority,
            created_ms,
            finished_ms: None,
        }
    }

    /// What was asked for: the build but its number and what became of it.
    pub fn asked(&self) -> NewBuild {
        NewBuild {
            repo: self.build.repo.clone(),
            branch: self.build.branch.clone(),
            commit: self.build.commit.clone(),
            clone_url: self.clone_url.clone(),
            author: self.author.clone(),
            subject: self.subject.clone(),
            kind: self.kind,
            changed_paths: self.changed_paths.clone(),
            reuse: self.reuse,
            note: self.note.clone(),
            vars: self.vars.clone(),
            request: self.request.clone(),
            rerun: self.rerun.clone(),
            priority: self.priority,
        }
    }

    /// The request that asked for this build, as it is published.
    pub fn request(&self) -> BuildRequested {
        self.asked().numbered(self.build.id)
    }

    /// The record's fields, but its plan (see [`planned`]), and only those it has.
    pub fn encode(&self) -> Fields {
        let mut fields = asked_fields(&self.asked(), self.status, self.created_ms);
        fields.extend(ended_fields(self.finished_ms, self.error.clone()));
        fields
    }

    /// Build `id`'s record from its hash's fields (those of [`BuildField::read`]) and its
    /// plan, read apart. `None` when the hash has no status: there is no such build (a
    /// deleted build's key may still get a late plan).
    pub fn decode(
        id: BuildId,
        fields: &HashMap<String, String>,
        plan: Option<Arc<Plan>>,
    ) -> Result<Option<Self>, RecordError> {
        let r = Reader { fields };
        let Some(status) = r.get(BuildField::Status.name()) else {
            return Ok(None);
        };
        let status = BuildStatus::parse(status).ok_or_else(|| RecordError::Malformed {
            field: BuildField::Status.name(),
            value: status.to_owned(),
            reason: "not a build status".into(),
        })?;
        let reuse = match r.get(BuildField::Reuse.name()) {
            Some("") => None,
            _ => r.parsed(BuildField::Reuse.name())?.map(BuildId),
        };
        Ok(Some(Self {
            build: BuildRef {
                id,
                repo: r.text(BuildField::Repo.name())?.into(),
                branch: r.text(BuildField::Branch.name())?.into(),
                commit: r.text(BuildField::Commit.name())?.into(),
            },
            clone_url: r.text(BuildField::CloneUrl.name())?,
            author: r.text(BuildField::Author.name())?,
            subject: r.text(BuildField::Subject.name())?,
            kind: required(BuildField::Kind.name(), r.json(BuildField::Kind.name())?)?,
            changed_paths: required(
                BuildField::ChangedPaths.name(),
                r.json(BuildField::ChangedPaths.name())?,
            )?,
            status,
            error: r
                .get(BuildField::Error.name())
                .filter(|e| !e.is_empty())
                .map(str::to_owned),
            plan,
            reuse,
            note: r
                .get(BuildField::Note.name())
                .filter(|n| !n.is_empty())
                .map(str::to_owned),
            vars: r.json(BuildField::Vars.name())?.unwrap_or_default(),
            request: r.json(BuildField::Request.name())?,
            rerun: r
                .get(BuildField::Rerun.name())
                .filter(|n| !n.is_empty())
                .map(str::to_owned),
            priority: match r.get(BuildField::Priority.name()) {
                None | Some("") => Priority::Normal,
                Some(word) => Priority::parse(word).ok_or_else(|| RecordError::Malformed {
                    field: BuildField::Priority.name(),
                    value: word.to_owned(),
                    reason: "not a priority".into(),
                })?,
            },
            created_ms: required(
                BuildField::CreatedMs.name(),
                r.parsed(BuildField::CreatedMs.name())?,
            )?,
            finished_ms: r.parsed(BuildField::FinishedMs.name())?,
        }))
    }

    /// Whether a build's hash (as [`BuildRecord::decode`] reads it) says it has a plan.
    pub fn has_plan(fields: &HashMap<String, String>) -> bool {
        fields.contains_key(BuildField::Remaining.name())
    }
}

/// What planning a build adds to its record, each field only if it is not there yet: its
/// plan and how many of its tasks are to be accounted for.
pub fn planned(plan: &Plan) -> Fields {
    // The tasks it holds (run by hand) are accounted for from the start.
    let remaining = plan.tasks.len() - plan.held().len();
    vec![
        (BuildField::Plan.name(), to_json(plan)),
        (BuildField::Remaining.name(), remaining.to_string()),
    ]
}

/// What a build just accepted stores, queued, before the script that stores it numbers it.
pub fn queued(new: &NewBuild, created_ms: u64) -> Fields {
    asked_fields(new, BuildStatus::Queued, created_ms)
}

/// The fields of what was asked for, with the build's status and when it was accepted.
fn asked_fields(new: &NewBuild, status: BuildStatus, created_ms: u64) -> Fields {
    let mut fields = vec![
        (BuildField::Repo.name(), new.repo.to_string()),
        (BuildField::Branch.name(), new.branch.to_string()),
        (BuildField::Commit.name(), new.commit.to_string()),
        (BuildField::CloneUrl.name(), new.clone_url.clone()),
        (BuildField::Author.name(), new.author.clone()),
        (BuildField::Subject.name(), new.subject.clone()),
        (BuildField::Status.name(), status.as_str().to_owned()),
        (BuildField::CreatedMs.name(), created_ms.to_string()),
        (BuildField::Kind.name(), to_json(&new.kind)),
        (BuildField::ChangedPaths.name(), to_json(&new.changed_paths)),
    ];
    if let Some(reuse) = new.reuse {
        fields.push((BuildField::Reuse.name(), reuse.0.to_string()));
    }
    if let Some(note) = &new.note {
        fields.push((BuildField::Note.name(), note.clone()));
    }
    if !new.vars.is_empty() {
        fields.push((BuildField::Vars.name(), to_json(&new.vars)));
    }
    if let Some(request) = &new.request {
        fields.push((BuildField::Request.name(), to_json(request)));
    }
    if let Some(rerun) = &new.rerun {
        fields.push((BuildField::Rerun.name(), rerun.clone()));
    }
    if !new.priority.is_normal() {
        let priority = new.priority.as_str().to_owned();
        fields.push((BuildField::Priority.name(), priority));
    }
    fields
}

/// A stored plan.
pub fn decode_plan(value: &str) -> Result<Plan, RecordError> {
    decode_json(BuildField::Plan.name(), value)
}

/// A stored `created_ms`.
pub fn decode_created_ms(value: &str) -> Result<u64, RecordError> {
    let fields = HashMap::from([(BuildField::CreatedMs.name().to_owned(), value.to_owned())]);
    created_ms_of(&fields)
}

/// The `created_ms` of a build's hash, which every build has.
pub fn created_ms_of(fields: &HashMap<String, String>) -> Result<u64, RecordError> {
    let r = Reader { fields };
    required(
        BuildField::CreatedMs.name(),
        r.parsed(BuildField::CreatedMs.name())?,
    )
}

/// What a build's end sets with its final status: when, and why if there is more to say.
pub fn ended(finished_ms: u64, error: Option<String>) -> Fields {
    ended_fields(Some(finished_ms), error)
}

fn ended_fields(finished_ms: Option<u64>, error: Option<String>) -> Fields {
    let mut fields = Vec::new();
    fields.extend(finished_ms.map(|ms| (BuildField::FinishedMs.name(), ms.to_string())));
    fields.extend(error.map(|e| (BuildField::Error.name(), e)));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> BuildRecord {
        BuildRecord {
            build: BuildRef {
                id: BuildId(7),
                repo: "acme/api".into(),
                branch: "feature/`x`".into(),
                commit: "0123456789abcdef".into(),
            },
            clone_url: "https://example.test/acme/api.git".into(),
            author: "Ada <@everyone>".into(),
            subject: "a subject, with \"quotes\" and ünïcode".into(),
            kind: TriggerKind::MergeRequest,
            changed_paths: Some(vec!["src/lib.rs".into(), "a b/c".into()]),
            status: BuildStatus::Failed,
            error: Some("cancelled by alice".into()),
            plan: None,
            reuse: Some(BuildId(3)),
            note: Some("found by reconciliation".into()),
            vars: BTreeMap::from([("DEPLOY_TO".into(), "eu \"west\"".into())]),
            request: Some(RequestRef {
                number: 7,
                source_branch: "feature/`x`".into(),
                target_branch: "master".into(),
                from_fork: true,
            }),
            rerun: Some("deploy".into()),
            priority: Priority::High,
            created_ms: 1_700_000_000_123,
            finished_ms: Some(1_700_000_009_000),
        }
    }

    fn hash(fields: Fields) -> HashMap<String, String> {
        fields.into_iter().map(|(f, v)| (f.to_owned(), v)).collect()
    }

    #[test]
    fn a_record_round_trips() {
        let full = record();
        let fresh = BuildRecord::queued(BuildId(7), full.asked(), 5);
        assert_eq!(hash(queued(&full.asked(), 5)), hash(fresh.encode()));
        let unchanged = BuildRecord {
            changed_paths: None,
            reuse: None,
            note: None,
            vars: BTreeMap::new(),
            request: None,
            rerun: None,
            priority: Priority::Normal,
            ..fresh.clone()
        };
        for record in [full, fresh, unchanged] {
            let decoded = BuildRecord::decode(BuildId(7), &hash(record.encode()), None);
            assert_eq!(decoded, Ok(Some(record)));
        }
    }

    proptest::proptest! {
        /// Whatever text a record holds (backticks, quotes, newlines, `@everyone`), it
        /// reads back as it was written.
        #[test]
        fn any_text_round_trips(
            branch in ".*",
            subject in ".*",
            author in ".*",
            paths in proptest::option::of(proptest::collection::vec(".*", 0..4)),
            error in proptest::option::of(".+"),
            created_ms in proptest::num::u64::ANY,
        ) {
            let mut record = BuildRecord {
                subject,
                author,
                changed_paths: paths,
                error,
                created_ms,
                ..record()
            };
            record.build.branch = branch.into();
            let decoded = BuildRecord::decode(BuildId(7), &hash(record.encode()), None);
            proptest::prop_assert_eq!(decoded, Ok(Some(record)));
        }
    }

    #[test]
    fn the_fields_read_are_all_but_the_plan_and_names_are_unique() {
        let read: Vec<&str> = BuildField::read().collect();
        assert_eq!(read.len(), BuildField::ALL.len() - 1);
        assert!(!read.contains(&"plan"));
        let mut names: Vec<&str> = BuildField::ALL.iter().map(|f| f.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), BuildField::ALL.len());
    }

    #[test]
    fn a_hash_without_status_is_no_build() {
        let late_plan = hash(planned(&Plan {
            tasks: Vec::new(),
            merged_with: None,
        }));
        assert_eq!(BuildRecord::decode(BuildId(1), &late_plan, None), Ok(None));
    }

    #[test]
    fn absent_or_empty_optional_fields_are_none() {
        let mut h = hash(queued(&record().asked(), 5));
        h.insert("reuse".into(), String::new());
        h.insert("error".into(), String::new());
        let decoded = BuildRecord::decode(BuildId(7), &h, None)
            .expect("readable")
            .expect("a build");
        assert_eq!((decoded.reuse, decoded.error), (None, None));
    }

    /// Each corrupt or missing field is an error naming it and its value, never a default.
    #[test]
    fn a_field_that_does_not_decode_is_an_error() {
        let check = |field: &'static str, value: Option<&str>, reason: &str| {
            let mut h = hash(record().encode());
            match value {
                Some(value) => h.insert(field.to_owned(), value.to_owned()),
                None => h.remove(field),
            };
            match (BuildRecord::decode(BuildId(7), &h, None), value) {
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
        check("status", Some("finished"), "not a build status");
        check("kind", Some("\"pish\""), "unknown variant");
        check("kind", Some("push"), "expected value");
        check("kind", None, "");
        check("changed_paths", Some("[1]"), "invalid type");
        check("changed_paths", Some(""), "EOF");
        check("changed_paths", None, "");
        check("reuse", Some("three"), "invalid digit");
        check("created_ms", Some("-1"), "invalid digit");
        check("created_ms", None, "");
        check("finished_ms", Some("soon"), "invalid digit");
        for field in ["repo", "branch", "commit", "clone_url", "author", "subject"] {
            check(field, None, "");
        }
    }

    #[test]
    fn a_corrupt_plan_is_an_error() {
        assert_eq!(
            decode_plan(&to_json(&Plan {
                tasks: Vec::new(),
                merged_with: None,
            })),
            Ok(Plan {
                tasks: Vec::new(),
                merged_with: None,
            })
        );
        let error = decode_plan("{\"tasks\": 3}").expect_err("corrupt");
        assert!(
            matches!(&error, RecordError::Malformed { field: "plan", value, .. } if value == "{\"tasks\": 3}"),
            "{error}"
        );
        assert_eq!(decode_created_ms("12"), Ok(12));
        assert!(decode_created_ms("").is_err());
    }

    #[test]
    fn an_end_sets_when_and_why() {
        assert_eq!(
            ended(9, Some("cancelled by bob".into())),
            vec![
                ("finished_ms", "9".to_owned()),
                ("error", "cancelled by bob".to_owned())
            ]
        );
        assert_eq!(ended(9, None), vec![("finished_ms", "9".to_owned())]);
    }
}

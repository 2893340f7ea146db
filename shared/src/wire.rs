//! Wire types, version 1: the JSON messages Kiln's processes send each other over RabbitMQ.
//!
//! Every message is an object with `"v": 1` and a `"type"`. Unknown fields are ignored, so a
//! newer sender can add fields without breaking an older reader; a different `v` is refused,
//! because it means the meaning of the fields changed.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::build::{BuildId, BuildStatus, TaskOutcome, TaskStatus};
use crate::ident::{BranchName, CommitId, RepoName};
use crate::lease::LeaseId;
use crate::plan::{PlannedImage, PlannedService, PlannedTask};
use crate::platform::Platform;
use crate::priority::Priority;
use crate::routing::event_key;
use crate::spec::{Cache, Network, Pull, Runner};
use crate::trigger::{Comment, Push, RequestRef, TriggerKind};

/// The version of the wire format this crate reads and writes.
pub const WIRE_VERSION: u64 = 1;

/// The build a message is about: enough to route it and to name it to people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRef {
    pub id: BuildId,
    /// `owner/name`, as the forge spells it.
    pub repo: RepoName,
    pub branch: BranchName,
    /// The full commit id under test.
    pub commit: CommitId,
}

/// A build asked for (by a push, a command, a promotion, a branch gone), before it has a
/// number: the store numbers it as it records it ([`NewBuild::numbered`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBuild {
    /// The configured repository it builds.
    pub repo: RepoName,
    pub branch: BranchName,
    pub commit: CommitId,
    /// Where workers and the planner fetch the commit from.
    pub clone_url: String,
    /// The commit's author, as the forge names them.
    pub author: String,
    /// The commit's subject line.
    pub subject: String,
    /// What started the build.
    pub kind: TriggerKind,
    /// The files the build's commits changed, when the forge said (for `when: changes`).
    pub changed_paths: Option<Vec<String>>,
    /// An earlier build of the same commit whose passed tasks this one takes as they are.
    pub reuse: Option<BuildId>,
    /// Why it was started, for its card, when its trigger has more to say.
    pub note: Option<String>,
    /// Variables its tasks see, as asked for (`build … KEY=VALUE`); not secrets.
    pub vars: BTreeMap<String, String>,
    /// The pull or merge request it builds the head of.
    pub request: Option<RequestRef>,
    /// A task or step of `reuse` run again, with what needs it, though it passed or is run
    /// by hand; the rest is taken from `reuse` as it passed.
    pub rerun: Option<String>,
    /// Which of its platforms' job queues its tasks go to.
    pub priority: Priority,
}

impl NewBuild {
    /// The request of this build, numbered `id`.
    pub fn numbered(self, id: BuildId) -> BuildRequested {
        BuildRequested {
            build: BuildRef {
                id,
                repo: self.repo,
                branch: self.branch,
                commit: self.commit,
            },
            clone_url: self.clone_url,
            author: self.author,
            subject: self.subject,
            kind: self.kind,
            changed_paths: self.changed_paths,
            reuse: self.reuse,
            note: self.note,
            vars: self.vars,
            request: self.request,
            rerun: self.rerun,
            priority: self.priority,
        }
    }
}

/// A build was accepted (from a webhook or a command) and must be planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRequested {
    pub build: BuildRef,
    /// Where workers and the planner fetch the commit from.
    pub clone_url: String,
    /// The commit's author, as the forge names them.
    pub author: String,
    /// The commit's subject line.
    pub subject: String,
    /// What started the build.
    #[serde(default)]
    pub kind: TriggerKind,
    /// The files the build's commits changed, when the forge said (for `when: changes`).
    #[serde(default)]
    pub changed_paths: Option<Vec<String>>,
    /// An earlier build of the same commit whose passed tasks this one takes as they are,
    /// running only the others (`retry --failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse: Option<BuildId>,
    /// Why it was started, for its card, when its trigger has more to say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Variables its tasks see, as asked for (`build … KEY=VALUE`); not secrets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
    /// The pull or merge request it builds the head of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestRef>,
    /// A task or step of `reuse` run again, with what needs it, though it passed or is run
    /// by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun: Option<String>,
    /// Which of its platforms' job queues its tasks go to.
    #[serde(default, skip_serializing_if = "Priority::is_normal")]
    pub priority: Priority,
}

/// A verified push the bot could not record, Redis being unreachable: held in the bot's
/// queue of held pushes until Redis is back, then accepted as if it had just arrived (a
/// delivery seen before is still a duplicate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "push.held")]
pub struct PushHeld {
    /// The configured repository it is for.
    pub repo: RepoName,
    /// The forge that sent it (`github`, `gitlab`).
    pub forge: String,
    /// Its delivery id at that forge.
    pub delivery: String,
    pub push: Push,
}

/// A command given in a comment on a pull (merge) request, verified and claimed at the door:
/// published to the bot's comments queue, for whichever bot takes it to carry out and
/// answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "comment.requested")]
pub struct CommentRequested {
    /// The forge it was given on (`github`, `gitlab`).
    pub forge: String,
    /// The comment's delivery id at that forge: its answer is given once.
    pub delivery: String,
    pub comment: Comment,
}

/// One task for a worker: published to the jobs exchange with its platform as key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRequested {
    pub build: BuildRef,
    /// What started the build: a tag build's ref is a tag (`KILN_TAG`), not a branch.
    #[serde(default)]
    pub event: TriggerKind,
    /// The pull or merge request the build is of (`KILN_PR`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestRef>,
    pub clone_url: String,
    pub task: String,
    /// The step the task comes from.
    #[serde(default)]
    pub step: String,
    /// Counts from 1; a retried task gets a new attempt.
    pub attempt: u32,
    pub platform: Platform,
    #[serde(default)]
    pub runner: Runner,
    /// The container image (Docker runner), when it comes from elsewhere.
    #[serde(default)]
    pub image: Option<String>,
    /// The image to build from the checkout and run in (Docker runner).
    #[serde(default)]
    pub build_image: Option<PlannedImage>,
    /// When its images are pulled.
    #[serde(default)]
    pub pull: Pull,
    /// What its container may reach.
    #[serde(default)]
    pub network: Network,
    pub commands: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub timeout_secs: u64,
    /// Sidecars to start on the task's private network.
    #[serde(default)]
    pub services: Vec<PlannedService>,
    /// Patterns of the files to keep as artifacts when the task passes.
    #[serde(default)]
    pub artifacts: Vec<String>,
    #[serde(default)]
    pub cache: Option<Cache>,
    /// The artifacts of the tasks this one needs, put into its checkout before it runs.
    #[serde(default)]
    pub inputs: Vec<Artifact>,
    /// Names of the secrets its commands get; the worker has their values.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Linux capabilities its container gets; it has none otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// Its container's root file system is read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Its build's priority: which of the platform's job queues it goes to.
    #[serde(default, skip_serializing_if = "Priority::is_normal")]
    pub priority: Priority,
    /// A request built as its merge result: the target branch's commit the build's commit
    /// is merged with in the checkout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_with: Option<CommitId>,
    /// The unguessable part of the names of the task's record and log
    /// ([`crate::keys::TaskNames`]): only the worker given the job can name them. Absent for
    /// a build numbered before names had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_tag: Option<String>,
}

/// A `docker` pool's environment to start for a lease: published to the jobs exchange with
/// the pool's platform as key, beside that platform's jobs, so a worker starts it on its own
/// Docker engine and reports where it can be reached in the lease's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "environment.requested")]
pub struct EnvironmentRequested {
    pub lease: LeaseId,
    pub pool: String,
    pub platform: Platform,
    /// The image, its template rendered for the branch asked for.
    pub image: String,
    /// The command, when not the image's.
    #[serde(default)]
    pub command: Vec<String>,
    /// The container's TCP ports, each published on a free port of the worker's host.
    #[serde(default)]
    pub ports: Vec<u16>,
}

impl EnvironmentRequested {
    /// `lease/<id>`: the AMQP message id, the same for every copy of this request.
    pub fn message_id(&self) -> String {
        format!("lease/{}", self.lease)
    }
}

/// What a worker takes from its platform's queue: a task's job, or a lease's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    Job(Box<JobRequested>),
    Environment(EnvironmentRequested),
}

/// Reads a message from a platform's queue: an environment by its `type`, otherwise a job
/// (jobs carry no `type`, and older bots sent none).
pub fn decode_work(bytes: &[u8]) -> Result<Work, WireError> {
    let value = versioned(bytes)?;
    if value.get("type").and_then(|t| t.as_str()) == Some("environment.requested") {
        Ok(Work::Environment(serde_json::from_value(value)?))
    } else {
        Ok(Work::Job(Box::new(serde_json::from_value(value)?)))
    }
}

/// A file a task kept, stored by its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// The task that made it.
    pub task: String,
    /// Its path in the checkout, `/`-separated.
    pub path: String,
    /// `sha256:<hex>` of its content.
    pub digest: String,
    pub size: u64,
}

/// Everything a build made, by digest: `GET /builds/{id}/manifest`, and the manifest in a
/// tarball from `kiln-worker export`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub build: BuildId,
    pub repo: RepoName,
    pub commit: CommitId,
    /// Every task's artifacts, in plan order.
    pub artifacts: Vec<Artifact>,
    /// Each in-tree image once, by tag.
    pub images: Vec<ImageUse>,
}

impl Manifest {
    /// The manifest of `build`, from what its tasks recorded.
    pub fn new<'a>(
        build: &BuildRef,
        artifacts: impl IntoIterator<Item = &'a Artifact>,
        images: impl IntoIterator<Item = &'a ImageUse>,
    ) -> Self {
        let mut images: Vec<ImageUse> = images.into_iter().cloned().collect();
        images.sort_by(|a, b| a.tag.cmp(&b.tag));
        images.dedup_by(|a, b| a.tag == b.tag);
        Self {
            build: build.id,
            repo: build.repo.clone(),
            commit: build.commit.clone(),
            artifacts: artifacts.into_iter().cloned().collect(),
            images,
        }
    }
}

/// An in-tree image a task ran in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageUse {
    /// Its name in `images:`.
    pub name: String,
    /// The content tag, `kiln/<repo>/<name>:<hash>`.
    pub tag: String,
    /// Docker's id of the image, `sha256:<hex>`.
    pub id: String,
    /// Whether this task built it; false when an image with the tag existed already.
    pub built: bool,
    /// Whether this task's worker pulled it from the installation's registry, where the
    /// worker that built it had pushed it.
    #[serde(default)]
    pub pulled: bool,
}

impl JobRequested {
    /// The job that runs attempt `attempt` of `task`, with the artifacts of what it needs.
    pub fn for_task(
        build: &BuildRef,
        event: TriggerKind,
        clone_url: &str,
        task: &PlannedTask,
        attempt: u32,
        inputs: Vec<Artifact>,
    ) -> Self {
        Self {
            build: build.clone(),
            event,
            request: None,
            clone_url: clone_url.to_owned(),
            task: task.name.clone(),
            step: task.step.clone(),
            attempt,
            platform: task.platform,
            runner: task.runner,
            image: task.image.clone(),
            build_image: task.build_image.clone(),
            pull: task.pull,
            network: task.network,
            commands: task.commands.clone(),
            env: task.env.clone(),
            timeout_secs: task.timeout_secs,
            services: task.services.clone(),
            artifacts: task.artifacts.clone(),
            cache: task.cache.clone(),
            inputs,
            secrets: task.secrets.clone(),
            capabilities: task.capabilities.clone(),
            read_only: task.read_only,
            priority: Priority::Normal,
            merge_with: None,
            key_tag: None,
        }
    }

    /// The jobs exchange's routing key it is published with: its platform's queue of its
    /// priority.
    pub fn routing_key(&self) -> String {
        crate::routing::job_key(self.platform, self.priority)
    }

    /// What the build's caches are kept under: its branch; `tag:<name>` for a tag's build,
    /// and `fork:<number>` for a fork's request (whose build is of branch `pr/<number>`).
    /// No branch's name has a `:`, so neither ever writes a branch's caches.
    pub fn scope(&self) -> String {
        match (self.event, &self.request) {
            (TriggerKind::Tag, _) => format!("tag:{}", self.build.branch),
            (_, Some(request)) if request.from_fork => format!("fork:{}", request.number),
            _ => self.build.branch.to_string(),
        }
    }

    /// `build/task/attempt`: the AMQP message id, the same for every copy of this job.
    pub fn message_id(&self) -> String {
        format!("{}/{}/{}", self.build.id, self.task, self.attempt)
    }

    /// Every variable the task's commands see: the step's own, then Kiln's.
    pub fn environment(&self) -> BTreeMap<String, String> {
        let mut env = self.env.clone();
        let git_ref = match self.event {
            TriggerKind::Tag => "KILN_TAG",
            _ => "KILN_BRANCH",
        };
        env.extend([
            ("CI".to_owned(), "true".to_owned()),
            ("KILN_BUILD_ID".to_owned(), self.build.id.to_string()),
            ("KILN_REPO".to_owned(), self.build.repo.to_string()),
            ("KILN_EVENT".to_owned(), self.event.as_str().to_owned()),
            (git_ref.to_owned(), self.build.branch.to_string()),
            ("KILN_COMMIT".to_owned(), self.build.commit.to_string()),
            ("KILN_TASK".to_owned(), self.task.clone()),
            ("KILN_ATTEMPT".to_owned(), self.attempt.to_string()),
        ]);
        let request = self.request.iter().flat_map(RequestRef::variables);
        env.extend(request.map(|(name, value)| (name.to_owned(), value)));
        env
    }
}

/// A worker took a task and started it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStarted {
    pub build: BuildRef,
    pub task: String,
    pub attempt: u32,
    /// The worker's name, for people.
    pub worker: String,
}

/// A task ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFinished {
    pub build: BuildRef,
    pub task: String,
    pub attempt: u32,
    pub outcome: TaskOutcome,
    /// What the task kept for the tasks that need it.
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
    /// The in-tree images it ran in.
    #[serde(default)]
    pub images: Vec<ImageUse>,
    /// How long it ran on its worker, in milliseconds; absent when no worker ran it to
    /// its end just now (an end announced again, or by the bot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ran_ms: Option<u64>,
}

/// One task's end state, as listed in [`BuildFinished`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSummary {
    pub name: String,
    pub status: TaskStatus,
    #[serde(default)]
    pub exit_code: Option<i64>,
    /// The task may fail without failing the build.
    #[serde(default)]
    pub allow_failure: bool,
}

impl TaskSummary {
    /// The status the build's status is decided from: a task allowed to fail counts as
    /// passed whatever it did.
    pub fn counted_status(&self) -> TaskStatus {
        if self.allow_failure && matches!(self.status, TaskStatus::Failed | TaskStatus::Errored) {
            TaskStatus::Passed
        } else {
            self.status
        }
    }
}

/// A build reached its final status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildFinished {
    pub build: BuildRef,
    pub status: BuildStatus,
    pub author: String,
    pub subject: String,
    pub tasks: Vec<TaskSummary>,
    /// Why the build could not run at all (a broken `.kiln.yml`, say), for people.
    #[serde(default)]
    pub error: Option<String>,
}

/// Everything published to the events exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    BuildRequested(BuildRequested),
    TaskStarted(TaskStarted),
    TaskFinished(TaskFinished),
    BuildFinished(BuildFinished),
}

impl Event {
    /// The build this event is about.
    pub fn build(&self) -> &BuildRef {
        match self {
            Self::BuildRequested(e) => &e.build,
            Self::TaskStarted(e) => &e.build,
            Self::TaskFinished(e) => &e.build,
            Self::BuildFinished(e) => &e.build,
        }
    }

    /// `<kind>.<status>.<repo>.<branch>`, see [`crate::routing`].
    pub fn routing_key(&self) -> String {
        let (kind, status) = match self {
            Self::BuildRequested(_) => ("build", "requested"),
            Self::TaskStarted(_) => ("task", "started"),
            Self::TaskFinished(e) => ("task", e.outcome.status().as_str()),
            Self::BuildFinished(e) => ("build", e.status.as_str()),
        };
        let build = self.build();
        event_key(kind, status, &build.repo, &build.branch)
    }
}

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("not a Kiln message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("wire version {found} is not {WIRE_VERSION}")]
    Version { found: String },
}

/// Serialises a message with its version.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut value = serde_json::to_value(message).unwrap_or_default();
    if let serde_json::Value::Object(fields) = &mut value {
        fields.insert("v".into(), WIRE_VERSION.into());
    }
    value.to_string().into_bytes()
}

/// Reads a message, checking its version first.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    Ok(serde_json::from_value(versioned(bytes)?)?)
}

/// The JSON of a message, once its version is checked.
fn versioned(bytes: &[u8]) -> Result<serde_json::Value, WireError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)?;
    match value.get("v") {
        Some(v) if v.as_u64() == Some(WIRE_VERSION) => Ok(value),
        other => Err(WireError::Version {
            found: other.map_or_else(|| "missing".to_owned(), |v| v.to_string()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trigger::Pushed;

    fn build() -> BuildRef {
        BuildRef {
            id: BuildId(7),
            repo: "acme/api".into(),
            branch: "release.1".into(),
            commit: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c".into(),
        }
    }

    #[test]
    fn a_comments_command_says_what_it_is_and_comes_back_whole() {
        let requested = CommentRequested {
            forge: "gitlab".into(),
            delivery: "b2c1e5a0".into(),
            comment: Comment {
                repo: "acme/api".into(),
                number: 7,
                author: "octocat".into(),
                author_id: "583231".into(),
                command: "retry 12 --failed".into(),
            },
        };
        let bytes = encode(&requested);
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(json["type"], "comment.requested");
        assert_eq!(json["comment"]["number"], 7);
        assert_eq!(
            decode::<CommentRequested>(&bytes).expect("decodes"),
            requested
        );
    }

    #[test]
    fn a_held_push_says_what_it_is_and_comes_back_whole() {
        let held = PushHeld {
            repo: "acme/api".into(),
            forge: "github".into(),
            delivery: "72d3162e".into(),
            push: Push {
                repo: "acme/api".into(),
                branch: "v1.2.0".into(),
                pushed: Pushed::Tag,
                commit: "a".repeat(40).into(),
                clone_url: "https://example.com/acme/api.git".into(),
                author: "Octo Cat".into(),
                subject: "Fix".into(),
                changed_paths: Some(vec!["src/lib.rs".into()]),
            },
        };
        let bytes = encode(&held);
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(json["type"], "push.held");
        assert_eq!(json["v"], 1);
        assert_eq!(decode::<PushHeld>(&bytes).expect("decodes"), held);
    }

    #[test]
    fn events_round_trip_with_their_version() {
        let event = Event::TaskFinished(TaskFinished {
            build: build(),
            task: "test".into(),
            attempt: 1,
            outcome: TaskOutcome::Failed { exit_code: 3 },
            artifacts: vec![Artifact {
                task: "test".into(),
                path: "dist/a.deb".into(),
                digest: format!("sha256:{}", "0".repeat(64)),
                size: 3,
            }],
            images: Vec::new(),
            ran_ms: Some(1_250),
        });
        let bytes = encode(&event);
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(json["v"], 1);
        assert_eq!(json["type"], "task_finished");
        assert_eq!(json["outcome"]["result"], "failed");
        assert_eq!(decode::<Event>(&bytes).expect("decodes"), event);
        assert_eq!(event.routing_key(), "task.failed.acme/api.release%2E1");
    }

    #[test]
    fn unknown_fields_are_ignored_and_other_versions_refused() {
        let job = r#"{"v":1,"build":{"id":7,"repo":"a/b","branch":"m","commit":"c"},
            "clone_url":"u","task":"t","attempt":1,"platform":"linux-amd64","image":"i",
            "commands":["true"],"timeout_secs":5,"added_in_v1_1":true}"#;
        let parsed: JobRequested = decode(job.as_bytes()).expect("decodes");
        assert_eq!(parsed.message_id(), "7/t/1");

        let v2 = job.replace("\"v\":1", "\"v\":2");
        let e = decode::<JobRequested>(v2.as_bytes()).expect_err("refused");
        assert_eq!(e.to_string(), "wire version 2 is not 1");
        let e = decode::<JobRequested>(b"{}").expect_err("refused");
        assert_eq!(e.to_string(), "wire version missing is not 1");
        assert!(decode::<JobRequested>(b"not json").is_err());
    }

    #[test]
    fn caches_of_tags_and_forks_are_kept_apart_from_every_branch_s() {
        let job = r#"{"v":1,"build":{"id":7,"repo":"a/b","branch":"pr/7","commit":"c"},
            "clone_url":"u","task":"t","attempt":1,"platform":"linux-amd64",
            "commands":["true"],"timeout_secs":5}"#;
        let mut job: JobRequested = decode(job.as_bytes()).expect("decodes");
        assert_eq!(job.scope(), "pr/7", "a branch named pr/7");
        assert_eq!(job.routing_key(), "linux-amd64");
        job.event = TriggerKind::MergeRequest;
        job.request = Some(RequestRef {
            number: 7,
            source_branch: "master".into(),
            target_branch: "master".into(),
            from_fork: true,
        });
        assert_eq!(job.scope(), "fork:7");
        job.request.as_mut().expect("a request").from_fork = false;
        assert_eq!(job.scope(), "pr/7", "the request's own branch");
        job.event = TriggerKind::Tag;
        assert_eq!(job.scope(), "tag:pr/7");
        job.priority = Priority::High;
        assert_eq!(job.routing_key(), "linux-amd64.high");
        let json: serde_json::Value = serde_json::from_slice(&encode(&job)).expect("json");
        assert_eq!(json["priority"], "high");
    }

    #[test]
    fn routing_keys_per_event() {
        let finished = Event::BuildFinished(BuildFinished {
            build: build(),
            status: BuildStatus::Passed,
            author: "a".into(),
            subject: "s".into(),
            tasks: vec![],
            error: None,
        });
        assert_eq!(finished.routing_key(), "build.passed.acme/api.release%2E1");
        let started = Event::TaskStarted(TaskStarted {
            build: build(),
            task: "t".into(),
            attempt: 1,
            worker: "w".into(),
        });
        assert_eq!(started.routing_key(), "task.started.acme/api.release%2E1");
    }

    #[test]
    fn a_platform_queue_carries_jobs_and_environments_told_apart_by_type() {
        let asked = EnvironmentRequested {
            lease: LeaseId(12),
            pool: "review".into(),
            platform: Platform::LinuxAmd64,
            image: "registry.example.com/acme/api:feature-x-1a2b".into(),
            command: vec!["serve".into(), "--port".into(), "8080".into()],
            ports: vec![8080],
        };
        let bytes = encode(&asked);
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(json["type"], "environment.requested");
        assert_eq!(json["v"], 1);
        assert_eq!(json["lease"], 12);
        assert_eq!(json["platform"], "linux/amd64");
        assert_eq!(asked.message_id(), "lease/12");
        assert_eq!(
            decode_work(&bytes).expect("decodes"),
            Work::Environment(asked.clone())
        );
        assert_eq!(
            decode::<EnvironmentRequested>(&bytes).expect("decodes"),
            asked
        );

        // A job has no `type`; one with fields added later is still a job.
        let job = r#"{"v":1,"build":{"id":7,"repo":"a/b","branch":"m","commit":"c"},
            "clone_url":"u","task":"t","attempt":1,"platform":"linux-amd64",
            "commands":["true"],"timeout_secs":5,"added_later":1}"#;
        match decode_work(job.as_bytes()).expect("decodes") {
            Work::Job(job) => assert_eq!(job.message_id(), "7/t/1"),
            other => panic!("a job, not {other:?}"),
        }
        // Neither: refused with what was wrong.
        let e = decode_work(br#"{"v":1,"type":"environment.requested","pool":"p"}"#)
            .expect_err("refused");
        assert!(e.to_string().contains("missing field `lease`"), "{e}");
        let e = decode_work(br#"{"v":2,"type":"environment.requested"}"#).expect_err("refused");
        assert_eq!(e.to_string(), "wire version 2 is not 1");
    }
}

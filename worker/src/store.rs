//! The worker's writes to Redis: claiming a task, recording its end, and its log lines.
//!
//! Claiming and finishing are compare-and-sets ([`STATUS_TRANSITION_SCRIPT`]): two workers
//! handed the same job never both run it, and a finished task is never reopened.

use std::collections::HashMap;
use std::sync::LazyLock;

use kiln_shared::build::TaskStatus;
use kiln_shared::keys::{ENVIRONMENT_REPORT_SCRIPT, Keys, STATUS_TRANSITION_SCRIPT};
use kiln_shared::lease::LeaseId;
use kiln_shared::presence::Presence;
use kiln_shared::record::{self, RecordError, TaskField, TaskRecord};
use kiln_shared::wire::JobRequested;

use crate::lines::{LogLine, LogSink};
use crate::task::Ran;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, RedisResult, Script};

static TRANSITION: LazyLock<Script> = LazyLock::new(|| Script::new(STATUS_TRANSITION_SCRIPT));

static ENVIRONMENT_REPORT: LazyLock<Script> =
    LazyLock::new(|| Script::new(ENVIRONMENT_REPORT_SCRIPT));

/// How long the mark that a lease's environment is gone stays: long past any `env release`
/// waiting for it.
const GONE_MARK_SECS: u64 = 600;

/// How many lines of one task's log Redis keeps (approximately, `MAXLEN ~`): a runaway task
/// cannot fill Redis's memory.
pub const MAX_LOG_LINES: usize = 100_000;

/// What claiming a job found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This worker runs the task.
    Taken,
    /// The task already ended so: this job is a copy of one already done.
    Finished(Ran),
    /// Someone else has the task, or it no longer needs running.
    Elsewhere(Option<String>),
}

/// Who made a claim: a worker's name and the claim's own token. A worker started again under
/// the same name (after a SIGKILL, say) makes claims with other tokens, so two takeovers
/// from one dead run cannot both succeed by writing back the name they compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimant {
    pub worker: String,
    /// Empty for a claim recorded before claims had tokens.
    pub claim: String,
}

impl Claimant {
    /// A new claim by `worker`: 64 random bits, or, should the system have no randomness to
    /// give, the clock's nanoseconds and a count of this process's claims.
    pub fn fresh(worker: &str) -> Self {
        static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mut bytes = [0u8; 8];
        let claim = match getrandom::fill(&mut bytes) {
            Ok(()) => hex::encode(bytes),
            Err(_) => {
                let made = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                format!("{nanos:x}-{made:x}")
            }
        };
        Self {
            worker: worker.to_owned(),
            claim,
        }
    }

    /// Whether `task`'s attempt is this claim's.
    fn holds(&self, task: &TaskRecord) -> bool {
        task.worker.as_deref() == Some(self.worker.as_str())
            && task.claim.as_deref().unwrap_or_default() == self.claim
    }
}

/// Where a running task stands for the worker running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Still its to run.
    Held,
    /// The bot cancelled it.
    Cancelled,
    /// Its attempt is no longer this worker's: the bot took it back from a worker it had
    /// not heard from, and another attempt (or worker) has it.
    TakenBack,
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    /// The task's record is there but does not decode: never guessed at.
    #[error("the record {key} is unreadable: {problem}")]
    Unreadable { key: String, problem: RecordError },
}

/// The worker's handle on Redis; cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    keys: Keys,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("keys", &self.keys).finish()
    }
}

pub use kiln_io::clock::now_ms;

impl Store {
    pub fn new(conn: ConnectionManager, keys: Keys) -> Self {
        Self { conn, keys }
    }

    /// The name of `job`'s task record: with the tag its job carries, the only way a worker
    /// can name it.
    fn record_key(&self, job: &JobRequested) -> String {
        self.keys
            .task_tagged(job.build.id, &job.task, job.key_tag.as_deref())
    }

    /// The name of `job`'s task log, named like its record.
    fn log_key(&self, job: &JobRequested) -> String {
        self.keys
            .logs_tagged(job.build.id, &job.task, job.key_tag.as_deref())
    }

    /// Moves the task of `job` to `to` if it is in one of `from` and still at the job's
    /// attempt (a retry supersedes older attempts) and, with `owner`, still that claim's (a
    /// taken-back attempt is no longer its), setting `fields` with it.
    async fn transition(
        &self,
        job: &JobRequested,
        to: TaskStatus,
        from: &[TaskStatus],
        owner: Option<&Claimant>,
        fields: &[(&str, String)],
    ) -> RedisResult<bool> {
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let mut invocation = TRANSITION.key(self.record_key(job));
        invocation
            .arg(to.as_str())
            .arg(from.join(","))
            .arg(1 + 2 * usize::from(owner.is_some()))
            .arg(TaskField::Attempt.name())
            .arg(job.attempt);
        if let Some(owner) = owner {
            invocation
                .arg(TaskField::Worker.name())
                .arg(&owner.worker)
                .arg(TaskField::Claim.name())
                .arg(&owner.claim);
        }
        for (field, value) in fields {
            invocation.arg(*field).arg(value);
        }
        let moved: i64 = invocation.invoke_async(&mut self.conn.clone()).await?;
        Ok(moved == 1)
    }

    /// Records what this worker says of itself, for `workers`.
    pub async fn say_present(&self, presence: &Presence) -> RedisResult<()> {
        let json = serde_json::to_string(presence).unwrap_or_default();
        self.conn
            .clone()
            .hset(self.keys.workers(), &presence.name, json)
            .await
    }

    /// Takes a stopping worker's presence back.
    pub async fn say_gone(&self, name: &str) -> RedisResult<()> {
        self.conn.clone().hdel(self.keys.workers(), name).await
    }

    /// The record of the task of `job`, if there is one; one round trip.
    async fn task(&self, job: &JobRequested) -> Result<Option<TaskRecord>, StoreError> {
        let key = self.record_key(job);
        let fields: HashMap<String, String> = self.conn.clone().hgetall(&key).await?;
        TaskRecord::decode(&job.task, &fields).map_err(|problem| {
            tracing::error!(%key, %problem, "stored record is unreadable");
            StoreError::Unreadable { key, problem }
        })
    }

    /// The claim running this attempt of the task, if it is running.
    pub async fn running_on(&self, job: &JobRequested) -> Result<Option<Claimant>, StoreError> {
        let task = self.task(job).await?;
        Ok(task
            .filter(|t| t.status == TaskStatus::Running && t.attempt == job.attempt)
            .and_then(|t| {
                Some(Claimant {
                    worker: t.worker?,
                    claim: t.claim.unwrap_or_default(),
                })
            }))
    }

    /// What worker `name` last said of itself, if it did.
    pub async fn presence(&self, name: &str) -> RedisResult<Option<Presence>> {
        let json: Option<String> = self.conn.clone().hget(self.keys.workers(), name).await?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// Takes the task for claim `me`: a queued one, or, with `gone`, one that claim was
    /// running and no longer runs (its worker died without acknowledging a job RabbitMQ has
    /// given again). Taking over is a compare-and-set on that claim: two deliveries of one
    /// job that both judged it gone (a job published twice, both copies handed back by a
    /// worker that died) cannot both take it, since the first changes the claim, even when
    /// the first taker is the dead worker started again under its name.
    pub async fn claim(
        &self,
        job: &JobRequested,
        gone: Option<&Claimant>,
        me: &Claimant,
    ) -> Result<Claim, StoreError> {
        let fields = record::task::claimed(&me.worker, &me.claim, now_ms());
        let queued = &[TaskStatus::Queued];
        if self
            .transition(job, TaskStatus::Running, queued, None, &fields)
            .await?
        {
            return Ok(Claim::Taken);
        }
        if let Some(gone) = gone
            && self
                .transition(
                    job,
                    TaskStatus::Running,
                    &[TaskStatus::Running],
                    Some(gone),
                    &fields,
                )
                .await?
        {
            return Ok(Claim::Taken);
        }
        let task = self.task(job).await?;
        Ok(match task {
            Some(TaskRecord {
                ended: Some(outcome),
                artifacts,
                images,
                attempt,
                ..
            }) if attempt == job.attempt => Claim::Finished(Ran {
                outcome,
                artifacts,
                images,
            }),
            task => Claim::Elsewhere(task.map(|t| t.status.as_str().to_owned())),
        })
    }

    /// Records how claim `me`'s run of the task ended. Returns false if the task had already
    /// ended (cancelled, say) or is no longer this claim's (its attempt was taken back);
    /// true again when it ended so by this very record (a retry whose first answer was lost).
    pub async fn finish(
        &self,
        job: &JobRequested,
        me: &Claimant,
        ran: &Ran,
    ) -> Result<bool, StoreError> {
        let outcome = &ran.outcome;
        let fields = record::task::finished(outcome, &ran.artifacts, &ran.images, now_ms());
        if self
            .transition(
                job,
                outcome.status(),
                &[TaskStatus::Running],
                Some(me),
                &fields,
            )
            .await?
        {
            return Ok(true);
        }
        let task = self.task(job).await?;
        Ok(task.is_some_and(|t| {
            t.status == outcome.status()
                && t.attempt == job.attempt
                && me.holds(&t)
                && t.ended.as_ref() == Some(outcome)
        }))
    }

    /// Whether the task of `job` is still claim `me`'s to run: running, at the job's
    /// attempt, by that claim; or else why not.
    pub async fn standing(
        &self,
        job: &JobRequested,
        me: &Claimant,
    ) -> Result<Standing, StoreError> {
        let task = self.task(job).await?;
        Ok(match task {
            Some(t) if t.attempt == job.attempt && t.status == TaskStatus::Cancelled => {
                Standing::Cancelled
            }
            Some(t)
                if t.attempt == job.attempt && t.status == TaskStatus::Running && me.holds(&t) =>
            {
                Standing::Held
            }
            _ => Standing::TakenBack,
        })
    }

    /// Appends log lines to the task's stream in one round trip, trimming it once after.
    pub async fn append_log(&self, job: &JobRequested, lines: &[LogLine]) -> RedisResult<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let key = self.log_key(job);
        let mut pipe = redis::pipe();
        for line in lines {
            pipe.xadd(
                &key,
                "*",
                &[("fd", line.fd.as_str()), ("line", line.text.as_str())],
            )
            .ignore();
        }
        pipe.xtrim(&key, redis::streams::StreamMaxlen::Approx(MAX_LOG_LINES))
            .ignore();
        pipe.query_async(&mut self.conn.clone()).await
    }

    /// Removes a task's log; a rerun of the same attempt starts it afresh.
    pub async fn clear_log(&self, job: &JobRequested) -> RedisResult<()> {
        let _: usize = self.conn.clone().del(self.log_key(job)).await?;
        Ok(())
    }
}

/// What became of a lease's environment, as a worker reports it in the lease's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvironmentReport {
    /// Where it can be reached (`host:49153 → 8080, …`).
    Started(String),
    /// Why it could not start, for the person who asked.
    Failed(String),
}

impl Store {
    /// Whether lease `id` still waits for its environment: it runs, and no worker has
    /// reported on it.
    pub async fn environment_wanted(&self, id: LeaseId) -> RedisResult<bool> {
        let (pool, details, failure): (Option<String>, Option<String>, Option<String>) =
            redis::cmd("HMGET")
                .arg(self.keys.lease(id))
                .arg(&["pool", "details", "failure"])
                .query_async(&mut self.conn.clone())
                .await?;
        let empty = |field: Option<String>| field.unwrap_or_default().is_empty();
        Ok(pool.is_some() && empty(details) && empty(failure))
    }

    /// Reports on lease `id`'s environment; false if the lease ended meanwhile (or was
    /// reported on already), and nothing was recorded.
    pub async fn report_environment(
        &self,
        id: LeaseId,
        report: &EnvironmentReport,
    ) -> RedisResult<bool> {
        let (field, value) = match report {
            EnvironmentReport::Started(details) => ("details", details),
            EnvironmentReport::Failed(why) => ("failure", why),
        };
        let set: i64 = ENVIRONMENT_REPORT
            .key(self.keys.lease(id))
            .arg(field)
            .arg(value)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(set == 1)
    }

    /// Whether lease `id` runs.
    pub async fn lease_runs(&self, id: LeaseId) -> RedisResult<bool> {
        self.conn.clone().hexists(self.keys.lease(id), "pool").await
    }

    /// Notes that the environment of lease `id`, which ended, is gone.
    pub async fn environment_gone(&self, id: LeaseId) -> RedisResult<()> {
        self.conn
            .clone()
            .set_ex(self.keys.lease_gone(id), 1, GONE_MARK_SECS)
            .await
    }
}

/// Where a job's lines go on a worker: its task's stream in Redis, counted in `stored`.
#[derive(Debug, Clone, Copy)]
pub struct RedisLog<'a> {
    pub store: &'a Store,
    pub job: &'a JobRequested,
    pub stored: &'a prometheus_client::metrics::counter::Counter,
}

impl LogSink for RedisLog<'_> {
    async fn write(&self, lines: &[LogLine]) {
        // A lost log line must not fail the build; Redis being down shows up elsewhere.
        match self.store.append_log(self.job, lines).await {
            Ok(()) => {
                self.stored.inc_by(lines.len() as u64);
            }
            Err(error) => {
                tracing::warn!(%error, dropped = lines.len(), "cannot write log lines");
            }
        }
    }
}

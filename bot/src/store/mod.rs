//! The bot's state in Redis: build records, task records, the scheduler's counters, delivery
//! deduplication, and reading the logs the workers wrote.
//!
//! Every status change goes through [`STATUS_TRANSITION_SCRIPT`], a compare-and-set, so a
//! duplicate or late message changes nothing. The key layout is [`Keys`], shared with workers.

mod chat;
mod environment;
mod lease;
mod names;
mod promotion;
mod retention;
mod secret;
mod session;

pub use environment::Deployed;
pub use lease::{LeaseRecord, Waiting};
pub use names::task_names;
pub use promotion::{Approval, Approved, PromotionRecord};
pub use retention::RawLine;
pub use session::Session;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::LazyLock;
use std::time::Duration;

use kiln_shared::build::{BuildId, BuildStatus, TaskStatus};
use kiln_shared::ident::{BranchName, ChannelName, CommitId, RepoName};
use kiln_shared::keys::{Keys, STATUS_TRANSITION_SCRIPT};
use kiln_shared::plan::Plan;
use kiln_shared::presence::Presence;
use kiln_shared::record::{self, BuildField, RecordError, TaskField};
use kiln_shared::trigger::TriggerKind;
use kiln_shared::wire::{BuildRequested, NewBuild};
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{
    AsyncCommands, AsyncConnectionConfig, ExistenceCheck, RedisResult, Script, SetExpiry,
    SetOptions,
};

/// How long Kiln remembers a forge delivery id. Forges redeliver within hours; a week is
/// ample and keeps the set bounded.
const DELIVERY_MEMORY: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// How long a follower's read of a task's log waits for a new line before it looks at
/// whether the task has ended.
pub const LOG_WAIT: Duration = Duration::from_secs(1);

/// The most log lines one read returns.
const LOG_READ_COUNT: usize = 1000;

/// About how many entries the audit stream keeps; older ones are trimmed.
pub const MAX_AUDIT_ENTRIES: usize = 100_000;

static TRANSITION: LazyLock<Script> = LazyLock::new(|| Script::new(STATUS_TRANSITION_SCRIPT));

/// Accounts for a task's end in the build's graph, once. See [`Store::settle`].
static SETTLE: LazyLock<Script> = LazyLock::new(|| Script::new(SETTLE_SCRIPT));

/// [`SETTLE`]'s text. It names the build's field `remaining` itself: a test checks that it is
/// the codec's.
const SETTLE_SCRIPT: &str = r"
-- KEYS: settled set, pending hash, build hash. ARGV: task, 'pass' or 'stop', then tasks:
-- with 'pass' the task's dependents, with 'stop' everything downstream of it.
local ready = {}
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
  local settled = 1
  if ARGV[2] == 'pass' then
    for i = 3, #ARGV do
      if redis.call('HINCRBY', KEYS[2], ARGV[i], -1) == 0
         and redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 0 then
        table.insert(ready, ARGV[i])
      end
    end
  else
    for i = 3, #ARGV do settled = settled + redis.call('SADD', KEYS[1], ARGV[i]) end
  end
  redis.call('HINCRBY', KEYS[3], 'remaining', -settled)
end
return {tonumber(redis.call('HGET', KEYS[3], 'remaining') or '0'), ready}
";

/// Reopens a failed or errored task as its next attempt, if `ARGV[1]` is still its attempt:
/// a duplicate of the event that asked for the retry finds the attempt moved on. The fields
/// to clear ([`TaskField::cleared_on_retry`]) follow in `ARGV`.
static RETRY: LazyLock<Script> = LazyLock::new(|| Script::new(RETRY_SCRIPT));

/// [`RETRY`]'s text. It names the task's fields `status` and `attempt` and its statuses
/// itself: a test checks that they are the codec's.
const RETRY_SCRIPT: &str = r"
local status = redis.call('HGET', KEYS[1], 'status')
local attempt = redis.call('HGET', KEYS[1], 'attempt')
if attempt ~= ARGV[1] or (status ~= 'failed' and status ~= 'errored') then return 0 end
redis.call('HDEL', KEYS[1], unpack(ARGV, 2))
redis.call('HSET', KEYS[1], 'status', 'queued', 'attempt', tonumber(attempt) + 1)
return 1
";

/// Numbers a new build, stores its record, queued, and puts it in the outbox, unless it is a
/// forge delivery seen before: then returns the build that delivery became, and stores
/// nothing. A delivery is marked seen only together with a build that will run.
static CREATE_BUILD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: the build sequence, the delivery's key (or none: ''), the outbox, the repository's
-- branch heads (or none: ''), the repository's builds. ARGV: how long a delivery is
-- remembered (s), the build key prefix, when the relay may publish the build (ms), its
-- branch and commit, how many of the repository's builds are listed, then the record's
-- field/value pairs.
if KEYS[2] ~= '' then
  local seen = redis.call('GET', KEYS[2])
  if seen then return {0, tonumber(seen)} end
end
local id = redis.call('INCR', KEYS[1])
if KEYS[2] ~= '' then redis.call('SET', KEYS[2], id, 'EX', ARGV[1]) end
if KEYS[4] ~= '' then redis.call('HSET', KEYS[4], ARGV[4], ARGV[5]) end
redis.call('HSET', ARGV[2] .. id, unpack(ARGV, 7))
redis.call('ZADD', KEYS[3], ARGV[3], id)
redis.call('ZADD', KEYS[5], id, id)
redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -1 - tonumber(ARGV[6]))
return {1, id}
",
    )
});

/// Claims the due builds of a sorted set (the outbox, retention's): those scored up to
/// `ARGV[1]` (now) are scored `ARGV[2]` (the lease's end) and returned, at most `ARGV[3]`
/// of them.
static DUE_CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id) end
return due
",
    )
});

/// Sets `KEYS[1]` to the number `ARGV[1]` unless it holds a larger one.
static NOTE_LATER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local noted = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > noted then redis.call('SET', KEYS[1], ARGV[1]) end
",
    )
});

/// How many of a repository's newest builds its list keeps (`Keys::repo_builds`).
pub const REPO_BUILDS_LISTED: usize = 1000;

/// How long after a build is accepted the outbox's relay leaves it to the request that
/// accepted it: longer than that request waits for its confirm, so a build is not published
/// twice while the broker is well.
pub const OUTBOX_GRACE: Duration = Duration::from_secs(30);

/// The plans read lately, by build (and when it was made), weighed by their stored text.
type Plans = crate::kept::Kept<(BuildId, u64), Arc<Plan>>;

/// What the plans kept in memory may weigh, by their stored texts' sizes.
const PLANS_KEPT_BYTES: u64 = 16 * 1024 * 1024;

pub use kiln_io::clock::now_ms;

pub use kiln_shared::record::{BuildRecord, TaskRecord};

/// Why the store could not give a record.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    /// The record is there but does not decode: it is shown as unreadable, never guessed
    /// at.
    #[error("the record {key} is unreadable: {problem}")]
    Unreadable { key: String, problem: RecordError },
}

/// Logs that the record under `key` does not decode, and says so.
fn unreadable(key: String, problem: RecordError) -> StoreError {
    tracing::error!(%key, %problem, "stored record is unreadable");
    StoreError::Unreadable { key, problem }
}

/// What [`Store::settle`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// Tasks of the build not yet accounted for; 0 means the build is over.
    pub remaining: i64,
    /// Tasks whose needs have now all passed.
    pub ready: Vec<String>,
}

/// The bot's handle on Redis; cheap to clone.
#[derive(Clone)]
pub struct Store {
    client: redis::Client,
    conn: ConnectionManager,
    keys: Keys,
    plans: Plans,
    /// The key web sessions' cookies are signed with, once read.
    web_key: Arc<tokio::sync::OnceCell<Vec<u8>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("keys", &self.keys).finish()
    }
}

impl Store {
    /// A store over `client`'s open connection `conn`, with keys under `prefix`; reads (or
    /// makes, for the first bot) the installation's task names.
    pub async fn open(
        client: redis::Client,
        conn: ConnectionManager,
        prefix: &str,
    ) -> RedisResult<Self> {
        let keys = Keys::new(prefix);
        let names = names::task_names(&conn, &keys).await?;
        Ok(Self {
            client,
            conn,
            keys: keys.with_names(names),
            plans: Plans::new(PLANS_KEPT_BYTES, 4 * 1024),
            web_key: Arc::default(),
        })
    }

    /// The key layout.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The newest build's id, if there is any build.
    pub async fn latest_build_id(&self) -> RedisResult<Option<BuildId>> {
        let id: Option<u64> = self.conn.clone().get(self.keys.build_sequence()).await?;
        Ok(id.filter(|id| *id > 0).map(BuildId))
    }

    /// Appends one entry to the audit stream (capped at about [`MAX_AUDIT_ENTRIES`]).
    pub async fn audit(&self, fields: &[(&str, &str)]) -> RedisResult<()> {
        let _: String = self
            .conn
            .clone()
            .xadd_maxlen(
                self.keys.audit(),
                redis::streams::StreamMaxlen::Approx(MAX_AUDIT_ENTRIES),
                "*",
                fields,
            )
            .await?;
        Ok(())
    }

    /// The workers heard from lately and those lost (silent without having stopped: a worker
    /// killed outright says nothing), by platform and name; entries silent for longer than
    /// `presence::FORGOTTEN` are removed.
    pub async fn workers(&self) -> RedisResult<Vec<Presence>> {
        let mut conn = self.conn.clone();
        let all: HashMap<String, String> = conn.hgetall(self.keys.workers()).await?;
        let now = now_ms();
        let mut there = Vec::new();
        for (name, json) in all {
            match serde_json::from_str::<Presence>(&json) {
                Ok(presence) if !presence.is_forgotten(now) => there.push(presence),
                _ => {
                    let _: usize = conn.hdel(self.keys.workers(), name).await?;
                }
            }
        }
        there.sort_by(|a, b| (&a.platform, &a.name).cmp(&(&b.platform, &b.name)));
        Ok(there)
    }

    /// Records that forge delivery `delivery` became build `id`, unless it was seen before:
    /// then returns the build it became.
    pub async fn claim_delivery(
        &self,
        forge: &str,
        delivery: &str,
        id: BuildId,
    ) -> RedisResult<Option<BuildId>> {
        let key = self.keys.delivery(forge, delivery);
        let options = SetOptions::default()
            .conditional_set(ExistenceCheck::NX)
            .with_expiration(SetExpiry::EX(DELIVERY_MEMORY.as_secs()));
        let mut conn = self.conn.clone();
        let set: Option<String> = conn.set_options(&key, id.0, options).await?;
        if set.is_some() {
            return Ok(None);
        }
        let existing: Option<String> = conn.get(&key).await?;
        Ok(existing.and_then(|s| s.parse().ok()).map(BuildId))
    }

    /// Notes comment delivery `delivery` of `forge` seen; false if it was seen before (a
    /// retry of the forge's, whose command is not to be given twice).
    pub async fn claim_comment(&self, forge: &str, delivery: &str) -> RedisResult<bool> {
        let options = SetOptions::default()
            .conditional_set(ExistenceCheck::NX)
            .with_expiration(SetExpiry::EX(DELIVERY_MEMORY.as_secs()));
        let set: Option<String> = self
            .conn
            .clone()
            .set_options(self.keys.delivery(forge, delivery), "comment", options)
            .await?;
        Ok(set.is_some())
    }

    /// Forgets that delivery `delivery` of `forge` was seen: it was not taken after all.
    pub async fn forget_delivery(&self, forge: &str, delivery: &str) -> RedisResult<()> {
        self.conn
            .clone()
            .del(self.keys.delivery(forge, delivery))
            .await
    }

    /// Whether the command in comment delivery `delivery` of `forge` was answered already.
    pub async fn comment_answered(&self, forge: &str, delivery: &str) -> RedisResult<bool> {
        self.conn
            .clone()
            .exists(self.keys.delivery(&answered(forge), delivery))
            .await
    }

    /// Notes the command in comment delivery `delivery` of `forge` answered.
    pub async fn note_comment_answered(&self, forge: &str, delivery: &str) -> RedisResult<()> {
        let key = self.keys.delivery(&answered(forge), delivery);
        self.conn
            .clone()
            .set_ex(key, 1, DELIVERY_MEMORY.as_secs())
            .await
    }

    /// Stores `new` as a build, queued, under a new number, and puts it in the outbox, for
    /// the relay to publish after [`OUTBOX_GRACE`] unless it is taken out sooner: one round
    /// trip. With the forge delivery (forge, id) that asked for it, only if that delivery was
    /// not seen before; else nothing is stored and the build the delivery became is named.
    pub async fn create_build(
        &self,
        new: NewBuild,
        delivery: Option<(&str, &str)>,
    ) -> RedisResult<Created> {
        let fields = record::build::queued(&new, now_ms());
        let delivery =
            delivery.map_or_else(String::new, |(forge, id)| self.keys.delivery(forge, id));
        // A push's build, delivered by a forge or found by reconciliation, is what
        // reconciliation compares the branch's head with; a command may build any commit of
        // a branch (a retry an old one), a tag's build is of no branch.
        let heads = if new.kind == TriggerKind::Push && !delivery.is_empty() {
            self.keys.heads(&new.repo)
        } else {
            String::new()
        };
        let mut invocation = CREATE_BUILD.key(self.keys.build_sequence());
        invocation
            .key(delivery)
            .key(self.keys.outbox())
            .key(heads)
            .key(self.keys.repo_builds(&new.repo))
            .arg(DELIVERY_MEMORY.as_secs())
            .arg(self.keys.build_prefix())
            .arg(now_ms() + OUTBOX_GRACE.as_millis() as u64)
            .arg(new.branch.as_str())
            .arg(new.commit.as_str())
            .arg(REPO_BUILDS_LISTED);
        for (field, value) in fields {
            invocation.arg(field).arg(value);
        }
        let (stored, id): (bool, u64) = invocation.invoke_async(&mut self.conn.clone()).await?;
        Ok(if stored {
            Created::New(Box::new(new.numbered(BuildId(id))))
        } else {
            Created::Seen(BuildId(id))
        })
    }

    /// Each branch of `repo` Kiln was told of, with the newest commit a push's build of it
    /// was accepted for.
    pub async fn branch_heads(
        &self,
        repo: &RepoName,
    ) -> RedisResult<HashMap<BranchName, CommitId>> {
        let heads: HashMap<String, String> =
            self.conn.clone().hgetall(self.keys.heads(repo)).await?;
        Ok(heads
            .into_iter()
            .map(|(branch, commit)| (branch.into(), commit.into()))
            .collect())
    }

    /// Notes `commit` as `branch`'s newest build of `repo` (a promotion built it).
    pub async fn note_branch_head(
        &self,
        repo: &RepoName,
        branch: &BranchName,
        commit: &CommitId,
    ) -> RedisResult<()> {
        self.conn
            .clone()
            .hset(self.keys.heads(repo), branch.as_str(), commit.as_str())
            .await
    }

    /// The latest due time of `repo`'s schedule `name` that was built, if any was noted.
    pub async fn schedule_noted(&self, repo: &RepoName, name: &str) -> RedisResult<Option<u64>> {
        self.conn.clone().get(self.keys.schedule(repo, name)).await
    }

    /// Notes `due_ms` as the latest due time of `repo`'s schedule `name` that was built,
    /// unless a later one is noted already (a bot that looked later noted it first).
    pub async fn note_schedule(&self, repo: &RepoName, name: &str, due_ms: u64) -> RedisResult<()> {
        NOTE_LATER
            .key(self.keys.schedule(repo, name))
            .arg(due_ms)
            .invoke_async(&mut self.conn.clone())
            .await
    }

    /// Forgets `branch` of `repo` in its branch heads: it is gone from the forge.
    pub async fn forget_branch_head(
        &self,
        repo: &RepoName,
        branch: &BranchName,
    ) -> RedisResult<()> {
        self.conn
            .clone()
            .hdel(self.keys.heads(repo), branch.as_str())
            .await
    }

    /// Takes task `task` of build `id`, not yet started, as passed with what `passed` (the
    /// same task of build `from`) left; returns whether it moved.
    pub async fn reuse_task(
        &self,
        id: BuildId,
        from: BuildId,
        passed: &TaskRecord,
    ) -> RedisResult<bool> {
        let fields = record::task::reused(from, &passed.artifacts, &passed.images);
        let from = [TaskStatus::Waiting.as_str(), TaskStatus::Queued.as_str()];
        self.transition(
            self.keys.task(id, &passed.name),
            TaskStatus::Passed.as_str(),
            &from,
            &fields,
        )
        .await
    }

    /// Removes a build that was never accepted, and takes it out of the outbox.
    pub async fn delete_build(&self, id: BuildId) -> RedisResult<()> {
        redis::pipe()
            .del(self.keys.build(id))
            .ignore()
            .zrem(self.keys.outbox(), id.0)
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await
    }

    /// Takes builds `ids` out of the outbox: RabbitMQ has their requests.
    pub async fn outbox_done(&self, ids: &[BuildId]) -> RedisResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<u64> = ids.iter().map(|id| id.0).collect();
        self.conn.clone().zrem(self.keys.outbox(), ids).await
    }

    /// Leaves builds `ids` in the outbox for the relay to publish `after` from now.
    pub async fn outbox_later(&self, ids: &[BuildId], after: Duration) -> RedisResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let due = now_ms() + after.as_millis() as u64;
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(self.keys.outbox()).arg("XX");
        for id in ids {
            zadd.arg(due).arg(id.0);
        }
        zadd.query_async::<()>(&mut self.conn.clone()).await
    }

    /// Claims, for `lease`, up to `count` builds of the outbox that are due, oldest build
    /// first: another bot's relay does not see them until the lease runs out.
    pub async fn outbox_claim(&self, count: usize, lease: Duration) -> RedisResult<Vec<BuildId>> {
        let mut ids = self.claim_due(self.keys.outbox(), count, lease).await?;
        ids.sort();
        Ok(ids)
    }

    /// Claims, for `lease`, up to `count` of the due builds of the sorted set `key`
    /// ([`DUE_CLAIM`]).
    async fn claim_due(
        &self,
        key: String,
        count: usize,
        lease: Duration,
    ) -> RedisResult<Vec<BuildId>> {
        let now = now_ms();
        let ids: Vec<u64> = DUE_CLAIM
            .key(key)
            .arg(now)
            .arg(now + lease.as_millis() as u64)
            .arg(count)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(ids.into_iter().map(BuildId).collect())
    }

    /// When build `id` was accepted, in ms since the Unix epoch.
    pub async fn created_ms(&self, id: BuildId) -> Result<Option<u64>, StoreError> {
        let key = self.keys.build(id);
        let value: Option<String> = self
            .conn
            .clone()
            .hget(&key, BuildField::CreatedMs.name())
            .await?;
        value
            .map(|v| record::build::decode_created_ms(&v).map_err(|e| unreadable(key, e)))
            .transpose()
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> RedisResult<()> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.conn.clone())
            .await
            .map(drop)
    }

    /// The build `id`, if there is one.
    pub async fn build(&self, id: BuildId) -> Result<Option<BuildRecord>, StoreError> {
        Ok(self.build_records(&[id]).await?.pop().flatten())
    }

    /// The records of builds `ids`, in order, `None` for one there is not: one round trip,
    /// and one more for the plans not in memory. A running build's plan read alone is kept
    /// in memory; plans read many at once (a list of recent builds) are not, or they would
    /// push out those of the builds being run, and neither are ended builds' (their events
    /// are over: a page or a card reads one now and then).
    pub async fn build_records(
        &self,
        ids: &[BuildId],
    ) -> Result<Vec<Option<BuildRecord>>, StoreError> {
        if ids.is_empty() {
            // Redis refuses an empty pipeline.
            return Ok(Vec::new());
        }
        let fields: Vec<&str> = BuildField::read().collect();
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HMGET").arg(self.keys.build(*id)).arg(&fields);
        }
        let rows: Vec<Vec<Option<String>>> = pipe.query_async(&mut self.conn.clone()).await?;
        let hashes: Vec<HashMap<String, String>> = rows
            .into_iter()
            .map(|row| {
                fields
                    .iter()
                    .zip(row)
                    .filter_map(|(field, value)| Some(((*field).to_owned(), value?)))
                    .collect()
            })
            .collect();
        // A plan is known by its build and when the build was made: a Redis emptied while
        // the bot runs numbers builds from 1 again.
        let plan_keys: Vec<Option<(BuildId, u64)>> = ids
            .iter()
            .zip(&hashes)
            .map(|(id, h)| {
                if !BuildRecord::has_plan(h) {
                    return Ok(None);
                }
                let created = record::build::created_ms_of(h)
                    .map_err(|e| unreadable(self.keys.build(*id), e))?;
                Ok(Some((*id, created)))
            })
            .collect::<Result<_, StoreError>>()?;
        let mut plans: Vec<Option<Arc<Plan>>> = plan_keys
            .iter()
            .map(|key| self.plans.get(key.as_ref()?))
            .collect();
        let missing: Vec<usize> = (0..ids.len())
            .filter(|i| plan_keys[*i].is_some() && plans[*i].is_none())
            .collect();
        // The plan read alone, and its text's size, to keep if its build runs.
        let mut read_alone = None;
        if !missing.is_empty() {
            let mut pipe = redis::pipe();
            for i in &missing {
                pipe.hget(self.keys.build(ids[*i]), BuildField::Plan.name());
            }
            let texts: Vec<Option<String>> = pipe.query_async(&mut self.conn.clone()).await?;
            let alone = missing.len() == 1;
            for (i, text) in missing.iter().zip(texts) {
                let Some(text) = text else { continue };
                let plan = record::build::decode_plan(&text)
                    .map_err(|e| unreadable(self.keys.build(ids[*i]), e))?;
                if alone {
                    read_alone = Some((*i, text.len()));
                }
                plans[*i] = Some(Arc::new(plan));
            }
        }
        let records = ids
            .iter()
            .zip(hashes)
            .zip(plans)
            .map(|((id, h), plan)| {
                BuildRecord::decode(*id, &h, plan).map_err(|e| unreadable(self.keys.build(*id), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some((i, bytes)) = read_alone
            && let (Some(key), Some(record)) = (plan_keys[i], &records[i])
            && let Some(plan) = record.plan.as_ref().filter(|_| !record.status.is_final())
        {
            self.plans.insert(key, plan.clone(), bytes);
        }
        Ok(records)
    }

    /// What the plans kept in memory weigh, by their texts.
    pub fn plans_kept(&self) -> u64 {
        self.plans.bytes()
    }

    /// Lets the kept plan of `record`'s build go: it has ended.
    pub fn forget_plan(&self, record: &BuildRecord) {
        self.plans.remove(&(record.build.id, record.created_ms));
    }

    /// Up to `count` of `repo`'s newest builds (of the last [`REPO_BUILDS_LISTED`]), newest
    /// first; those expired since are left out.
    pub async fn repo_builds(
        &self,
        repo: &RepoName,
        count: usize,
    ) -> Result<Vec<BuildRecord>, StoreError> {
        let ids: Vec<u64> = self
            .conn
            .clone()
            .zrevrange(self.keys.repo_builds(repo), 0, count as isize - 1)
            .await?;
        let ids: Vec<BuildId> = ids.into_iter().map(BuildId).collect();
        Ok(self
            .build_records(&ids)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Up to `count` of the newest builds, newest first; three round trips at most.
    pub async fn recent_builds(&self, count: u64) -> Result<Vec<BuildRecord>, StoreError> {
        let Some(latest) = self.latest_build_id().await? else {
            return Ok(Vec::new());
        };
        let ids: Vec<BuildId> = (latest.0.saturating_sub(count) + 1..=latest.0)
            .rev()
            .map(BuildId)
            .collect();
        Ok(self
            .build_records(&ids)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Stores a build's plan and its tasks' records, once: planning the same build again
    /// (a redelivered request) finds everything in place and changes nothing. Returns, read
    /// in the same round trip, the build's status and its tasks' records as they now are.
    pub async fn store_plan(
        &self,
        id: BuildId,
        plan: &Plan,
    ) -> Result<(Option<BuildStatus>, Vec<TaskRecord>), StoreError> {
        let mut pipe = redis::pipe();
        let build = self.keys.build(id);
        for (field, value) in record::build::planned(plan) {
            pipe.hset_nx(&build, field, value).ignore();
        }
        // What the build holds (run by hand) is settled from the start: the settle script
        // neither readies nor counts it again.
        let held = plan.held();
        for name in &held {
            pipe.sadd(self.keys.settled(id), *name).ignore();
        }
        for task in &plan.tasks {
            let status = if held.contains(task.name.as_str()) {
                TaskStatus::Manual
            } else if task.needs.is_empty() {
                TaskStatus::Queued
            } else {
                TaskStatus::Waiting
            };
            let key = self.keys.task(id, &task.name);
            for (field, value) in record::task::planned(status) {
                pipe.hset_nx(&key, field, value).ignore();
            }
            pipe.hset_nx(self.keys.pending(id), &task.name, task.needs.len())
                .ignore();
        }
        pipe.hget(&build, BuildField::Status.name());
        for task in &plan.tasks {
            pipe.hgetall(self.keys.task(id, &task.name));
        }
        let mut values: Vec<redis::Value> = pipe.query_async(&mut self.conn.clone()).await?;
        let rows = values.split_off(1);
        let status: Option<String> = match values.pop() {
            Some(value) => redis::from_redis_value(value).map_err(redis::RedisError::from)?,
            None => None,
        };
        let rows = rows
            .into_iter()
            .map(redis::from_redis_value)
            .collect::<Result<Vec<HashMap<String, String>>, _>>()
            .map_err(redis::RedisError::from)?;
        let status = status
            .map(|s| {
                BuildStatus::parse(&s).ok_or_else(|| {
                    let problem = RecordError::Malformed {
                        field: BuildField::Status.name(),
                        value: s,
                        reason: "not a build status".into(),
                    };
                    unreadable(build, problem)
                })
            })
            .transpose()?;
        let names = plan.tasks.iter().map(|t| t.name.as_str());
        Ok((status, self.decode_tasks(id, names, rows)?))
    }

    /// Moves a task to `to` if its status allows it; sets `fields` with it. Returns whether
    /// it moved.
    pub async fn transition_task(
        &self,
        id: BuildId,
        task: &str,
        to: TaskStatus,
        fields: &[(&str, String)],
    ) -> RedisResult<bool> {
        let from = TaskStatus::sources_of(to);
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        self.transition(self.keys.task(id, task), to.as_str(), &from, fields)
            .await
    }

    /// Like [`Store::transition_task`], only if the task is at attempt `attempt`.
    pub async fn transition_attempt(
        &self,
        id: BuildId,
        task: &str,
        attempt: u32,
        to: TaskStatus,
        fields: &[(&str, String)],
    ) -> RedisResult<bool> {
        let from = TaskStatus::sources_of(to);
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let guards = [(TaskField::Attempt.name(), attempt.to_string())];
        self.transition_if(
            self.keys.task(id, task),
            to.as_str(),
            &from,
            &guards,
            fields,
        )
        .await
    }

    /// Ends attempt `attempt` of task `task` as errored with `fields` if it is still running
    /// on `worker`: how the bot takes back an attempt from a worker it no longer hears from.
    pub async fn take_back(
        &self,
        id: BuildId,
        task: &str,
        attempt: u32,
        worker: &str,
        fields: &[(&str, String)],
    ) -> RedisResult<bool> {
        let running = [TaskStatus::Running.as_str()];
        let guards = [
            (TaskField::Attempt.name(), attempt.to_string()),
            (TaskField::Worker.name(), worker.to_owned()),
        ];
        let key = self.keys.task(id, task);
        self.transition_if(key, TaskStatus::Errored.as_str(), &running, &guards, fields)
            .await
    }

    /// Moves a build to `to` if its status allows it; sets `fields` with it.
    pub async fn transition_build(
        &self,
        id: BuildId,
        to: BuildStatus,
        fields: &[(&str, String)],
    ) -> RedisResult<bool> {
        let from = BuildStatus::sources_of(to);
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        self.transition(self.keys.build(id), to.as_str(), &from, fields)
            .await
    }

    async fn transition(
        &self,
        key: String,
        to: &str,
        from: &[&str],
        fields: &[(&str, String)],
    ) -> RedisResult<bool> {
        self.transition_if(key, to, from, &[], fields).await
    }

    /// The compare-and-set, also requiring each of `guards` (field, value) to hold.
    async fn transition_if(
        &self,
        key: String,
        to: &str,
        from: &[&str],
        guards: &[(&str, String)],
        fields: &[(&str, String)],
    ) -> RedisResult<bool> {
        let mut invocation = TRANSITION.key(key);
        invocation.arg(to).arg(from.join(",")).arg(guards.len());
        for (field, value) in guards {
            invocation.arg(*field).arg(value);
        }
        for (field, value) in fields {
            invocation.arg(*field).arg(value);
        }
        let moved: i64 = invocation.invoke_async(&mut self.conn.clone()).await?;
        Ok(moved == 1)
    }

    /// Reopens task `task`, which ended its attempt `attempt` failed or errored, as attempt
    /// `attempt + 1`. Returns whether it moved; a duplicate request finds it moved already.
    pub async fn retry_task(&self, id: BuildId, task: &str, attempt: u32) -> RedisResult<bool> {
        let moved: i64 = RETRY
            .key(self.keys.task(id, task))
            .arg(attempt)
            .arg(TaskField::cleared_on_retry_names())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(moved == 1)
    }

    /// The record of one task.
    pub async fn task(&self, id: BuildId, task: &str) -> Result<Option<TaskRecord>, StoreError> {
        Ok(self.task_records(id, &[task]).await?.pop())
    }

    /// The records of the tasks of `plan`, in plan order.
    pub async fn tasks(&self, id: BuildId, plan: &Plan) -> Result<Vec<TaskRecord>, StoreError> {
        let names: Vec<&str> = plan.tasks.iter().map(|t| t.name.as_str()).collect();
        self.task_records(id, &names).await
    }

    /// The records of the tasks named `names`, in that order; one read round trip.
    pub async fn task_records(
        &self,
        id: BuildId,
        names: &[&str],
    ) -> Result<Vec<TaskRecord>, StoreError> {
        if names.is_empty() {
            // Redis refuses an empty pipeline.
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for name in names {
            pipe.hgetall(self.keys.task(id, name));
        }
        let rows: Vec<HashMap<String, String>> = pipe.query_async(&mut self.conn.clone()).await?;
        self.decode_tasks(id, names.iter().copied(), rows)
    }

    /// Build `id`'s task records from their names and their hashes, in the same order. A
    /// task with no hash reads as [`TaskRecord::not_stored`].
    fn decode_tasks<'a>(
        &self,
        id: BuildId,
        names: impl Iterator<Item = &'a str>,
        rows: Vec<HashMap<String, String>>,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        names
            .zip(rows)
            .map(|(name, h)| match TaskRecord::decode(name, &h) {
                Ok(record) => Ok(record.unwrap_or_else(|| TaskRecord::not_stored(name))),
                Err(problem) => Err(unreadable(self.keys.task(id, name), problem)),
            })
            .collect()
    }

    /// Accounts for the end of `task` once. If it passed, `tasks` are its dependents and
    /// those whose needs are now all met come back as ready; if not, `tasks` are everything
    /// downstream of it, which will never run and are accounted for with it.
    pub async fn settle(
        &self,
        id: BuildId,
        task: &str,
        passed: bool,
        tasks: &[&str],
    ) -> RedisResult<Settled> {
        let mut invocation = SETTLE.key(self.keys.settled(id));
        invocation
            .key(self.keys.pending(id))
            .key(self.keys.build(id))
            .arg(task)
            .arg(if passed { "pass" } else { "stop" });
        for t in tasks {
            invocation.arg(*t);
        }
        let (remaining, ready): (i64, Vec<String>) =
            invocation.invoke_async(&mut self.conn.clone()).await?;
        Ok(Settled { remaining, ready })
    }

    /// True the first time it is called for a build and channel: a message goes out once.
    pub async fn first_notification(
        &self,
        id: BuildId,
        channel: &ChannelName,
    ) -> RedisResult<bool> {
        let options = SetOptions::default()
            .conditional_set(ExistenceCheck::NX)
            .with_expiration(SetExpiry::EX(DELIVERY_MEMORY.as_secs()));
        let set: Option<String> = self
            .conn
            .clone()
            .set_options(self.keys.notified(id, channel), 1, options)
            .await?;
        Ok(set.is_some())
    }

    /// Forgets that a build's message went out to a channel: posting it failed.
    pub async fn forget_notification(&self, id: BuildId, channel: &ChannelName) -> RedisResult<()> {
        let _: usize = self
            .conn
            .clone()
            .del(self.keys.notified(id, channel))
            .await?;
        Ok(())
    }

    /// The last `count` lines of one task's log, in order, and how many lines it has: one
    /// round trip, whatever the log's length.
    pub async fn log_tail(
        &self,
        id: BuildId,
        task: &str,
        count: usize,
    ) -> RedisResult<(Vec<String>, usize)> {
        let key = self.keys.logs(id, task);
        let (newest, total): (redis::streams::StreamRangeReply, usize) = redis::pipe()
            .xrevrange_count(&key, "+", "-", count)
            .xlen(&key)
            .query_async(&mut self.conn.clone())
            .await?;
        let mut lines: Vec<String> = newest.ids.iter().filter_map(shown_line).collect();
        lines.reverse();
        Ok((lines, total))
    }

    /// Every log line of one task, in order.
    pub async fn log_lines(&self, id: BuildId, task: &str) -> RedisResult<Vec<String>> {
        let reply: redis::streams::StreamRangeReply = self
            .conn
            .clone()
            .xrange_all(self.keys.logs(id, task))
            .await?;
        Ok(reply.ids.iter().filter_map(shown_line).collect())
    }

    /// Every log line of one task with its entry's id, in order.
    pub async fn log_entries(&self, id: BuildId, task: &str) -> RedisResult<Vec<(String, String)>> {
        let reply: redis::streams::StreamRangeReply = self
            .conn
            .clone()
            .xrange_all(self.keys.logs(id, task))
            .await?;
        Ok(entries(&reply))
    }

    /// The first `count` log lines of one task with their entries' ids, in order.
    pub async fn log_head(
        &self,
        id: BuildId,
        task: &str,
        count: usize,
    ) -> RedisResult<Vec<(String, String)>> {
        let reply: redis::streams::StreamRangeReply = self
            .conn
            .clone()
            .xrange_count(self.keys.logs(id, task), "-", "+", count)
            .await?;
        Ok(entries(&reply))
    }

    /// The last `count` log lines of one task with their entries' ids, in order, and how
    /// many entries its log has then (read together: a running task's log grows).
    pub async fn log_end(
        &self,
        id: BuildId,
        task: &str,
        count: usize,
    ) -> RedisResult<(Vec<(String, String)>, usize)> {
        let key = self.keys.logs(id, task);
        let (newest, total): (redis::streams::StreamRangeReply, usize) = redis::pipe()
            .atomic()
            .xrevrange_count(&key, "+", "-", count)
            .xlen(&key)
            .query_async(&mut self.conn.clone())
            .await?;
        let mut lines = entries(&newest);
        lines.reverse();
        Ok((lines, total))
    }

    /// A connection of its own, for [`Store::read_log`]: a blocked read holds up every other
    /// command on its connection, so it must not be the shared one.
    pub async fn log_reader(&self) -> RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new().set_response_timeout(Some(LOG_WAIT * 4));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// At most [`LOG_READ_COUNT`] of the task's log lines after the entry `after` (`0-0` for
    /// the first), on `conn`, and the last one's entry id. With `wait`, an empty answer
    /// comes only after [`LOG_WAIT`] without a new line.
    pub async fn read_log(
        &self,
        conn: &mut MultiplexedConnection,
        id: BuildId,
        task: &str,
        after: &str,
        wait: bool,
    ) -> RedisResult<(Vec<String>, Option<String>)> {
        let mut options = StreamReadOptions::default().count(LOG_READ_COUNT);
        if wait {
            options = options.block(LOG_WAIT.as_millis() as usize);
        }
        let reply: Option<StreamReadReply> = conn
            .xread_options(&[self.keys.logs(id, task)], &[after], &options)
            .await?;
        let entries = reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .collect::<Vec<_>>();
        let last = entries.last().map(|e| e.id.clone());
        let lines = entries.iter().filter_map(shown_line).collect();
        Ok((lines, last))
    }
}

/// The lines of `reply`'s entries, with their ids.
fn entries(reply: &redis::streams::StreamRangeReply) -> Vec<(String, String)> {
    reply
        .ids
        .iter()
        .filter_map(|e| Some((e.id.clone(), shown_line(e)?)))
        .collect()
}

/// A log entry's line as it is shown ([`kiln_shared::log_line`]).
fn shown_line(entry: &redis::streams::StreamId) -> Option<String> {
    let line: String = entry.get("line")?;
    let fd: String = entry.get("fd").unwrap_or_default();
    Some(kiln_shared::log_line::shown(&fd, &line))
}

/// What [`Store::create_build`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// Stored the build, numbered so.
    New(Box<BuildRequested>),
    /// Stored nothing: the delivery was seen before, and became this build.
    Seen(BuildId),
}

/// The namespace of the deliveries whose comment's command was answered, beside `forge`'s
/// own.
fn answered(forge: &str) -> String {
    format!("{forge}.answered")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scripts that name fields themselves name the codec's.
    #[test]
    fn the_scripts_name_the_codecs_fields() {
        let remaining = format!("'{}'", BuildField::Remaining.name());
        assert_eq!(SETTLE_SCRIPT.matches(&remaining).count(), 2);
        for field in [TaskField::Status, TaskField::Attempt] {
            let quoted = format!("'{}'", field.name());
            assert_eq!(RETRY_SCRIPT.matches(&quoted).count(), 2, "{field:?}");
        }
        for status in [TaskStatus::Failed, TaskStatus::Errored, TaskStatus::Queued] {
            let quoted = format!("'{}'", status.as_str());
            assert!(RETRY_SCRIPT.contains(&quoted), "{status}");
        }
    }
}

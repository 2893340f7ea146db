//! The Redis key layout that the bot and the workers share, and the one script both use to
//! move a status.
//!
//! This module only names keys and holds script text; it does no I/O. Every key starts with
//! the installation's prefix (`kiln` by default) so tests isolate themselves with their own.

use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::build::BuildId;
use crate::ident::{BranchName, ChannelName, CommitId, RepoName};
use crate::lease::LeaseId;
use crate::promotion::PromotionId;

/// Sets a hash's `status` field to `ARGV[1]` only if it is currently one of the
/// comma-separated `ARGV[2]` and each of the `ARGV[3]` guards that follow (field, value
/// pairs) holds (a field the hash does not have reads as empty); then sets the field/value
/// pairs after them. Returns 1 if the status moved, 0 if not (the key missing counts as
/// not).
///
/// This compare-and-set is what makes every consumer idempotent: a duplicate or late message
/// finds the status already moved and changes nothing. Guards are how a task's attempt and
/// worker (and the worker's claim) are checked: a job of an attempt that was superseded by a
/// retry, or a result from a worker whose attempt was taken back, changes nothing.
///
/// The script names the `status` field itself, as every record with a status names it
/// (builds, tasks, promotions); a test in [`crate::record`] checks that it is the codecs'.
pub const STATUS_TRANSITION_SCRIPT: &str = r"
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return 0 end
local first = 4 + 2 * tonumber(ARGV[3])
for i = 4, first - 1, 2 do
  if (redis.call('HGET', KEYS[1], ARGV[i]) or '') ~= ARGV[i + 1] then return 0 end
end
for allowed in string.gmatch(ARGV[2], '[^,]+') do
  if allowed == current then
    redis.call('HSET', KEYS[1], 'status', ARGV[1])
    for i = first, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
    return 1
  end
end
return 0
";

/// Records what became of a lease's environment, once: sets field `ARGV[1]` (`details`, how
/// to reach it, or `failure`, why it could not start) of the lease's record to `ARGV[2]`
/// only while the lease runs and neither is set yet. Returns 1 if it was set, 0 if not: the
/// lease ended meanwhile (its container is then the worker's to remove), or a copy of the
/// request was reported already.
pub const ENVIRONMENT_REPORT_SCRIPT: &str = r"
if redis.call('HEXISTS', KEYS[1], 'pool') == 0 then return 0 end
local details = redis.call('HGET', KEYS[1], 'details')
local failure = redis.call('HGET', KEYS[1], 'failure')
if (details and details ~= '') or (failure and failure ~= '') then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
";

/// Makes the installation's [`TaskNames`] once: if `KEYS[1]` (a hash) has no `secret`, sets
/// it to `ARGV[1]` and `from` to the build number after the current one (`KEYS[2]`, the
/// build sequence); returns the hash's `secret` and `from`. Every bot runs it, so the first
/// one's values stay.
pub const TASK_NAMES_SCRIPT: &str = r"
if redis.call('HEXISTS', KEYS[1], 'secret') == 0 then
  local last = tonumber(redis.call('GET', KEYS[2]) or '0')
  redis.call('HSET', KEYS[1], 'secret', ARGV[1], 'from', last + 1)
end
return redis.call('HMGET', KEYS[1], 'secret', 'from')
";

/// What makes the names of a task's record and log unguessable: an HMAC of the build and
/// task under the installation's secret, which only the bots read. A worker learns one
/// task's names from its job and has no `KEYS` or `SCAN`, so its credentials, which may
/// write any key of that shape, cannot name another task's. Builds numbered before `from`
/// (made before names had a secret) keep their plain names.
#[derive(Clone, PartialEq, Eq)]
pub struct TaskNames {
    secret: Arc<[u8]>,
    from: BuildId,
}

impl std::fmt::Debug for TaskNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskNames")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl TaskNames {
    pub fn new(secret: &[u8], from: BuildId) -> Self {
        Self {
            secret: secret.into(),
            from,
        }
    }

    /// The unguessable part of the names of build `id`'s `task` (32 hex digits), or none
    /// for a build numbered before names had one.
    pub fn tag(&self, id: BuildId, task: &str) -> Option<String> {
        if id < self.from {
            return None;
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key");
        mac.update(id.0.to_string().as_bytes());
        mac.update(b"\0");
        mac.update(task.as_bytes());
        let digest = mac.finalize().into_bytes();
        Some(hex::encode(&digest[..16]))
    }
}

/// Names of one installation's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
    /// The bots': what names a task's record and log. A worker has none; its job carries
    /// its task's tag.
    names: Option<TaskNames>,
}

impl Default for Keys {
    fn default() -> Self {
        Self::new("kiln")
    }
}

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            names: None,
        }
    }

    /// These keys, naming tasks' records and logs with `names`.
    pub fn with_names(self, names: TaskNames) -> Self {
        Self {
            names: Some(names),
            ..self
        }
    }

    /// The hash holding the secret of [`TaskNames`] and the first build it names; only the
    /// bots may read it.
    pub fn task_names(&self) -> String {
        format!("{}:task-names", self.prefix)
    }

    /// The unguessable part of the names of build `id`'s `task`: none without
    /// [`TaskNames`] or for a build numbered before them.
    pub fn key_tag(&self, id: BuildId, task: &str) -> Option<String> {
        self.names.as_ref()?.tag(id, task)
    }

    /// The key the bots sign web sessions' cookies with (string, made once by the first bot).
    pub fn web_key(&self) -> String {
        format!("{}:web:key", self.prefix)
    }

    /// One signed-in reader's session (string: JSON), which expires with it.
    pub fn web_session(&self, id: &str) -> String {
        format!("{}:web:session:{id}", self.prefix)
    }

    /// A repository's newest builds (sorted set of build ids), for its page.
    pub fn repo_builds(&self, repo: &RepoName) -> String {
        format!("{}:repo:{}:builds", self.prefix, repo.to_ascii_lowercase())
    }

    /// The counter build ids are drawn from.
    pub fn build_sequence(&self) -> String {
        format!("{}:build:seq", self.prefix)
    }

    /// A build's record (hash): repository, commit, status, plan.
    pub fn build(&self, id: BuildId) -> String {
        format!("{}{id}", self.build_prefix())
    }

    /// What every build's record key starts with, for the script that numbers builds.
    pub fn build_prefix(&self) -> String {
        format!("{}:build:", self.prefix)
    }

    /// One task's record (hash): status, attempt, worker, exit code.
    pub fn task(&self, id: BuildId, task: &str) -> String {
        self.task_tagged(id, task, self.key_tag(id, task).as_deref())
    }

    /// One task's record, named with `tag` (a job's): how a worker names it.
    pub fn task_tagged(&self, id: BuildId, task: &str, tag: Option<&str>) -> String {
        match tag {
            Some(tag) => format!("{}:build:{id}:task:{task}:{tag}", self.prefix),
            None => format!("{}:build:{id}:task:{task}", self.prefix),
        }
    }

    /// The tasks whose end the scheduler has already accounted for (set).
    pub fn settled(&self, id: BuildId) -> String {
        format!("{}:build:{id}:settled", self.prefix)
    }

    /// For each task, how many of the tasks it needs have not passed yet (hash).
    pub fn pending(&self, id: BuildId) -> String {
        format!("{}:build:{id}:pending", self.prefix)
    }

    /// What subscribers reported of a build (hash: reporter to report).
    pub fn reports(&self, id: BuildId) -> String {
        format!("{}:build:{id}:reports", self.prefix)
    }

    /// Marks that a build's final message went out to a channel, so it goes out once.
    pub fn notified(&self, id: BuildId, channel: &ChannelName) -> String {
        format!("{}:build:{id}:notified:{channel}", self.prefix)
    }

    /// One task's log lines (stream).
    pub fn logs(&self, id: BuildId, task: &str) -> String {
        self.logs_tagged(id, task, self.key_tag(id, task).as_deref())
    }

    /// One task's log lines, named with `tag` (a job's): how a worker names them.
    pub fn logs_tagged(&self, id: BuildId, task: &str, tag: Option<&str>) -> String {
        match tag {
            Some(tag) => format!("{}:logs:{id}:{task}:{tag}", self.prefix),
            None => format!("{}:logs:{id}:{task}", self.prefix),
        }
    }

    /// The card of a build in one chat channel: the id of the message that is edited as the
    /// build runs.
    pub fn card(&self, id: BuildId, channel: &ChannelName) -> String {
        format!("{}:build:{id}:card:{channel}", self.prefix)
    }

    /// The channels a build was asked for in, which follow it (set).
    pub fn build_followers(&self, id: BuildId) -> String {
        format!("{}:build:{id}:followers", self.prefix)
    }

    /// The builds whose cards, notifications or statuses may not all be out yet (set): a
    /// restarted bot takes them up again.
    pub fn cards_pending(&self) -> String {
        format!("{}:cards:pending", self.prefix)
    }

    /// The channels following one repository (hash: subscription field to subscription).
    pub fn subscriptions(&self, repo: &RepoName) -> String {
        format!(
            "{}:subscriptions:{}",
            self.prefix,
            repo.to_ascii_lowercase()
        )
    }

    /// The repositories one channel follows (set).
    pub fn channel_subscriptions(&self, channel: &ChannelName) -> String {
        format!("{}:channel:{channel}:subscriptions", self.prefix)
    }

    /// The workers' presence (hash: worker name to what it last said of itself).
    pub fn workers(&self) -> String {
        format!("{}:workers", self.prefix)
    }

    /// Every command anyone gave, and what came of it (stream).
    pub fn audit(&self) -> String {
        format!("{}:audit", self.prefix)
    }

    /// The last promotion number handed out (integer).
    pub fn promotion_sequence(&self) -> String {
        format!("{}:promotion:seq", self.prefix)
    }

    /// A promotion's record (hash).
    pub fn promotion(&self, id: PromotionId) -> String {
        format!("{}:promotion:{id}", self.prefix)
    }

    /// A promotion's approvals (hash: approver to `<milliseconds> <name>`).
    pub fn promotion_approvals(&self, id: PromotionId) -> String {
        format!("{}:promotion:{id}:approvals", self.prefix)
    }

    /// The promotion that holds a repository (string, with an expiry): one at a time.
    pub fn promoting(&self, repo: &RepoName) -> String {
        format!("{}:promoting:{}", self.prefix, repo.to_ascii_lowercase())
    }

    /// The commits Kiln promoted in a repository, newest first (list): where rollbacks go.
    pub fn promoted(&self, repo: &RepoName) -> String {
        format!("{}:promoted:{}", self.prefix, repo.to_ascii_lowercase())
    }

    /// A push a promotion made and builds itself, so the forge's webhook for it builds
    /// nothing (string: the promotion id, with an expiry).
    pub fn pushed(&self, repo: &RepoName, branch: &BranchName, commit: &CommitId) -> String {
        format!(
            "{}:pushed:{}:{branch}:{commit}",
            self.prefix,
            repo.to_ascii_lowercase()
        )
    }

    /// The installation's prefix, which its containers' names start with too.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The last lease number handed out (integer).
    pub fn lease_sequence(&self) -> String {
        format!("{}:lease:seq", self.prefix)
    }

    /// A lease's record (hash).
    pub fn lease(&self, id: LeaseId) -> String {
        format!("{}{id}", self.lease_prefix())
    }

    /// What every lease's record key starts with, for the script that numbers leases.
    pub fn lease_prefix(&self) -> String {
        format!("{}:lease:", self.prefix)
    }

    /// Set (with an expiry) once a worker has removed the environment of a lease that
    /// ended: `env release` waits for it.
    pub fn lease_gone(&self, id: LeaseId) -> String {
        format!("{}:lease-gone:{id}", self.prefix)
    }

    /// A pool's taken slots (hash: slot number to lease id).
    pub fn pool_slots(&self, pool: &str) -> String {
        format!("{}:pool:{pool}:slots", self.prefix)
    }

    /// The tasks waiting for a slot of a pool (list of JSON `{build, task, attempt}`).
    pub fn pool_waiting(&self, pool: &str) -> String {
        format!("{}:pool:{pool}:waiting", self.prefix)
    }

    /// The pools tasks have waited in line for (set): the concurrency groups, which no
    /// configuration names, are woken from it.
    pub fn waited_pools(&self) -> String {
        format!("{}:pools:waited", self.prefix)
    }

    /// The lease one attempt of a task holds in a pool (string: the lease id).
    pub fn task_lease(&self, id: BuildId, task: &str, attempt: u32, pool: &str) -> String {
        format!(
            "{}:build:{id}:task:{task}:{attempt}:lease:{pool}",
            self.prefix
        )
    }

    /// Every lease, by when it ends (sorted set of lease ids, scored in milliseconds).
    pub fn leases(&self) -> String {
        format!("{}:leases", self.prefix)
    }

    /// The environments a branch deployed (hash: environment name to what deployed it).
    pub fn environments(&self, repo: &RepoName, branch: &BranchName) -> String {
        format!(
            "{}:environments:{}:{branch}",
            self.prefix,
            repo.to_ascii_lowercase()
        )
    }

    /// Each branch of a repository Kiln was told of by a push, and the newest commit a
    /// push's build of it was accepted for (hash: branch to commit id): what reconciliation
    /// compares the forge's branch heads with.
    pub fn heads(&self, repo: &RepoName) -> String {
        format!("{}:heads:{}", self.prefix, repo.to_ascii_lowercase())
    }

    /// The latest due time of a repository's schedule that was built (string, ms since the
    /// Unix epoch).
    pub fn schedule(&self, repo: &RepoName, name: &str) -> String {
        format!(
            "{}:schedule:{}:{name}",
            self.prefix,
            repo.to_ascii_lowercase()
        )
    }

    /// The newest build when a branch last went (string, with an expiry): a build of it
    /// started before then, ending later, deploys nothing that would never be stopped.
    pub fn branch_gone(&self, repo: &RepoName, branch: &BranchName) -> String {
        format!(
            "{}:gone:{}:{branch}",
            self.prefix,
            repo.to_ascii_lowercase()
        )
    }

    /// The outbox (sorted set): the builds accepted whose request RabbitMQ has not yet
    /// confirmed, each scored with when (ms since the Unix epoch) the relay may publish it.
    pub fn outbox(&self) -> String {
        format!("{}:outbox", self.prefix)
    }

    /// The ended builds whose logs are to be archived and whose records are to expire
    /// (sorted set), each scored with when (ms since the Unix epoch) it is due.
    pub fn retention_due(&self) -> String {
        format!("{}:retention:due", self.prefix)
    }

    /// Set once every build of the installation has been looked at for a due note: builds
    /// that ended before retention existed have none.
    pub fn retention_swept(&self) -> String {
        format!("{}:retention:swept", self.prefix)
    }

    /// A forge delivery already accepted, for deduplication; holds the build id.
    pub fn delivery(&self, forge: &str, delivery: &str) -> String {
        format!("{}:delivery:{forge}:{delivery}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_prefix() {
        let keys = Keys::new("t9");
        let id = BuildId(4);
        assert_eq!(keys.build(id), "t9:build:4");
        assert_eq!(keys.build(id), format!("{}4", keys.build_prefix()));
        assert_eq!(keys.task(id, "unit"), "t9:build:4:task:unit");
        assert_eq!(keys.logs(id, "unit"), "t9:logs:4:unit");
        assert_eq!(keys.delivery("github", "abc"), "t9:delivery:github:abc");
        assert_eq!(
            keys.subscriptions(&"Acme/API".into()),
            "t9:subscriptions:acme/api"
        );
        assert_eq!(
            keys.card(id, &"slack:C1".into()),
            "t9:build:4:card:slack:C1"
        );
        assert_eq!(Keys::default().build_sequence(), "kiln:build:seq");
        assert_eq!(keys.lease(LeaseId(3)), "t9:lease:3");
        assert_eq!(keys.lease_gone(LeaseId(3)), "t9:lease-gone:3");
    }

    #[test]
    fn tasks_of_builds_from_the_first_named_one_get_names_only_the_secret_gives() {
        let keys = Keys::new("t9").with_names(TaskNames::new(b"secret", BuildId(10)));
        assert_eq!(keys.task(BuildId(9), "unit"), "t9:build:9:task:unit");
        assert_eq!(keys.logs(BuildId(9), "unit"), "t9:logs:9:unit");
        let tag = keys
            .key_tag(BuildId(10), "unit")
            .expect("a tag from build 10");
        assert_eq!(tag.len(), 32);
        assert_eq!(
            keys.task(BuildId(10), "unit"),
            format!("t9:build:10:task:unit:{tag}")
        );
        assert_eq!(
            keys.logs(BuildId(10), "unit"),
            format!("t9:logs:10:unit:{tag}")
        );
        // What a worker given the job's tag names is the bots' name.
        let worker = Keys::new("t9");
        assert_eq!(
            worker.task_tagged(BuildId(10), "unit", Some(&tag)),
            keys.task(BuildId(10), "unit")
        );
        // Another task, build or secret gives another tag.
        let other = Keys::new("t9").with_names(TaskNames::new(b"other", BuildId(10)));
        for different in [
            keys.key_tag(BuildId(10), "lint"),
            keys.key_tag(BuildId(11), "unit"),
            keys.key_tag(BuildId(1), "0unit"),
            other.key_tag(BuildId(10), "unit"),
        ] {
            assert_ne!(different.as_deref(), Some(tag.as_str()));
        }
        assert!(!format!("{keys:?}").contains("secret"), "{keys:?}");
    }
}

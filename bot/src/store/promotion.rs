//! What promotions keep: each promotion's record and approvals, the slot that lets one
//! promotion per repository be in flight, the commits Kiln promoted (where rollbacks go), and
//! the pushes Kiln built itself.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use kiln_shared::build::BuildId;
use kiln_shared::ident::{BranchName, ChannelName, CommitId, RepoName};
use kiln_shared::promotion::{PromotionId, PromotionStatus, approvals_since};
use redis::{AsyncCommands, RedisResult, Script};

use super::{Store, now_ms};

/// How long a push Kiln made is remembered: a forge's webhook for it arrives well within.
const PUSH_MEMORY: Duration = Duration::from_secs(60 * 60);

/// How many promoted commits a repository's history keeps.
const PROMOTED_KEPT: isize = 100;

/// Takes the repository's promotion slot and records the promotion, unless another holds
/// the slot: then returns its id.
static BEGIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: slot, record. ARGV: id, slot lifetime (ms), then the record's field/value pairs.
local holder = redis.call('GET', KEYS[1])
if holder then return holder end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], unpack(ARGV, 3))
return false
",
    )
});

/// Records an approval of a promotion still awaiting them and holding its slot, counts the
/// approvals given since the cutoff, and moves the promotion to `pushing` when there are
/// enough: exactly one approval is the one that completes it.
static APPROVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: record, approvals, slot. ARGV: id, approver, '<ms> <name>', cutoff (ms), required,
-- slot lifetime (ms).
if redis.call('HGET', KEYS[1], 'status') ~= 'awaiting_approval' then return {'ended', 0} end
if redis.call('GET', KEYS[3]) ~= ARGV[1] then
  redis.call('HSET', KEYS[1], 'status', 'lapsed')
  return {'lapsed', 0}
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[6])
local count = 0
local all = redis.call('HGETALL', KEYS[2])
for i = 2, #all, 2 do
  local at = tonumber(string.match(all[i], '^%d+'))
  if at and at >= tonumber(ARGV[4]) then count = count + 1 end
end
if count >= tonumber(ARGV[5]) then
  redis.call('HSET', KEYS[1], 'status', 'pushing')
  return {'ready', count}
end
return {'counted', count}
",
    )
});

/// Frees a repository's promotion slot if promotion `ARGV[1]` still holds it.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// One approval of a promotion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// Who, as permissions know them.
    pub by: String,
    pub name: String,
    pub at_ms: u64,
}

/// A promotion as stored.
#[derive(Debug, Clone)]
pub struct PromotionRecord {
    pub id: PromotionId,
    pub repo: RepoName,
    pub clone_url: String,
    /// The branch moved, and the commit it is moved to.
    pub to: BranchName,
    pub commit: CommitId,
    /// Where the branch was when the promotion was asked for.
    pub previous: Option<CommitId>,
    pub rollback: bool,
    /// The build that passed the commit's gates.
    pub build: BuildId,
    /// Who asked, as permissions know them, and their name.
    pub requester: String,
    pub requester_name: String,
    /// The chat channel it was asked in, which follows the build the move starts.
    pub channel: Option<ChannelName>,
    pub required: u32,
    pub status: PromotionStatus,
    /// Why it was rejected or failed.
    pub detail: Option<String>,
    /// The build the move started.
    pub started: Option<BuildId>,
    pub approvals: Vec<Approval>,
    /// Its card's message in `channel`, once posted.
    pub card: Option<String>,
}

/// What came of an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approved {
    /// Counted; this many approvals count now.
    Counted(u32),
    /// Counted, and the promotion has what it needs: the caller pushes.
    Ready(u32),
    /// The promotion is over.
    Ended,
    /// The promotion waited too long and lost its slot.
    Lapsed,
}

impl Store {
    /// A new promotion id.
    pub async fn next_promotion_id(&self) -> RedisResult<PromotionId> {
        let id: u64 = self
            .conn
            .clone()
            .incr(self.keys.promotion_sequence(), 1)
            .await?;
        Ok(PromotionId(id))
    }

    /// Records `promotion`, awaiting approval, if no other promotion of its repository is
    /// in flight; otherwise the one that is. The slot lapses after `ttl` without approvals.
    pub async fn begin_promotion(
        &self,
        promotion: &PromotionRecord,
        ttl: Duration,
    ) -> RedisResult<Result<(), PromotionId>> {
        let p = promotion;
        let fields = [
            ("repo", p.repo.to_string()),
            ("clone_url", p.clone_url.clone()),
            ("to", p.to.to_string()),
            ("commit", p.commit.to_string()),
            ("previous", p.previous.clone().unwrap_or_default().into()),
            ("rollback", if p.rollback { "1" } else { "" }.to_owned()),
            ("build", p.build.0.to_string()),
            ("requester", p.requester.clone()),
            ("requester_name", p.requester_name.clone()),
            ("channel", p.channel.clone().unwrap_or_default().into()),
            ("required", p.required.to_string()),
            (
                "status",
                PromotionStatus::AwaitingApproval.as_str().to_owned(),
            ),
            ("created_ms", now_ms().to_string()),
        ];
        let mut invocation = BEGIN.key(self.keys.promoting(&p.repo));
        invocation
            .key(self.keys.promotion(p.id))
            .arg(p.id.0)
            .arg(millis(ttl));
        for (field, value) in fields {
            invocation.arg(field).arg(value);
        }
        let holder: Option<u64> = invocation.invoke_async(&mut self.conn.clone()).await?;
        Ok(holder.map_or(Ok(()), |id| Err(PromotionId(id))))
    }

    /// Notes the message that is a promotion's card.
    pub async fn promotion_card(&self, id: PromotionId, message: &str) -> RedisResult<()> {
        let _: usize = self
            .conn
            .clone()
            .hset(self.keys.promotion(id), "card", message)
            .await?;
        Ok(())
    }

    /// The promotion in flight in `repo`, if one is.
    pub async fn promoting(&self, repo: &RepoName) -> RedisResult<Option<PromotionId>> {
        let id: Option<u64> = self.conn.clone().get(self.keys.promoting(repo)).await?;
        Ok(id.map(PromotionId))
    }

    /// The promotion `id`, with its approvals, if there is one.
    pub async fn promotion(&self, id: PromotionId) -> RedisResult<Option<PromotionRecord>> {
        let (mut h, approvals): (HashMap<String, String>, HashMap<String, String>) = redis::pipe()
            .hgetall(self.keys.promotion(id))
            .hgetall(self.keys.promotion_approvals(id))
            .query_async(&mut self.conn.clone())
            .await?;
        let Some(status) = h.get("status").and_then(|s| PromotionStatus::parse(s)) else {
            return Ok(None);
        };
        let mut take = |field: &str| h.remove(field).unwrap_or_default();
        let optional = |text: String| Some(text).filter(|t| !t.is_empty());
        let mut approvals: Vec<Approval> = approvals
            .into_iter()
            .map(|(by, value)| {
                let (at, name) = value.split_once(' ').unwrap_or((&value, ""));
                Approval {
                    name: name.to_owned(),
                    at_ms: at.parse().unwrap_or(0),
                    by,
                }
            })
            .collect();
        approvals.sort_by_key(|a| a.at_ms);
        Ok(Some(PromotionRecord {
            id,
            repo: take("repo").into(),
            clone_url: take("clone_url"),
            to: take("to").into(),
            commit: take("commit").into(),
            previous: optional(take("previous")).map(CommitId::from),
            rollback: !take("rollback").is_empty(),
            build: BuildId(take("build").parse().unwrap_or(0)),
            requester: take("requester"),
            requester_name: take("requester_name"),
            channel: optional(take("channel")).map(ChannelName::from),
            required: take("required").parse().unwrap_or(0),
            status,
            detail: optional(take("detail")),
            started: take("started").parse().ok().map(BuildId),
            card: optional(take("card")),
            approvals,
        }))
    }

    /// Records `by`'s approval of `promotion` and says whether it now has enough: approvals
    /// older than `ttl` no longer count.
    pub async fn approve_promotion(
        &self,
        promotion: &PromotionRecord,
        by: &str,
        name: &str,
        ttl: Duration,
    ) -> RedisResult<Approved> {
        let now = now_ms();
        let id = promotion.id;
        let (what, count): (String, u32) = APPROVE
            .key(self.keys.promotion(id))
            .key(self.keys.promotion_approvals(id))
            .key(self.keys.promoting(&promotion.repo))
            .arg(id.0)
            .arg(by)
            .arg(format!("{now} {name}"))
            .arg(approvals_since(now, ttl))
            .arg(promotion.required)
            .arg(millis(ttl))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(match what.as_str() {
            "ready" => Approved::Ready(count),
            "counted" => Approved::Counted(count),
            "lapsed" => Approved::Lapsed,
            _ => Approved::Ended,
        })
    }

    /// Moves a promotion from awaiting approval (needing none) to pushing; false if it had
    /// moved already.
    pub async fn start_pushing(&self, id: PromotionId) -> RedisResult<bool> {
        self.transition(
            self.keys.promotion(id),
            PromotionStatus::Pushing.as_str(),
            &[PromotionStatus::AwaitingApproval.as_str()],
            &[],
        )
        .await
    }

    /// Ends a pushing promotion as `status`, with `detail` (why) or the build it `started`,
    /// and frees its repository's slot.
    pub async fn end_promotion(
        &self,
        promotion: &PromotionRecord,
        status: PromotionStatus,
        detail: Option<&str>,
        started: Option<BuildId>,
    ) -> RedisResult<()> {
        let mut fields = vec![("ended_ms", now_ms().to_string())];
        if let Some(detail) = detail {
            fields.push(("detail", detail.to_owned()));
        }
        if let Some(build) = started {
            fields.push(("started", build.0.to_string()));
        }
        let from = [PromotionStatus::Pushing.as_str()];
        self.transition(
            self.keys.promotion(promotion.id),
            status.as_str(),
            &from,
            &fields,
        )
        .await?;
        let _: i64 = RELEASE
            .key(self.keys.promoting(&promotion.repo))
            .arg(promotion.id.0)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// The commits Kiln promoted in `repo`, newest first.
    pub async fn promoted(&self, repo: &RepoName) -> RedisResult<Vec<CommitId>> {
        let commits: Vec<String> = self
            .conn
            .clone()
            .lrange(self.keys.promoted(repo), 0, PROMOTED_KEPT - 1)
            .await?;
        Ok(commits.into_iter().map(CommitId::from).collect())
    }

    /// Records that Kiln moved `repo`'s branch to `commit`: onto the history, or for a
    /// rollback, off it.
    pub async fn record_promoted(
        &self,
        repo: &RepoName,
        commit: &CommitId,
        rollback: bool,
    ) -> RedisResult<()> {
        let key = self.keys.promoted(repo);
        let mut pipe = redis::pipe();
        pipe.atomic();
        if rollback {
            pipe.lpop(&key, None).ignore();
        } else {
            pipe.lpush(&key, commit.as_str())
                .ignore()
                .ltrim(&key, 0, PROMOTED_KEPT - 1)
                .ignore();
        }
        pipe.query_async(&mut self.conn.clone()).await
    }

    /// Notes, before it pushes, that `promotion` pushes `commit` to `repo`'s `branch` and
    /// builds it itself, so the forge's webhook for that push builds nothing.
    pub async fn mark_push(
        &self,
        repo: &RepoName,
        branch: &BranchName,
        commit: &CommitId,
        promotion: PromotionId,
    ) -> RedisResult<()> {
        self.conn
            .clone()
            .set_ex(
                self.keys.pushed(repo, branch, commit),
                promotion.0,
                PUSH_MEMORY.as_secs(),
            )
            .await
    }

    /// Forgets a push that did not happen.
    pub async fn unmark_push(
        &self,
        repo: &RepoName,
        branch: &BranchName,
        commit: &CommitId,
    ) -> RedisResult<()> {
        let _: usize = self
            .conn
            .clone()
            .del(self.keys.pushed(repo, branch, commit))
            .await?;
        Ok(())
    }

    /// The promotion that pushed `commit` to `repo`'s `branch` lately, if one did; asked
    /// once per push (a later push of the same commit, by hand, is built).
    pub async fn pushed_by(
        &self,
        repo: &RepoName,
        branch: &BranchName,
        commit: &CommitId,
    ) -> RedisResult<Option<PromotionId>> {
        let id: Option<u64> = self
            .conn
            .clone()
            .get_del(self.keys.pushed(repo, branch, commit))
            .await?;
        Ok(id.map(PromotionId))
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

//! What leases keep: each lease's record, each pool's taken slots, and every lease by when it
//! ends (what the reaper reads). Taking a slot and giving it back are Lua scripts, so two
//! requests for the last slot never both get it.

use std::collections::HashMap;
use std::sync::LazyLock;

use kiln_shared::build::BuildId;
use kiln_shared::ident::ChannelName;
use kiln_shared::lease::LeaseId;
use kiln_shared::plan::PlannedTask;
use redis::{AsyncCommands, RedisResult, Script};

use super::{BuildRecord, Store};

/// Takes the lowest free slot of a pool, numbers the lease and records it; returns the slot
/// and the lease's number, or nothing when every slot is taken (and no number is used up).
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: pool slots, lease sequence, leases by end, the holder's key (a task attempt's, or
-- none: ''). ARGV: capacity, end (ms), the lease key prefix, then the record's field/value
-- pairs. A holder that holds a lease in the pool already gets that one back.
if KEYS[4] ~= '' then
  local held = redis.call('GET', KEYS[4])
  if held and redis.call('EXISTS', ARGV[3] .. held) == 1 then
    return {tonumber(redis.call('HGET', ARGV[3] .. held, 'slot')), tonumber(held)}
  end
end
for slot = 0, tonumber(ARGV[1]) - 1 do
  if redis.call('HEXISTS', KEYS[1], slot) == 0 then
    local id = redis.call('INCR', KEYS[2])
    redis.call('HSET', KEYS[1], slot, id)
    redis.call('HSET', ARGV[3] .. id, 'slot', slot, unpack(ARGV, 4))
    redis.call('ZADD', KEYS[3], ARGV[2], id)
    if KEYS[4] ~= '' then redis.call('SET', KEYS[4], id, 'PXAT', ARGV[2]) end
    return {slot, id}
  end
end
return false
",
    )
});

/// Ends a lease: frees its slot, forgets it; 1 for the caller that ended it, 0 if it had
/// ended already.
static GIVE_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: lease record, leases by end, pool slots. ARGV: lease id, and unless empty a moment
-- (ms) the lease must have ended by: an extension meanwhile keeps it.
local slot = redis.call('HGET', KEYS[1], 'slot')
if not slot then return 0 end
if ARGV[2] ~= '' and tonumber(redis.call('HGET', KEYS[1], 'expires_ms')) > tonumber(ARGV[2]) then
  return 0
end
if redis.call('HGET', KEYS[3], slot) == ARGV[1] then redis.call('HDEL', KEYS[3], slot) end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
return 1
",
    )
});

/// Sets fields of a lease's record only while the lease runs.
static UPDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
",
    )
});

/// Moves a running lease's end and reminder, in its record and in the leases by end.
static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: lease record, leases by end. ARGV: lease id, end (ms), reminder (ms).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'expires_ms', ARGV[2], 'remind_ms', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
",
    )
});

/// Clears a lease's reminder if it is still `ARGV[1]`: two bots never both remind.
static REMINDED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], 'remind_ms') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'remind_ms', 0)
return 1
",
    )
});

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub id: LeaseId,
    pub pool: String,
    /// Which of the pool's slots it holds (a static pool's host, by position).
    pub slot: u32,
    /// Who holds it, as permissions know them, and their name.
    pub holder: String,
    pub holder_name: String,
    /// Where it was asked for: reminders and its end are posted there.
    pub channel: Option<ChannelName>,
    pub branch: Option<String>,
    pub started_ms: u64,
    pub expires_ms: u64,
    /// When its holder is reminded that it ends; 0 once they were.
    pub remind_ms: u64,
    /// How to reach it.
    pub details: String,
    /// Whether the environment is a container (a `docker` pool's).
    pub container: bool,
    /// Why its environment could not start, as the worker asked for it said.
    pub failure: Option<String>,
}

impl Store {
    /// Records `lease` in a free slot of its pool, of `capacity`, under a new number; the
    /// lease as recorded, or `None` when every slot is taken. The lease's own `id` and
    /// `slot` are ignored. For a task attempt (`task`), the lease it holds in the pool
    /// already, if it does: one attempt never holds two.
    pub async fn take_slot(
        &self,
        lease: &LeaseRecord,
        capacity: u32,
        task: Option<&Waiting>,
    ) -> RedisResult<Option<LeaseRecord>> {
        let l = lease;
        let fields = [
            ("pool", l.pool.clone()),
            ("holder", l.holder.clone()),
            ("holder_name", l.holder_name.clone()),
            ("channel", l.channel.clone().unwrap_or_default().into()),
            ("branch", l.branch.clone().unwrap_or_default()),
            ("started_ms", l.started_ms.to_string()),
            ("expires_ms", l.expires_ms.to_string()),
            ("remind_ms", l.remind_ms.to_string()),
            ("details", l.details.clone()),
            ("container", if l.container { "1" } else { "" }.to_owned()),
        ];
        let holder = task.map_or_else(String::new, |t| {
            self.keys.task_lease(t.build, &t.task, t.attempt, &l.pool)
        });
        let mut invocation = TAKE.key(self.keys.pool_slots(&l.pool));
        invocation
            .key(self.keys.lease_sequence())
            .key(self.keys.leases())
            .key(holder)
            .arg(capacity)
            .arg(l.expires_ms)
            .arg(self.keys.lease_prefix());
        for (field, value) in fields {
            invocation.arg(field).arg(value);
        }
        let taken: Option<(u32, u64)> = invocation.invoke_async(&mut self.conn.clone()).await?;
        match taken {
            // Held already: as recorded then.
            Some((_, id)) if task.is_some() => self.lease(LeaseId(id)).await,
            Some((slot, id)) => Ok(Some(LeaseRecord {
                id: LeaseId(id),
                slot,
                ..lease.clone()
            })),
            None => Ok(None),
        }
    }

    /// Sets how to reach a lease's environment, once it is up; false if the lease ended
    /// meanwhile.
    pub async fn lease_details(&self, id: LeaseId, details: &str) -> RedisResult<bool> {
        let set: i64 = UPDATE
            .key(self.keys.lease(id))
            .arg("details")
            .arg(details)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(set == 1)
    }

    /// Whether a worker has said that the environment of lease `id`, which ended, is gone.
    pub async fn lease_gone(&self, id: LeaseId) -> RedisResult<bool> {
        self.conn.clone().exists(self.keys.lease_gone(id)).await
    }

    /// The lease `id`, if it runs.
    pub async fn lease(&self, id: LeaseId) -> RedisResult<Option<LeaseRecord>> {
        let h: HashMap<String, String> = self.conn.clone().hgetall(self.keys.lease(id)).await?;
        Ok(lease_record(id, h))
    }

    /// Every running lease, the soonest to end first.
    pub async fn leases(&self) -> RedisResult<Vec<LeaseRecord>> {
        let ids: Vec<u64> = self.conn.clone().zrange(self.keys.leases(), 0, -1).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(self.keys.lease(LeaseId(*id)));
        }
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(ids
            .into_iter()
            .zip(hashes)
            .filter_map(|(id, h)| lease_record(LeaseId(id), h))
            .collect())
    }

    /// Moves a running lease's end (and its reminder) to `expires_ms`; false if it ended.
    pub async fn extend_lease(
        &self,
        id: LeaseId,
        expires_ms: u64,
        remind_ms: u64,
    ) -> RedisResult<bool> {
        let set: i64 = EXTEND
            .key(self.keys.lease(id))
            .key(self.keys.leases())
            .arg(id.0)
            .arg(expires_ms)
            .arg(remind_ms)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(set == 1)
    }

    /// Marks a lease's holder reminded (of the reminder due at `remind_ms`); true for the
    /// caller that marked it.
    pub async fn reminded(&self, id: LeaseId, remind_ms: u64) -> RedisResult<bool> {
        let moved: i64 = REMINDED
            .key(self.keys.lease(id))
            .arg(remind_ms)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(moved == 1)
    }

    /// Ends a lease and frees its slot, or with `expired_by`, only if the lease has ended
    /// by then (not extended meanwhile); true for the caller that ended it.
    pub async fn end_lease(
        &self,
        lease: &LeaseRecord,
        expired_by: Option<u64>,
    ) -> RedisResult<bool> {
        let ended: i64 = GIVE_BACK
            .key(self.keys.lease(lease.id))
            .key(self.keys.leases())
            .key(self.keys.pool_slots(&lease.pool))
            .arg(lease.id.0)
            .arg(expired_by.map(|ms| ms.to_string()).unwrap_or_default())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(ended == 1)
    }
}

/// A task attempt waiting for a slot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Waiting {
    pub build: BuildId,
    pub task: String,
    pub attempt: u32,
}

impl Waiting {
    /// Attempt `attempt` of `record`'s task `task`.
    pub fn of(record: &BuildRecord, task: &PlannedTask, attempt: u32) -> Self {
        Self {
            build: record.build.id,
            task: task.name.clone(),
            attempt,
        }
    }
}

impl Store {
    /// The lease a task attempt holds in `pool`, if it holds one.
    pub async fn task_lease(
        &self,
        waiting: &Waiting,
        pool: &str,
    ) -> RedisResult<Option<LeaseRecord>> {
        let key = self
            .keys
            .task_lease(waiting.build, &waiting.task, waiting.attempt, pool);
        let id: Option<u64> = self.conn.clone().get(&key).await?;
        match id {
            Some(id) => self.lease(LeaseId(id)).await,
            None => Ok(None),
        }
    }

    /// Notes that a task attempt holds `lease`, until `until_ms` at the latest.
    pub async fn hold_task_lease(
        &self,
        waiting: &Waiting,
        lease: &LeaseRecord,
        until_ms: u64,
    ) -> RedisResult<()> {
        let key = self
            .keys
            .task_lease(waiting.build, &waiting.task, waiting.attempt, &lease.pool);
        let _: () = redis::pipe()
            .set(&key, lease.id.0)
            .ignore()
            .pexpire_at(&key, i64::try_from(until_ms).unwrap_or(i64::MAX))
            .ignore()
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Forgets which lease a task attempt holds in `pool`.
    pub async fn drop_task_lease(&self, waiting: &Waiting, pool: &str) -> RedisResult<()> {
        let key = self
            .keys
            .task_lease(waiting.build, &waiting.task, waiting.attempt, pool);
        let _: usize = self.conn.clone().del(key).await?;
        Ok(())
    }

    /// Puts a task attempt in line for a slot of `pool`.
    pub async fn wait_for_slot(&self, pool: &str, waiting: &Waiting) -> RedisResult<()> {
        let json = serde_json::to_string(waiting).unwrap_or_default();
        redis::pipe()
            .rpush(self.keys.pool_waiting(pool), json)
            .ignore()
            .sadd(self.keys.waited_pools(), pool)
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await
    }

    /// Every pool a task has waited in line for.
    pub async fn waited_pools(&self) -> RedisResult<Vec<String>> {
        self.conn.clone().smembers(self.keys.waited_pools()).await
    }

    /// The task attempts waiting for a slot of `pool`, in the order they came.
    pub async fn waiting(&self, pool: &str) -> RedisResult<Vec<Waiting>> {
        let all: Vec<String> = self
            .conn
            .clone()
            .lrange(self.keys.pool_waiting(pool), 0, -1)
            .await?;
        Ok(all
            .iter()
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect())
    }

    /// Takes a task attempt that was tried out of `pool`'s line (its first place: one that
    /// found no slot again has been put at the end meanwhile).
    pub async fn done_waiting(&self, pool: &str, waiting: &Waiting) -> RedisResult<()> {
        let json = serde_json::to_string(waiting).unwrap_or_default();
        let _: usize = self
            .conn
            .clone()
            .lrem(self.keys.pool_waiting(pool), 1, json)
            .await?;
        Ok(())
    }
}

fn lease_record(id: LeaseId, mut h: HashMap<String, String>) -> Option<LeaseRecord> {
    let pool = h.remove("pool")?;
    let mut take = |field: &str| h.remove(field).unwrap_or_default();
    let optional = |text: String| Some(text).filter(|t| !t.is_empty());
    Some(LeaseRecord {
        id,
        pool,
        slot: take("slot").parse().unwrap_or(0),
        holder: take("holder"),
        holder_name: take("holder_name"),
        channel: optional(take("channel")).map(ChannelName::from),
        branch: optional(take("branch")),
        started_ms: take("started_ms").parse().unwrap_or(0),
        expires_ms: take("expires_ms").parse().unwrap_or(0),
        remind_ms: take("remind_ms").parse().unwrap_or(0),
        details: take("details"),
        container: !take("container").is_empty(),
        failure: optional(take("failure")),
    })
}

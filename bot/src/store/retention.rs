//! What retention needs kept: the ended builds whose logs are to be archived and whose
//! records are to expire (a sorted set scored with when each is due, claimed for a while by
//! the bot that works on it), each log's raw lines, and the expiries themselves.

use std::time::Duration;

use kiln_shared::build::BuildId;
use kiln_shared::record::{self, ArchivedLog};
use redis::{AsyncCommands, RedisResult};

use super::{Store, now_ms};

/// A log line as the worker stored it: its stream (`out`, `err`, `kiln`) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLine {
    pub fd: String,
    pub line: String,
}

impl Store {
    /// Notes that build `id` is to be archived and expire once `after` has passed.
    pub async fn retention_due(&self, id: BuildId, after: Duration) -> RedisResult<()> {
        let due = now_ms() + after.as_millis() as u64;
        self.conn
            .clone()
            .zadd(self.keys.retention_due(), id.0, due)
            .await
    }

    /// Claims, for `lease`, up to `count` builds that are due: another bot does not see them
    /// until the lease runs out.
    pub async fn retention_claim(
        &self,
        count: usize,
        lease: Duration,
    ) -> RedisResult<Vec<BuildId>> {
        self.claim_due(self.keys.retention_due(), count, lease)
            .await
    }

    /// Takes build `id` out of the due builds: it is done.
    pub async fn retention_done(&self, id: BuildId) -> RedisResult<()> {
        self.conn
            .clone()
            .zrem(self.keys.retention_due(), id.0)
            .await
    }

    /// Whether every build has been looked at for a due note ([`Store::note_unexpiring`]).
    pub async fn retention_swept(&self) -> RedisResult<bool> {
        self.conn.clone().exists(self.keys.retention_swept()).await
    }

    /// Notes that every build has been looked at.
    pub async fn mark_retention_swept(&self) -> RedisResult<()> {
        self.conn.clone().set(self.keys.retention_swept(), 1).await
    }

    /// Notes due now those of builds `ids` whose record has no expiry and no due note yet;
    /// returns how many. One round trip to read, one to note.
    pub async fn note_unexpiring(&self, ids: &[BuildId]) -> RedisResult<usize> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.ttl(self.keys.build(*id));
        }
        let ttls: Vec<i64> = pipe.query_async(&mut self.conn.clone()).await?;
        // -1: the record is there, with no expiry; -2: there is none.
        let unexpiring: Vec<u64> = ids
            .iter()
            .zip(ttls)
            .filter(|(_, ttl)| *ttl == -1)
            .map(|(id, _)| id.0)
            .collect();
        if unexpiring.is_empty() {
            return Ok(0);
        }
        let now = now_ms();
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(self.keys.retention_due()).arg("NX");
        for id in &unexpiring {
            zadd.arg(now).arg(id);
        }
        zadd.query_async::<()>(&mut self.conn.clone()).await?;
        Ok(unexpiring.len())
    }

    /// Every line of one task's log as stored, in order.
    pub async fn raw_log(&self, id: BuildId, task: &str) -> RedisResult<Vec<RawLine>> {
        let reply: redis::streams::StreamRangeReply = self
            .conn
            .clone()
            .xrange_all(self.keys.logs(id, task))
            .await?;
        Ok(reply
            .ids
            .iter()
            .filter_map(|entry| {
                Some(RawLine {
                    fd: entry.get("fd").unwrap_or_default(),
                    line: entry.get("line")?,
                })
            })
            .collect())
    }

    /// How many lines one task's log has in Redis.
    pub async fn log_length(&self, id: BuildId, task: &str) -> RedisResult<usize> {
        self.conn.clone().xlen(self.keys.logs(id, task)).await
    }

    /// Records where task `task`'s log was archived.
    pub async fn log_archived(
        &self,
        id: BuildId,
        task: &str,
        log: &ArchivedLog,
    ) -> RedisResult<()> {
        self.conn
            .clone()
            .hset_multiple(self.keys.task(id, task), &record::task::archived(log))
            .await
    }

    /// Makes build `id`'s records (the build, `tasks`, the scheduler's counters, reports)
    /// expire after `records`, and its tasks' logs after `logs`, in one round trip.
    pub async fn expire_build(
        &self,
        id: BuildId,
        tasks: &[&str],
        records: Duration,
        logs: Duration,
    ) -> RedisResult<()> {
        let records = records.as_secs() as i64;
        let logs = logs.as_secs() as i64;
        let mut pipe = redis::pipe();
        for key in [
            self.keys.build(id),
            self.keys.settled(id),
            self.keys.pending(id),
            self.keys.reports(id),
        ] {
            pipe.expire(key, records).ignore();
        }
        for task in tasks {
            pipe.expire(self.keys.task(id, task), records).ignore();
            pipe.expire(self.keys.logs(id, task), logs).ignore();
        }
        pipe.query_async(&mut self.conn.clone()).await
    }
}

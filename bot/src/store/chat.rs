//! What chat needs kept: the channels' subscriptions, the id of each build's card in each
//! channel, and what subscribers reported of builds.

use std::sync::LazyLock;
use std::time::Duration;

use kiln_shared::build::BuildId;
use kiln_shared::ident::{ChannelName, RepoName};
use kiln_shared::subscription::Subscription;
use kiln_shared::view::Report;
use redis::{AsyncCommands, ExistenceCheck, RedisResult, Script, SetExpiry, SetOptions};

use super::{DELIVERY_MEMORY, Store};

/// What a card's key holds while its message is being posted.
const POSTING: &str = "";

/// How long a claim to post a card holds: longer than a post may take, so a bot that died
/// while posting leaves the card to the next pass, not to nobody.
const POSTING_CLAIM: Duration = Duration::from_secs(2 * 60);

/// Notes a build's cards due (`SADD KEYS[3] ARGV[1]`) if its repository has a subscription
/// (`KEYS[1]`) or the build a follower (`KEYS[2]`); 1 if it did.
static DUE_IF_FOLLOWED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('EXISTS', KEYS[1], KEYS[2]) == 0 then return 0 end
        redis.call('SADD', KEYS[3], ARGV[1])
        return 1
        ",
    )
});

impl Store {
    /// Adds or replaces a channel's subscription to a repository (or branch); true if it is
    /// new.
    pub async fn subscribe(&self, subscription: &Subscription) -> RedisResult<bool> {
        let json = serde_json::to_string(subscription).unwrap_or_default();
        let (added, _): (usize, usize) = redis::pipe()
            .atomic()
            .hset(
                self.keys.subscriptions(&subscription.repo),
                subscription.field(),
                json,
            )
            .sadd(
                self.keys.channel_subscriptions(&subscription.channel),
                subscription.repo.as_str(),
            )
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(added == 1)
    }

    /// Removes a channel's subscription to one branch of a repository, or with no branch
    /// all its subscriptions to the repository; returns those removed.
    pub async fn unsubscribe(
        &self,
        channel: &ChannelName,
        repo: &RepoName,
        branch: Option<&str>,
    ) -> RedisResult<Vec<Subscription>> {
        let repo = RepoName::from(repo.to_ascii_lowercase());
        let (gone, kept): (Vec<Subscription>, Vec<Subscription>) = self
            .subscribers(&repo)
            .await?
            .into_iter()
            .filter(|s| &s.channel == channel)
            .partition(|s| branch.is_none_or(|b| s.branch.as_deref() == Some(b)));
        if gone.is_empty() {
            return Ok(gone);
        }
        let mut pipe = redis::pipe();
        pipe.atomic().hdel(
            self.keys.subscriptions(&repo),
            gone.iter().map(Subscription::field).collect::<Vec<_>>(),
        );
        if kept.is_empty() {
            pipe.srem(self.keys.channel_subscriptions(channel), repo.as_str());
        }
        let _: () = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(gone)
    }

    /// Notes that build `id`'s cards may have to change, until [`Store::cards_out`].
    pub async fn cards_due(&self, id: BuildId) -> RedisResult<()> {
        self.conn
            .clone()
            .sadd(self.keys.cards_pending(), id.0)
            .await
    }

    /// Notes build `id`'s cards due, as [`Store::cards_due`], if a channel follows `repo` or
    /// asked for the build; true if it did. One round trip.
    pub async fn cards_due_if_followed(&self, repo: &RepoName, id: BuildId) -> RedisResult<bool> {
        DUE_IF_FOLLOWED
            .key(self.keys.subscriptions(repo))
            .key(self.keys.build_followers(id))
            .key(self.keys.cards_pending())
            .arg(id.0)
            .invoke_async(&mut self.conn.clone())
            .await
    }

    /// Notes that build `id`'s cards, notifications and statuses are all out.
    pub async fn cards_out(&self, id: BuildId) -> RedisResult<()> {
        self.conn
            .clone()
            .srem(self.keys.cards_pending(), id.0)
            .await
    }

    /// The builds whose cards may not all be out.
    pub async fn cards_pending(&self) -> RedisResult<Vec<BuildId>> {
        let ids: Vec<u64> = self
            .conn
            .clone()
            .smembers(self.keys.cards_pending())
            .await?;
        Ok(ids.into_iter().map(BuildId).collect())
    }

    /// Makes `channel` follow build `id`: it asked for it.
    pub async fn follow_build(&self, id: BuildId, channel: &ChannelName) -> RedisResult<()> {
        let key = self.keys.build_followers(id);
        let _: () = redis::pipe()
            .sadd(&key, channel.as_str())
            .ignore()
            .expire(&key, DELIVERY_MEMORY.as_secs() as i64)
            .ignore()
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Every subscription to `repo`, and the channels its build `id` was asked for in: one
    /// round trip.
    pub async fn audience(
        &self,
        repo: &RepoName,
        id: BuildId,
    ) -> RedisResult<(Vec<Subscription>, Vec<ChannelName>)> {
        let (subscriptions, followers): (Vec<String>, Vec<String>) = redis::pipe()
            .hvals(self.keys.subscriptions(repo))
            .smembers(self.keys.build_followers(id))
            .query_async(&mut self.conn.clone())
            .await?;
        let followers = followers.into_iter().map(ChannelName::from).collect();
        Ok((parse_subscriptions(&subscriptions), followers))
    }

    /// Every subscription to `repo`.
    pub async fn subscribers(&self, repo: &RepoName) -> RedisResult<Vec<Subscription>> {
        let values: Vec<String> = self
            .conn
            .clone()
            .hvals(self.keys.subscriptions(repo))
            .await?;
        Ok(parse_subscriptions(&values))
    }

    /// Every subscription of `channel`, by repository and branch.
    pub async fn channel_subscriptions(
        &self,
        channel: &ChannelName,
    ) -> RedisResult<Vec<Subscription>> {
        let repos: Vec<String> = self
            .conn
            .clone()
            .smembers(self.keys.channel_subscriptions(channel))
            .await?;
        let mut found = Vec::new();
        for repo in repos {
            found.extend(
                self.subscribers(&repo.into())
                    .await?
                    .into_iter()
                    .filter(|s| &s.channel == channel),
            );
        }
        found.sort_by(|a, b| (&a.repo, &a.branch).cmp(&(&b.repo, &b.branch)));
        Ok(found)
    }

    /// Records a subscriber's report on a build, replacing its earlier one.
    pub async fn report(&self, id: BuildId, report: &Report) -> RedisResult<()> {
        let json = serde_json::to_string(report).unwrap_or_default();
        self.conn
            .clone()
            .hset(self.keys.reports(id), &report.reporter, json)
            .await
    }

    /// Every report on a build, by reporter.
    pub async fn reports(&self, id: BuildId) -> RedisResult<Vec<Report>> {
        let all: std::collections::BTreeMap<String, String> =
            self.conn.clone().hgetall(self.keys.reports(id)).await?;
        Ok(all
            .values()
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect())
    }

    /// The message that is a build's card in `channel`: `Some(None)` while it is being posted.
    pub async fn card(
        &self,
        id: BuildId,
        channel: &ChannelName,
    ) -> RedisResult<Option<Option<String>>> {
        let value: Option<String> = self.conn.clone().get(self.keys.card(id, channel)).await?;
        Ok(value.map(|v| Some(v).filter(|v| v != POSTING)))
    }

    /// Claims the posting of a build's card in `channel`: true for the one caller that is to
    /// post it.
    pub async fn claim_card(&self, id: BuildId, channel: &ChannelName) -> RedisResult<bool> {
        let options = SetOptions::default()
            .conditional_set(ExistenceCheck::NX)
            .with_expiration(SetExpiry::EX(POSTING_CLAIM.as_secs()));
        let set: Option<String> = self
            .conn
            .clone()
            .set_options(self.keys.card(id, channel), POSTING, options)
            .await?;
        Ok(set.is_some())
    }

    /// Records the message a claimed card was posted as; `None` gives up the claim (the post
    /// failed), so a later update posts it.
    pub async fn posted_card(
        &self,
        id: BuildId,
        channel: &ChannelName,
        message: Option<&str>,
    ) -> RedisResult<()> {
        let key = self.keys.card(id, channel);
        let mut conn = self.conn.clone();
        match message {
            Some(message) => {
                let _: () = conn.set_ex(key, message, DELIVERY_MEMORY.as_secs()).await?;
            }
            None => {
                let _: usize = conn.del(key).await?;
            }
        }
        Ok(())
    }
}

/// Subscriptions as stored; one that cannot be read (written by a later version) is left out.
fn parse_subscriptions(values: &[String]) -> Vec<Subscription> {
    values
        .iter()
        .filter_map(|v| serde_json::from_str(v).ok())
        .collect()
}

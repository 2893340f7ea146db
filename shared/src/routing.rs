//! RabbitMQ names: the exchanges and queues of one Kiln installation, and the routing keys of
//! its events.
//!
//! Events are routed by `<kind>.<status>.<repo>.<branch>`, so another team binds its own queue
//! to `build.*.acme/api.master` or `build.failed.#`. A `.`, `*`, `#` or `%` inside a repository
//! or branch name is percent-encoded, so a name can never add a word to the key or act as a
//! wildcard.

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::platform::Platform;
use crate::priority::Priority;

/// The bytes that would change a topic key's meaning, plus `%` so decoding is unambiguous.
const KEY_WORD: &AsciiSet = &CONTROLS.add(b'.').add(b'*').add(b'#').add(b'%');

/// Percent-encodes one word of a routing key.
pub fn key_word(word: &str) -> String {
    utf8_percent_encode(word, KEY_WORD).to_string()
}

/// The routing key of an event: `<kind>.<status>.<repo>.<branch>`.
pub fn event_key(kind: &str, status: &str, repo: &str, branch: &str) -> String {
    format!(
        "{}.{}.{}.{}",
        key_word(kind),
        key_word(status),
        key_word(repo),
        key_word(branch)
    )
}

/// The jobs exchange's routing key of `platform`'s jobs of `priority`: the platform's label,
/// with `.high` for high priority.
pub fn job_key(platform: Platform, priority: Priority) -> String {
    match priority {
        Priority::Normal => platform.label().to_owned(),
        Priority::High => format!("{}.high", platform.label()),
    }
}

/// How many times a job is delivered before RabbitMQ dead-letters it. A job whose worker
/// dies mid-task is redelivered; one that kills every worker it reaches is poison, and after
/// this many tries it goes to the dead-letter queue for a person to look at.
pub const JOB_DELIVERY_LIMIT: i64 = 5;

/// The names of one installation's exchanges and queues, all under one prefix.
///
/// Production uses the default prefix `kiln`; each test uses its own so that tests sharing a
/// broker never see each other's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
}

impl Default for Topology {
    fn default() -> Self {
        Self::new("kiln")
    }
}

impl Topology {
    /// The names under `prefix` (`kiln` in production).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// Every exchange of the installation with its kind (`direct`, `topic`, `fanout`), as the
    /// bot and every worker declare them.
    pub fn exchanges(&self) -> [(String, &'static str); 3] {
        [
            (self.jobs_exchange(), "direct"),
            (self.events_exchange(), "topic"),
            (self.dead_exchange(), "fanout"),
        ]
    }

    /// The direct exchange jobs are published to, keyed by platform label.
    pub fn jobs_exchange(&self) -> String {
        format!("{}.jobs", self.prefix)
    }

    /// The quorum queue of one platform's jobs of normal priority (and of its
    /// environments' requests).
    pub fn jobs_queue(&self, platform: Platform) -> String {
        self.jobs_queue_of(platform, Priority::Normal)
    }

    /// The quorum queue of one platform's jobs of `priority`: quorum queues have no
    /// priorities of their own, so each level is a queue, which workers drain highest first.
    pub fn jobs_queue_of(&self, platform: Platform, priority: Priority) -> String {
        format!("{}.jobs.{}", self.prefix, job_key(platform, priority))
    }

    /// Every job queue of `platform`, the highest priority first.
    pub fn jobs_queues(&self, platform: Platform) -> [(Priority, String); 2] {
        Priority::SERVED.map(|p| (p, self.jobs_queue_of(platform, p)))
    }

    /// The topic exchange every state change is published to.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// The bot's own queue of tasks' events (scheduler and notifier), bound to `task.#`.
    pub fn bot_events_queue(&self) -> String {
        format!("{}.bot.events", self.prefix)
    }

    /// The bot's own queue of requested builds (planner), bound to `build.requested.#`.
    pub fn bot_builds_queue(&self) -> String {
        format!("{}.bot.builds", self.prefix)
    }

    /// The bot's queue of verified pushes it could not record while Redis was unreachable
    /// (published straight to it, through the default exchange).
    pub fn bot_held_pushes_queue(&self) -> String {
        format!("{}.bot.pushes", self.prefix)
    }

    /// The bot's queue of commands given in pull (merge) request comments, verified at the
    /// door (published straight to it, through the default exchange): any bot carries them
    /// out, and one a bot was carrying out when it stopped comes again.
    pub fn bot_comments_queue(&self) -> String {
        format!("{}.bot.comments", self.prefix)
    }

    /// The dead-letter exchange for jobs that failed delivery too often.
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// The queue that keeps dead-lettered jobs for people to look at.
    pub fn dead_jobs_queue(&self) -> String {
        format!("{}.dead.jobs", self.prefix)
    }

    /// The bot's own copy of dead-lettered jobs: it errors their tasks, so builds move on.
    pub fn bot_dead_jobs_queue(&self) -> String {
        format!("{}.bot.dead.jobs", self.prefix)
    }

    /// Every queue of the installation: each platform's jobs and the bot's own, for whoever
    /// takes an installation down.
    pub fn queues(&self) -> Vec<String> {
        Platform::ALL
            .into_iter()
            .flat_map(|platform| self.jobs_queues(platform).map(|(_, queue)| queue))
            .chain([
                self.bot_events_queue(),
                self.bot_builds_queue(),
                self.bot_held_pushes_queue(),
                self.bot_comments_queue(),
                self.dead_jobs_queue(),
                self.bot_dead_jobs_queue(),
            ])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_queue_is_the_installation_s_and_named_once() {
        let queues = Topology::new("t1").queues();
        let distinct: std::collections::BTreeSet<&String> = queues.iter().collect();
        assert_eq!(distinct.len(), queues.len(), "{queues:?}");
        assert!(queues.iter().all(|q| q.starts_with("t1.")), "{queues:?}");
        assert!(queues.contains(&"t1.bot.comments".to_owned()), "{queues:?}");
        assert!(
            queues.contains(&"t1.jobs.linux-arm64.high".to_owned()),
            "{queues:?}"
        );
        assert_eq!(queues.len(), 2 * Platform::ALL.len() + 6);
    }

    #[test]
    fn event_keys() {
        let check = |repo: &str, branch: &str, expect: &str| {
            assert_eq!(event_key("build", "failed", repo, branch), expect);
        };
        check("acme/api", "master", "build.failed.acme/api.master");
        check(
            "acme/api.rs",
            "release/1.2",
            "build.failed.acme/api%2Ers.release/1%2E2",
        );
        check("acme/*", "feat#1", "build.failed.acme/%2A.feat%231");
        check("a%2Eb", "x", "build.failed.a%252Eb.x");
    }

    #[test]
    fn encoded_words_never_split_or_match_wildcards() {
        for word in ["a.b", "*", "#", "x.*.#", "100%", "naïve.é"] {
            let encoded = key_word(word);
            assert!(!encoded.contains(['.', '*', '#']), "{encoded}");
            let decoded = percent_encoding::percent_decode_str(&encoded)
                .decode_utf8()
                .expect("utf-8");
            assert_eq!(decoded, word);
        }
    }

    #[test]
    fn names_share_the_prefix() {
        let t = Topology::new("t1");
        assert_eq!(t.jobs_exchange(), "t1.jobs");
        assert_eq!(t.jobs_queue(Platform::LinuxAmd64), "t1.jobs.linux-amd64");
        assert_eq!(
            t.jobs_queues(Platform::WindowsAmd64).map(|(_, q)| q),
            ["t1.jobs.windows-amd64.high", "t1.jobs.windows-amd64"]
        );
        assert_eq!(
            job_key(Platform::LinuxAmd64, Priority::High),
            "linux-amd64.high"
        );
        assert_eq!(t.events_exchange(), "t1.events");
        assert_eq!(t.bot_events_queue(), "t1.bot.events");
        assert_eq!(t.bot_builds_queue(), "t1.bot.builds");
        assert_eq!(Topology::default().dead_jobs_queue(), "kiln.dead.jobs");
    }
}

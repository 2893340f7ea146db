//! What a worker's own credentials let it do, and nothing more: consume its platform's job
//! queue, publish its tasks' `task.*` events, store task records, log lines, its presence and
//! its environments' reports. Given as RabbitMQ permissions (regular expressions over
//! resource names, and over routing keys for the events exchange) and a Redis ACL user's
//! rules (commands, and key patterns with read and write apart).
//!
//! This module only says what is granted; `kiln-worker credentials` applies it
//! (`rabbitmqctl`, `ACL SETUSER`). The patterns cannot tell one task from another: a worker
//! may write any key shaped like a task record or log, and publish any `task.*` event. What
//! keeps it to its own tasks is their names ([`crate::keys::TaskNames`]: it can name only
//! the tasks its jobs tag, and may not read the secret) and the bot's check of each event
//! against the task's record (ARCHITECTURE.md).

use crate::keys::Keys;
use crate::platform::Platform;
use crate::routing::Topology;

/// A worker's RabbitMQ permissions in the installation's virtual host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerGrant {
    /// Resources it may declare or delete: none (the bot declares them).
    pub configure: String,
    /// Exchanges it may publish to (and queues it may bind): the events exchange only.
    pub write: String,
    /// Queues it may consume (and exchanges it may bind from): its platform's job queues.
    pub read: String,
    /// The topic exchange whose routing keys are limited, and the keys it may publish with
    /// (`task.…`) and bind with (none).
    pub topic_exchange: String,
    pub topic_write: String,
    pub topic_read: String,
}

/// The RabbitMQ permissions of a worker of `platform` in `topology`'s installation.
pub fn broker_grant(topology: &Topology, platform: Platform) -> BrokerGrant {
    let exact = |name: &str| format!("^{}$", regex_escape(name));
    BrokerGrant {
        configure: "^$".into(),
        write: exact(&topology.events_exchange()),
        read: {
            let queues = topology
                .jobs_queues(platform)
                .map(|(_, q)| regex_escape(&q));
            format!("^({})$", queues.join("|"))
        },
        topic_exchange: topology.events_exchange(),
        topic_write: "^task\\.".into(),
        topic_read: "^$".into(),
    }
}

/// The rules of a worker's Redis ACL user (after `reset on >password`): the commands it
/// sends, and the keys it reads (`%R~`) and writes (`%W~`). Nothing else: no other key, no
/// `KEYS`/`SCAN`, no pub/sub, no configuration or ACL commands.
pub fn redis_rules(keys: &Keys) -> Vec<String> {
    let p = glob_escape(keys.prefix());
    let commands = [
        // Connecting (a URL may pick a database). Not `CLIENT SETINFO`, which redis-rs
        // tries and does without: Redis 7.0 (Debian 12's) does not know it.
        "+ping",
        "+hello",
        "+auth",
        "+select",
        "+client|setname",
        // Task records (the status compare-and-set is a script), presence, leases.
        "+hget",
        "+hgetall",
        "+hmget",
        "+hexists",
        "+hset",
        "+hdel",
        "+evalsha",
        "+eval",
        "+script|load",
        // Log lines; the mark that a lease's environment is gone.
        "+xadd",
        "+xtrim",
        "+del",
        "+set",
    ];
    let patterns = [
        // A task's record: `<p>:build:<id>:task:<name>[:<tag>]`; not the build's own
        // record, nor the secret the tags are made with (`<p>:task-names`).
        format!("%RW~{p}:build:[0-9]*:task:*"),
        format!("%W~{p}:logs:[0-9]*"),
        format!("%RW~{p}:workers"),
        // A lease's record (`<p>:lease:<id>`), not its sequence (`<p>:lease:seq`).
        format!("%RW~{p}:lease:[0-9]*"),
        format!("%W~{p}:lease-gone:[0-9]*"),
    ];
    ["resetchannels".to_owned(), "-@all".to_owned()]
        .into_iter()
        .chain(commands.iter().map(|c| (*c).to_owned()))
        .chain(patterns)
        .collect()
}

/// `name` with every character a regular expression gives meaning to escaped.
fn regex_escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `prefix` with every character a Redis glob gives meaning to escaped.
fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if "\\*?[]".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_grant_names_its_platform_s_job_queues_and_the_events_exchange() {
        let grant = broker_grant(&Topology::new("kiln"), Platform::LinuxArm64);
        assert_eq!(
            grant,
            BrokerGrant {
                configure: "^$".into(),
                write: "^kiln\\.events$".into(),
                read: "^(kiln\\.jobs\\.linux-arm64\\.high|kiln\\.jobs\\.linux-arm64)$".into(),
                topic_exchange: "kiln.events".into(),
                topic_write: "^task\\.".into(),
                topic_read: "^$".into(),
            }
        );
    }

    #[test]
    fn names_are_escaped() {
        assert_eq!(regex_escape("a.b*c"), "a\\.b\\*c");
        let rules = redis_rules(&Keys::new("k*[x]"));
        assert!(
            rules.contains(&"%RW~k\\*\\[x\\]:workers".to_owned()),
            "{rules:?}"
        );
    }

    #[test]
    fn the_redis_rules_start_from_nothing() {
        let rules = redis_rules(&Keys::new("kiln"));
        assert_eq!(&rules[..2], ["resetchannels", "-@all"]);
        assert!(!rules.iter().any(|r| r.contains("audit")));
        assert!(
            !rules
                .iter()
                .any(|r| r == "+keys" || r == "+scan" || r.starts_with("+@"))
        );
    }
}

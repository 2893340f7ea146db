//! Workers' presence: each worker says every [`HEARTBEAT`] who it is, what it runs and what
//! it is running now; one that has been silent for [`SILENCE`] is gone: shown as lost until
//! [`FORGOTTEN`], then forgotten. A worker that stops cleanly takes its presence back.
//!
//! A presence is also a worker's claim on the jobs it holds: the bot takes back the
//! attempts of a worker it has not heard from for a while (see `kiln-bot`'s `reclaim`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::build::BuildId;

/// How often a worker says it is there.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// How long a silent worker counts as there: three missed heartbeats.
pub const SILENCE: Duration = Duration::from_secs(30);

/// How long a lost worker (one that went silent without stopping) is still shown as lost.
pub const FORGOTTEN: Duration = Duration::from_secs(60 * 60);

/// What a worker says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub name: String,
    /// As people write it, e.g. `linux/arm64`.
    pub platform: String,
    /// How many tasks it runs at once.
    pub slots: u16,
    /// The jobs it holds, as people read them, e.g. `#12 unit`.
    pub running: Vec<String>,
    /// The same jobs as data, with their attempts (absent from workers older than this
    /// field: theirs are never taken back).
    #[serde(default)]
    pub held: Vec<HeldJob>,
    /// Whether it is stopping: it takes no new job and finishes those it holds.
    #[serde(default)]
    pub draining: bool,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// When it last said so.
    pub seen_ms: u64,
    /// The host it runs on, as testers reach it (`--advertise-host`).
    #[serde(default)]
    pub host: String,
    /// Its version (`kiln-worker --version`).
    #[serde(default)]
    pub version: String,
}

/// One attempt of one task, held by a worker.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HeldJob {
    pub build: BuildId,
    pub task: String,
    pub attempt: u32,
}

impl HeldJob {
    /// How people read it: `#12 unit`.
    pub fn label(&self) -> String {
        label(self.build, &self.task)
    }
}

/// How a job is named in presences: `#12 unit`.
pub fn label(build: BuildId, task: &str) -> String {
    format!("#{build} {task}")
}

impl Presence {
    /// Whether it has been heard from within [`SILENCE`] of `now_ms`.
    pub fn is_there(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.seen_ms) <= SILENCE.as_millis() as u64
    }

    /// Whether it is no longer worth showing: lost for longer than [`FORGOTTEN`].
    pub fn is_forgotten(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.seen_ms) > (SILENCE + FORGOTTEN).as_millis() as u64
    }

    /// One line for people, as of `now_ms`: `w1 on build-3 (linux/amd64, 0.1.0, 1 of 2
    /// slot(s) busy): #12 unit`, or for one gone silent, `w1 … lost: not heard from for 95 s`.
    pub fn describe(&self, now_ms: u64) -> String {
        let busy = self.running.len();
        let mut line = self.name.clone();
        if !self.host.is_empty() {
            line.push_str(&format!(" on {}", self.host));
        }
        let version = if self.version.is_empty() {
            String::new()
        } else {
            format!("{}, ", self.version)
        };
        line.push_str(&format!(
            " ({}, {version}{busy} of {} slot(s) busy)",
            self.platform, self.slots
        ));
        if self.draining {
            line.push_str(" draining");
        }
        if !self.is_there(now_ms) {
            let silent = now_ms.saturating_sub(self.seen_ms) / 1000;
            line.push_str(&format!(" lost: not heard from for {silent} s"));
            if !self.running.is_empty() {
                line.push_str(", holding");
            }
        }
        if !self.running.is_empty() {
            line.push_str(": ");
            line.push_str(&self.running.join(", "));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_is_there_until_three_heartbeats_are_missed() {
        let presence = Presence {
            name: "w1".into(),
            platform: "linux/amd64".into(),
            slots: 2,
            running: vec!["#12 unit".into()],
            held: vec![HeldJob {
                build: BuildId(12),
                task: "unit".into(),
                attempt: 1,
            }],
            draining: false,
            started_ms: 1_000,
            seen_ms: 100_000,
            host: "build-3".into(),
            version: "0.1.0".into(),
        };
        assert!(presence.is_there(100_000));
        assert!(presence.is_there(130_000));
        assert!(!presence.is_there(130_001));
        assert_eq!(
            presence.describe(130_000),
            "w1 on build-3 (linux/amd64, 0.1.0, 1 of 2 slot(s) busy): #12 unit"
        );
        assert_eq!(
            presence.describe(195_000),
            "w1 on build-3 (linux/amd64, 0.1.0, 1 of 2 slot(s) busy) lost: not heard from for 95 s, holding: #12 unit"
        );
        let draining = Presence {
            draining: true,
            ..presence.clone()
        };
        assert_eq!(
            draining.describe(130_000),
            "w1 on build-3 (linux/amd64, 0.1.0, 1 of 2 slot(s) busy) draining: #12 unit"
        );
        assert!(!presence.is_forgotten(100_000 + 3_630_000));
        assert!(presence.is_forgotten(100_000 + 3_630_001));
    }
}

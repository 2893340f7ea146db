//! Workers' presence: each worker says every [`HEARTBEAT`] who it is, what it runs and what
//! it is running now; one that has been silent for [`SILENCE`] is gone.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often a worker says it is there.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// How long a silent worker counts as there: three missed heartbeats.
pub const SILENCE: Duration = Duration::from_secs(30);

/// What a worker says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub name: String,
    /// As people write it, e.g. `linux/arm64`.
    pub platform: String,
    /// How many tasks it runs at once.
    pub slots: u16,
    /// The jobs it holds, e.g. `#12 unit`.
    pub running: Vec<String>,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// When it last said so.
    pub seen_ms: u64,
}

impl Presence {
    /// Whether it has been heard from within [`SILENCE`] of `now_ms`.
    pub fn is_there(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.seen_ms) <= SILENCE.as_millis() as u64
    }

    /// One line for people: `w1 (linux/amd64, 1 of 2 slots busy): #12 unit`.
    pub fn describe(&self) -> String {
        let busy = self.running.len();
        let mut line = format!(
            "{} ({}, {busy} of {} slot(s) busy)",
            self.name, self.platform, self.slots
        );
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
            started_ms: 1_000,
            seen_ms: 100_000,
        };
        assert!(presence.is_there(100_000));
        assert!(presence.is_there(130_000));
        assert!(!presence.is_there(130_001));
        assert_eq!(
            presence.describe(),
            "w1 (linux/amd64, 1 of 2 slot(s) busy): #12 unit"
        );
    }
}

//! A build's priority: which of a platform's job queues its tasks go to. Workers take every
//! job of the high queue before any of the normal one, on their next free slot; a job
//! already running is never stopped for one of higher priority.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How soon a build's tasks run beside other builds' waiting for the same platform.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    #[default]
    Normal,
    /// Taken before every normal job already queued (a hotfix, a release tag).
    High,
}

impl Priority {
    /// Every priority, the highest first: the order a worker serves them in.
    pub const SERVED: [Self; 2] = [Self::High, Self::Normal];

    /// Its name in commands, configuration and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::High => "high",
        }
    }

    /// The priority named `word` (any case).
    pub fn parse(word: &str) -> Option<Self> {
        match word.to_ascii_lowercase().as_str() {
            "normal" => Some(Self::Normal),
            "high" => Some(Self::High),
            _ => None,
        }
    }

    /// Whether it is the default, which records and messages leave out.
    pub fn is_normal(&self) -> bool {
        *self == Self::Normal
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_and_high_is_served_first() {
        for p in Priority::SERVED {
            assert_eq!(Priority::parse(p.as_str()), Some(p));
        }
        assert_eq!(Priority::parse("HIGH"), Some(Priority::High));
        assert_eq!(Priority::parse("urgent"), None);
        assert!(Priority::High > Priority::Normal);
        assert_eq!(Priority::SERVED[0], Priority::High);
        assert_eq!(
            serde_json::to_string(&Priority::High).expect("json"),
            "\"high\""
        );
    }
}

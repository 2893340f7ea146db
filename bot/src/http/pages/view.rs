//! What every page shows of its reader, and a build as a row of a list.

use kiln_shared::build::BuildStatus;
use kiln_shared::trigger::TriggerKind;
use serde::Serialize;

use super::readers::Reader;
use crate::store::{BuildRecord, now_ms};

/// The reader, as the page's header shows them.
#[derive(Debug, Clone, Serialize)]
pub struct Who {
    /// Who signed in; none: the sign-in link.
    pub name: Option<String>,
}

impl Who {
    pub fn of(reader: &Reader) -> Self {
        Self {
            name: reader.session().map(|s| s.name.clone()),
        }
    }
}

/// A page that only says something.
#[derive(Debug, Serialize)]
pub struct Said {
    pub who: Who,
    pub title: String,
    pub text: String,
}

impl Said {
    pub fn new(reader: &Reader, title: &str, text: String) -> Self {
        Self {
            who: Who::of(reader),
            title: title.into(),
            text,
        }
    }
}

/// A build as a row of a list.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    pub id: u64,
    pub status: BuildStatus,
    pub repo: String,
    pub repo_url: String,
    /// `master`, or `v1.2.0` for a tag.
    pub target: String,
    pub tag: bool,
    pub short_commit: String,
    pub subject: String,
    pub author: String,
    pub trigger: TriggerKind,
    pub note: Option<String>,
    pub duration: String,
    pub started: String,
}

impl Row {
    pub fn of(record: &BuildRecord) -> Self {
        Self {
            id: record.build.id.0,
            status: record.status,
            repo: record.build.repo.to_string(),
            repo_url: format!("/repos/{}", record.build.repo),
            target: record.build.branch.to_string(),
            tag: record.kind == TriggerKind::Tag,
            short_commit: record.build.commit.chars().take(8).collect(),
            subject: first_line(&record.subject),
            author: record.author.clone(),
            trigger: record.kind,
            note: record.note.clone(),
            duration: duration(record.created_ms, record.finished_ms),
            started: time(record.created_ms),
        }
    }
}

/// A commit message's subject.
pub fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

/// How long from `start` to `end` (to now when it has not ended), as people read it.
pub fn duration(start_ms: u64, end_ms: Option<u64>) -> String {
    let end = end_ms.unwrap_or_else(now_ms);
    let secs = end.saturating_sub(start_ms) / 1000;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        _ => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
    }
}

/// A moment, in UTC.
pub fn time(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(0, Some(42_000)), "42s");
        assert_eq!(duration(0, Some(125_000)), "2m 5s");
        assert_eq!(duration(0, Some(7_380_000)), "2h 3m");
        assert_eq!(duration(5_000, Some(1_000)), "0s");
    }

    #[test]
    fn times_are_in_utc() {
        assert_eq!(time(1_796_659_200_000), "2026-12-07 16:00:00 UTC");
    }
}

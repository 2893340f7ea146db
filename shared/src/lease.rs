//! Environments leased from pools: how long a lease runs, how far it may be extended, and
//! when its holder is reminded that it ends.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A lease's number, unique across the installation and never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseId(pub u64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How long a new lease runs: what was asked for, else the pool's default; never longer
/// than the pool's maximum.
pub fn lease_length(
    asked: Option<Duration>,
    default: Duration,
    max: Duration,
) -> Result<Duration, String> {
    let length = asked.unwrap_or(default);
    if length > max {
        return Err(format!(
            "this pool lends for at most {}",
            humantime::format_duration(max)
        ));
    }
    Ok(length)
}

/// When a lease ending at `expires_ms` ends once extended by `by` at `now_ms`: never more than
/// the pool's `max` from now. Also whether the maximum cut it short.
pub fn extended(now_ms: u64, expires_ms: u64, by: Duration, max: Duration) -> (u64, bool) {
    let wanted = expires_ms.max(now_ms).saturating_add(millis(by));
    let limit = now_ms.saturating_add(millis(max));
    (wanted.min(limit), wanted > limit)
}

/// When the holder of a lease of `length` ending at `expires_ms` is reminded: ten minutes
/// before the end, or a tenth of a short lease before it, but at least [`REMINDER_LEAD`]
/// before (so a reaper that looks every few seconds does not miss it).
pub fn reminder_at(expires_ms: u64, length: Duration) -> u64 {
    let before = millis(length / 10).clamp(millis(REMINDER_LEAD), 10 * 60 * 1000);
    expires_ms.saturating_sub(before)
}

/// The least time before its end that a lease's holder is reminded.
pub const REMINDER_LEAD: Duration = Duration::from_secs(5);

/// The environment variable a task finds the host of its slot of `pool` in:
/// `KILN_RESOURCE_DEVICE_LAB` for `device-lab`.
pub fn resource_variable(pool: &str) -> String {
    let name: String = pool
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("KILN_RESOURCE_{name}")
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_lease_runs_for_what_was_asked_within_the_maximum() {
        assert_eq!(lease_length(None, 2 * HOUR, 8 * HOUR), Ok(2 * HOUR));
        assert_eq!(lease_length(Some(HOUR), 2 * HOUR, 8 * HOUR), Ok(HOUR));
        assert_eq!(
            lease_length(Some(9 * HOUR), 2 * HOUR, 8 * HOUR),
            Err("this pool lends for at most 8h".into())
        );
    }

    #[test]
    fn an_extension_stops_at_the_maximum_from_now() {
        let h = 3_600_000;
        assert_eq!(extended(0, h, HOUR, 8 * HOUR), (2 * h, false));
        assert_eq!(extended(0, 7 * h, 2 * HOUR, 8 * HOUR), (8 * h, true));
        // A lease already past its end is extended from now.
        assert_eq!(extended(5 * h, 4 * h, HOUR, 8 * HOUR), (6 * h, false));
    }

    #[test]
    fn a_resource_is_an_environment_variable() {
        assert_eq!(resource_variable("device-lab"), "KILN_RESOURCE_DEVICE_LAB");
        assert_eq!(resource_variable("gpu.v2"), "KILN_RESOURCE_GPU_V2");
    }

    #[test]
    fn reminders_come_before_the_end() {
        assert_eq!(reminder_at(100 * 60_000, 2 * HOUR), 90 * 60_000);
        assert_eq!(reminder_at(600_000, Duration::from_secs(600)), 540_000);
        assert_eq!(reminder_at(60_000, Duration::from_secs(10)), 55_000);
    }
}

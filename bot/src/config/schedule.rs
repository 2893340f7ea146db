//! When a schedule (`[[repository.schedule]]`) is due: its cron expression, read in its
//! time zone.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;

use super::Schedule;

/// When a schedule is due: its cron expression read in its time zone.
#[derive(Debug, Clone)]
pub struct When {
    cron: Cron,
    zone: Tz,
}

impl When {
    /// A schedule's times, or why its `cron` or `timezone` is not one.
    pub fn of(schedule: &Schedule) -> Result<Self, String> {
        let cron = Cron::from_str(&schedule.cron)
            .map_err(|e| format!("`{}` is not a cron expression: {e}", schedule.cron))?;
        let zone = Tz::from_str(&schedule.timezone)
            .map_err(|_| format!("`{}` is not a time zone", schedule.timezone))?;
        Ok(Self { cron, zone })
    }

    /// The latest due time at or before `now`.
    pub fn latest(&self, now: DateTime<Utc>) -> Option<DateTime<Tz>> {
        let now = now.with_timezone(&self.zone);
        self.cron.find_previous_occurrence(&now, true).ok()
    }

    /// The first due time after `now`.
    pub fn next(&self, now: DateTime<Utc>) -> Option<DateTime<Tz>> {
        let now = now.with_timezone(&self.zone);
        self.cron.find_next_occurrence(&now, false).ok()
    }

    /// The due time before `time`.
    pub fn before(&self, time: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        self.cron.find_previous_occurrence(time, false).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(cron: &str, timezone: &str) -> Schedule {
        Schedule {
            name: "nightly".into(),
            cron: cron.into(),
            branch: "master".into(),
            vars: Default::default(),
            timezone: timezone.into(),
            from_file: false,
        }
    }

    #[test]
    fn due_times_are_read_in_the_schedules_time_zone() {
        let when = When::of(&schedule("0 2 * * *", "Europe/Berlin")).expect("valid");
        let now: DateTime<Utc> = "2026-12-07T12:00:00Z".parse().expect("a time");
        let latest = when.latest(now).expect("due before");
        assert_eq!(latest.to_rfc3339(), "2026-12-07T02:00:00+01:00");
        assert_eq!(
            latest.with_timezone(&Utc).to_rfc3339(),
            "2026-12-07T01:00:00+00:00"
        );
        let next = when.next(now).expect("due after");
        assert_eq!(next.to_rfc3339(), "2026-12-08T02:00:00+01:00");
        assert_eq!(
            when.before(&latest).map(|t| t.to_rfc3339()).as_deref(),
            Some("2026-12-06T02:00:00+01:00")
        );
        // Six fields: seconds first.
        let when = When::of(&schedule("*/10 * * * * *", "UTC")).expect("valid");
        let latest = when.latest("2026-12-07T12:00:07Z".parse().expect("a time"));
        assert_eq!(
            latest.map(|t| t.to_rfc3339()).as_deref(),
            Some("2026-12-07T12:00:00+00:00")
        );
    }

    #[test]
    fn a_bad_expression_or_zone_is_said() {
        let e = When::of(&schedule("61 * * * *", "UTC")).expect_err("bad minute");
        assert!(e.contains("`61 * * * *` is not a cron expression"), "{e}");
        let e = When::of(&schedule("0 2 * * *", "Mars/Olympus")).expect_err("bad zone");
        assert_eq!(e, "`Mars/Olympus` is not a time zone");
    }
}

//! `[retention]`: how long Kiln keeps what its builds leave in Redis.
//!
//! When a build ends, its tasks' logs are archived (compressed) to the installation's store:
//! the registry when there is one, else `archive_dir`. Redis then keeps each log's stream for
//! `logs_in_redis`, and the build's records for `builds`; readers take a log from the archive
//! once its stream is gone. With neither a registry nor `archive_dir`, logs stay in Redis as
//! long as the build's records.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The installation's rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// How long an ended build's records (the build, its tasks, their logs) stay.
    #[serde(default = "default_builds", with = "humantime_serde")]
    pub builds: Duration,
    /// How long an ended build's logs stay in Redis once archived.
    #[serde(default = "default_logs_in_redis", with = "humantime_serde")]
    pub logs_in_redis: Duration,
    /// Where logs are archived when there is no `[registry]`: a directory of the bot's
    /// host (every bot of the installation must see the same one).
    #[serde(default)]
    pub archive_dir: Option<PathBuf>,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            builds: default_builds(),
            logs_in_redis: default_logs_in_redis(),
            archive_dir: None,
        }
    }
}

/// A repository's own rules, each in place of the installation's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionOverride {
    #[serde(default, with = "humantime_serde")]
    pub builds: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub logs_in_redis: Option<Duration>,
}

/// What holds for one repository's builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kept {
    pub builds: Duration,
    pub logs_in_redis: Duration,
}

impl Retention {
    /// The rules for a repository with `own` rules (if any).
    pub fn for_repository(&self, own: Option<&RetentionOverride>) -> Kept {
        let own = own.cloned().unwrap_or_default();
        let builds = own.builds.unwrap_or(self.builds);
        Kept {
            builds,
            // A log is never kept in Redis past its build.
            logs_in_redis: own.logs_in_redis.unwrap_or(self.logs_in_redis).min(builds),
        }
    }
}

fn default_builds() -> Duration {
    Duration::from_secs(90 * 24 * 60 * 60)
}

fn default_logs_in_redis() -> Duration {
    Duration::from_secs(7 * 24 * 60 * 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_overrides_what_it_names() {
        let retention: Retention = toml::from_str("builds = \"30d\"").expect("parses");
        assert_eq!(retention.logs_in_redis, default_logs_in_redis());
        let own: RetentionOverride = toml::from_str("logs_in_redis = \"1h\"").expect("parses");
        assert_eq!(
            retention.for_repository(Some(&own)),
            Kept {
                builds: Duration::from_secs(30 * 24 * 60 * 60),
                logs_in_redis: Duration::from_secs(60 * 60),
            }
        );
        let short: RetentionOverride = toml::from_str("builds = \"1d\"").expect("parses");
        assert_eq!(
            retention.for_repository(Some(&short)).logs_in_redis,
            Duration::from_secs(24 * 60 * 60),
            "a log does not outlive its build"
        );
        assert!(toml::from_str::<Retention>("builds = \"soon\"").is_err());
    }
}

//! The bot's metrics, served at `GET /metrics` in Prometheus's text format: webhooks by forge
//! and answer, builds by status with their durations, task durations by outcome, planning
//! time, chat and forge API calls by result, and (read from the broker when scraped) the jobs
//! waiting and the workers taking them per platform.
//!
//! Builds are counted where their end's compare-and-set wins, so once. Task durations are
//! counted per `task.finished` event handled, and planning per first planning of a build:
//! an event handled twice (a redelivery after a lost connection) counts twice, which is rare.

use std::time::Duration;

use kiln_io::metrics::duration_buckets;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub forge: String,
    pub answer: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// `discord`, `slack`, `zulip`, `github`, `gitlab`.
    pub api: String,
    /// `ok` or `error`.
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlatformLabels {
    pub platform: String,
}

/// Which of the bot's in-memory caches (`crate::kept`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KeptLabels {
    pub cache: &'static str,
}

/// Planning takes milliseconds: from 1 ms to about 4 s.
fn planning_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 13)
}

/// Every metric of the bot, and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub webhooks: Family<WebhookLabels, Counter>,
    pub builds: Family<StatusLabels, Counter>,
    pub build_seconds: Family<StatusLabels, Histogram>,
    pub task_seconds: Family<StatusLabels, Histogram>,
    pub planning_seconds: Histogram,
    pub api_calls: Family<CallLabels, Counter>,
    pub jobs_waiting: Family<PlatformLabels, Gauge>,
    pub job_consumers: Family<PlatformLabels, Gauge>,
    pub kept_bytes: Family<KeptLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kiln");
        let webhooks = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhooks",
            "Forge deliveries, by forge and HTTP answer",
            webhooks.clone(),
        );
        let builds = Family::<StatusLabels, Counter>::default();
        registry.register("builds", "Builds ended, by status", builds.clone());
        let build_seconds = Family::<StatusLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(duration_buckets())
        });
        registry.register(
            "build_duration_seconds",
            "From a build's request to its end, by status",
            build_seconds.clone(),
        );
        let task_seconds = Family::<StatusLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(duration_buckets())
        });
        registry.register(
            "task_duration_seconds",
            "How long tasks ran on their workers, by outcome",
            task_seconds.clone(),
        );
        let planning_seconds = Histogram::new(planning_buckets());
        registry.register(
            "planning_duration_seconds",
            "From the bot's taking a build's request to its jobs queued",
            planning_seconds.clone(),
        );
        let api_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "api_calls",
            "Calls to chat and forge APIs, by API and result",
            api_calls.clone(),
        );
        let jobs_waiting = Family::<PlatformLabels, Gauge>::default();
        registry.register(
            "jobs_waiting",
            "Jobs waiting in each platform's queue",
            jobs_waiting.clone(),
        );
        let job_consumers = Family::<PlatformLabels, Gauge>::default();
        registry.register(
            "job_consumers",
            "Workers taking jobs from each platform's queue",
            job_consumers.clone(),
        );
        let kept_bytes = Family::<KeptLabels, Gauge>::default();
        registry.register(
            "kept_bytes",
            "What the bot keeps in memory to avoid reading again, by cache, weighed by the \
             texts it was read from",
            kept_bytes.clone(),
        );
        Self {
            registry,
            webhooks,
            builds,
            build_seconds,
            task_seconds,
            planning_seconds,
            api_calls,
            jobs_waiting,
            job_consumers,
            kept_bytes,
        }
    }
}

impl Metrics {
    /// Counts one call to `api` that ended as `ok` says.
    pub fn called(&self, api: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.api_calls
            .get_or_create(&CallLabels {
                api: api.to_owned(),
                result,
            })
            .inc();
    }

    /// Counts a build that ended with `status` after `took`.
    pub fn build_ended(&self, status: &str, took: Option<Duration>) {
        let labels = StatusLabels {
            status: status.to_owned(),
        };
        self.builds.get_or_create(&labels).inc();
        if let Some(took) = took {
            self.build_seconds
                .get_or_create(&labels)
                .observe(took.as_secs_f64());
        }
    }

    /// Notes a task that ran for `took` and ended with `status`.
    pub fn task_ended(&self, status: &str, took: Duration) {
        let labels = StatusLabels {
            status: status.to_owned(),
        };
        self.task_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Sets what `platform`'s job queue holds.
    pub fn queue(&self, platform: &str, waiting: u32, consumers: u32) {
        let labels = PlatformLabels {
            platform: platform.to_owned(),
        };
        self.jobs_waiting
            .get_or_create(&labels)
            .set(i64::from(waiting));
        self.job_consumers
            .get_or_create(&labels)
            .set(i64::from(consumers));
    }

    /// Sets what cache `cache` keeps, in bytes.
    pub fn kept(&self, cache: &'static str, bytes: u64) {
        self.kept_bytes
            .get_or_create(&KeptLabels { cache })
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Every metric in Prometheus's text format.
    pub fn encode(&self) -> String {
        kiln_io::metrics::encode(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_encoded_with_their_labels() {
        let metrics = Metrics::default();
        metrics
            .webhooks
            .get_or_create(&WebhookLabels {
                forge: "github".into(),
                answer: 202,
            })
            .inc();
        metrics.build_ended("passed", Some(Duration::from_secs(3)));
        metrics.called("slack", false);
        metrics.queue("linux-x86_64", 4, 1);
        metrics.kept("plans", 2048);
        let text = metrics.encode();
        for line in [
            "kiln_webhooks_total{forge=\"github\",answer=\"202\"} 1",
            "kiln_builds_total{status=\"passed\"} 1",
            "kiln_build_duration_seconds_count{status=\"passed\"} 1",
            "kiln_api_calls_total{api=\"slack\",result=\"error\"} 1",
            "kiln_jobs_waiting{platform=\"linux-x86_64\"} 4",
            "kiln_kept_bytes{cache=\"plans\"} 2048",
            "kiln_job_consumers{platform=\"linux-x86_64\"} 1",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}

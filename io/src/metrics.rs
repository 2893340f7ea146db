//! What the bot's and the workers' Prometheus metrics share: their encoding and content
//! type, and the buckets of task and build durations.

use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;

/// The content type of [`encode`]'s text (OpenMetrics, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric of `registry` in OpenMetrics text.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing to a String does not fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}

/// Buckets for tasks and builds: from a tenth of a second to about an hour and a half.
pub fn duration_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.1, 2.0, 16)
}

//! A worker's metrics, served at `GET /metrics` in Prometheus's text format on
//! `--metrics-listen` (off by default: a worker otherwise has no inbound port): its slots and
//! the jobs it holds, task durations by outcome, in-tree images built, pulled and reused, and
//! log lines stored.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::Worker;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ImageLabels {
    /// `built`, `pulled` or `reused`.
    pub how: &'static str,
}

/// Every metric of a worker.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub slots: Gauge,
    pub running: Gauge,
    pub task_seconds: Family<OutcomeLabels, Histogram>,
    pub images: Family<ImageLabels, Counter>,
    pub log_lines: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kiln_worker");
        let slots = Gauge::default();
        registry.register("slots", "How many tasks it runs at once", slots.clone());
        let running = Gauge::default();
        registry.register("running", "The jobs it holds now", running.clone());
        let task_seconds = Family::<OutcomeLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(kiln_io::metrics::duration_buckets())
        });
        registry.register(
            "task_duration_seconds",
            "How long its tasks ran, by outcome",
            task_seconds.clone(),
        );
        let images = Family::<ImageLabels, Counter>::default();
        registry.register(
            "images",
            "In-tree images its tasks ran in: built, pulled from the registry, or reused",
            images.clone(),
        );
        let log_lines = Counter::default();
        registry.register("log_lines", "Log lines stored", log_lines.clone());
        Self {
            registry,
            slots,
            running,
            task_seconds,
            images,
            log_lines,
        }
    }
}

impl Metrics {
    /// Every metric in Prometheus's text format.
    pub fn encode(&self) -> String {
        kiln_io::metrics::encode(&self.registry)
    }
}

/// Serves `GET /metrics` on `listener` until `stop`.
pub async fn serve(
    worker: Arc<Worker>,
    listener: tokio::net::TcpListener,
    stop: CancellationToken,
) {
    let app = axum::Router::new()
        .route("/metrics", get(show))
        .with_state(worker);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(error) = served {
        tracing::warn!(%error, "the metrics listener stopped");
    }
}

/// Binds the metrics listener at `addr`.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}"))
}

async fn show(State(worker): State<Arc<Worker>>) -> impl IntoResponse {
    let held = i64::try_from(worker.running.now().len()).unwrap_or(i64::MAX);
    worker.metrics.running.set(held);
    let text = worker.metrics.encode();
    ([(CONTENT_TYPE, kiln_io::metrics::CONTENT_TYPE)], text)
}

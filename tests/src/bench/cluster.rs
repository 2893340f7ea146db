//! The same installation on a 3-node RabbitMQ cluster of the benchmark's own: a bot and a
//! worker given every node's URL, measured as on the single node, each figure beside the
//! single node's of the same run.

use super::{Bench, Figure, Options};
use crate::Kiln;
use crate::broker::TestCluster;

/// Push → `task.started` (p50) and signed pushes accepted per second on the cluster, beside
/// `single_started` and `single_accepted`, the single node's figures.
pub(super) async fn figures(
    options: Options,
    single_started: Option<&Figure>,
    single_accepted: Option<&Figure>,
) -> Vec<Figure> {
    let cluster = TestCluster::start(3).await;
    let services = crate::Services {
        amqp_url: cluster.urls(),
        redis_url: crate::Services::require().await.redis_url,
    };
    let kiln = Kiln::start_processes_on(services, &crate::config(""), 2).await;
    let bench = Bench::new(&kiln).await;
    bench
        .warm_up(&bench.pipeline("steps:\n  t:\n    runner: shell\n    run: 'true'\n"))
        .await;
    let mut started = bench.push_to_task_started(options).await;
    started.name = "cluster_push_to_task_started_p50";
    started.floor = single_started.map(|f| (f.name, f.value()));
    let mut accepted = bench.webhooks_accepted(options).await;
    accepted.name = "cluster_webhooks_accepted";
    accepted.floor = single_accepted.map(|f| (f.name, f.value()));
    drop(bench);
    kiln.stop().await;
    vec![started, accepted]
}

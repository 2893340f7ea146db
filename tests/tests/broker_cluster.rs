//! A 3-node RabbitMQ cluster of the test's own, with a bot and two workers (processes) given
//! every node's URL: the node the bot is connected to is stopped and started again during a
//! burst of 200 signed pushes. The bot and the workers move to another node, every push is
//! answered `202` and becomes exactly one build that passes, and the quorum queues keep
//! their jobs.

use std::time::{Duration, Instant};

use kiln_tests::broker::{TestBroker, TestCluster};
use kiln_tests::installation::Installation;
use kiln_tests::{E2E_TIMEOUT, Services, wait_for};

/// How many pushes the burst sends, and how often.
const BURST: usize = 200;
const PUSH_EVERY: Duration = Duration::from_millis(40);

/// The broker port of the connection named `client` (`kiln-bot`, or a worker's name), as a
/// running node of the cluster lists it; `None` while it has none, or only on `gone`.
async fn port_of(running: &TestBroker, client: &str, gone: Option<u16>) -> Option<u16> {
    let listed = running
        .ctl(&[
            "list_connections",
            "port",
            "client_properties",
            "--no-table-headers",
        ])
        .await;
    listed
        .lines()
        .filter(|line| line.contains(client))
        .filter_map(|line| line.split_whitespace().next()?.parse().ok())
        .find(|port| Some(*port) != gone)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_through_a_node_stopped_and_started_is_built_once() {
    let shared = Services::require().await;
    let cluster = TestCluster::start(3).await;
    let services = Services {
        amqp_url: cluster.urls(),
        redis_url: shared.redis_url,
    };
    let mut kiln = Installation::start(services).await;

    let first = &cluster.nodes[0];
    let port = wait_for("the bot to be connected", E2E_TIMEOUT, || {
        port_of(first, "kiln-bot", None)
    })
    .await;
    let node = cluster.on_port(port);
    let running = cluster
        .nodes
        .iter()
        .find(|n| n.port != port)
        .expect("another node");

    let pusher = kiln.pusher();
    let numbered = kiln.builds_numbered().await;
    let burst = tokio::spawn(async move { pusher.burst("burst", BURST, PUSH_EVERY).await });
    // The node goes once the burst is well under way.
    wait_for(
        "the burst's first pushes to be built",
        E2E_TIMEOUT,
        || async { (kiln.builds_numbered().await >= numbered + 20).then_some(()) },
    )
    .await;
    let stopped = Instant::now();
    node.stop_app().await;
    let moved = wait_for("the bot to move to another node", E2E_TIMEOUT, || async {
        port_of(running, "kiln-bot", Some(port)).await
    })
    .await;
    let took = stopped.elapsed();
    for name in kiln.worker_names() {
        wait_for(&format!("{name} to be connected"), E2E_TIMEOUT, || async {
            port_of(running, &name, Some(port)).await
        })
        .await;
    }
    kiln.check_running("with a node stopped");
    node.start_app().await;

    let answers = burst.await.expect("the burst");
    assert_eq!(answers.len(), BURST);
    let waited = kiln.check_builds(&answers).await;
    kiln.check_running("at the end");
    let queues = running
        .ctl(&["list_queues", "name", "type", "--no-table-headers"])
        .await;
    let jobs = format!("{}.jobs.linux-amd64", kiln.prefix);
    assert!(
        queues
            .lines()
            .any(|l| l.starts_with(&jobs) && l.contains("quorum")),
        "{queues}"
    );
    eprintln!(
        "{BURST} pushes through a node's stop and start, all built once ({waited} waited in \
         the outbox); the bot moved from port {port} to {moved} {took:?} after the stop began"
    );
    kiln.stop().await;
}

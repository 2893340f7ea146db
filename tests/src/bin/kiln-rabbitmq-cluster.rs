//! `kiln-rabbitmq-cluster [NODES]`: starts a RabbitMQ cluster of its own on this machine (3
//! nodes by default, each with its own name, ports and data directory, the shared broker
//! untouched), prints the URL list to give `--amqp-url`, and stops the nodes on Ctrl-C or
//! SIGTERM. The
//! same cluster the tests and the benchmark start (`kiln_tests::broker::TestCluster`).

use kiln_tests::broker::TestCluster;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let size = match std::env::args().nth(1) {
        None => 3,
        Some(n) => n.parse().unwrap_or_else(|_| {
            eprintln!("usage: kiln-rabbitmq-cluster [NODES]");
            std::process::exit(2)
        }),
    };
    eprintln!("starting {size} RabbitMQ nodes…");
    let cluster = TestCluster::start(size).await;
    for node in &cluster.nodes {
        eprintln!("  {} on port {}", node.node(), node.port);
    }
    println!("{}", cluster.urls());
    eprintln!("running; Ctrl-C (or SIGTERM) stops every node");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(cluster);
}

//! The real services the tests run against, and their cleanup.

use std::sync::atomic::{AtomicU32, Ordering};

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, ListNetworksOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
};
use futures_util::StreamExt;
use kiln_shared::routing::Topology;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};

use crate::{TEST_IMAGE, TEST_IMAGE_ARM64};

/// Where RabbitMQ, Redis and Docker are.
#[derive(Debug, Clone)]
pub struct Services {
    /// One node's URL, or a cluster's separated by commas (as Kiln's `--amqp-url` takes them).
    pub amqp_url: String,
    pub redis_url: String,
}

impl Services {
    /// The URL of the first node: what a plain AMQP client of the test connects to.
    pub fn first_amqp_url(&self) -> &str {
        self.amqp_url.split(',').next().unwrap_or_default()
    }
}

/// How long a service has to answer the check before the test fails.
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(20);

pub(crate) const START_THEM: &str =
    "start them with `deploy/dev/services` (the README's test command does)";

/// A prefix no other test, run or process uses.
pub fn unique_prefix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "kt{:x}{:x}{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl Services {
    /// The services from `KILN_AMQP_URL` / `KILN_REDIS_URL` (or their local defaults), each
    /// checked: a missing one fails the test, it never skips it.
    pub async fn require() -> Self {
        let services = Self {
            amqp_url: std::env::var("KILN_AMQP_URL")
                .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
            redis_url: std::env::var("KILN_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379/".into()),
        };
        // A broker that takes the connection and never answers fails the test, not hangs it.
        let connecting = Connection::connect(&services.amqp_url, ConnectionProperties::default());
        tokio::time::timeout(ANSWER_WITHIN, connecting)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "RabbitMQ at {} took the connection but did not answer within \
                     {ANSWER_WITHIN:?}: is it wedged? Restart it (`deploy/dev/services`)",
                    services.amqp_url
                )
            })
            .unwrap_or_else(|e| {
                panic!(
                    "RabbitMQ at {} is unreachable ({e}): {START_THEM}",
                    services.amqp_url
                )
            });
        let mut redis = redis::Client::open(services.redis_url.as_str())
            .and_then(|c| c.get_connection_with_timeout(ANSWER_WITHIN))
            .unwrap_or_else(|e| {
                panic!(
                    "Redis at {} is unreachable ({e}): {START_THEM}",
                    services.redis_url
                )
            });
        redis
            .set_read_timeout(Some(ANSWER_WITHIN))
            .expect("a read timeout");
        let _: String = redis::cmd("PING")
            .query(&mut redis)
            .expect("Redis answers PING");
        let docker = Docker::connect_with_local_defaults()
            .expect("Docker client")
            .negotiate_version()
            .await
            .unwrap_or_else(|e| panic!("Docker is unreachable ({e}): {START_THEM}"));
        for image in [TEST_IMAGE, TEST_IMAGE_ARM64] {
            docker.inspect_image(image).await.unwrap_or_else(|e| {
                panic!("the test image {image} is missing ({e}): {START_THEM}")
            });
        }
        services
    }

    /// Removes every queue, exchange, Redis key, container and network a test made under
    /// `prefix`, and the in-tree images built on its branches (named `<prefix>-…`).
    pub async fn remove_everything_under(&self, prefix: &str) {
        if let Ok(connection) =
            Connection::connect(self.first_amqp_url(), ConnectionProperties::default()).await
            && let Ok(channel) = connection.create_channel().await
        {
            let queues = Topology::new(prefix)
                .queues()
                .into_iter()
                .chain([format!("{prefix}.test.events")]);
            for queue in queues {
                let _ = channel
                    .queue_delete(queue.into(), QueueDeleteOptions::default())
                    .await;
            }
            for exchange in ["jobs", "events", "dead"] {
                let _ = channel
                    .exchange_delete(
                        format!("{prefix}.{exchange}").into(),
                        ExchangeDeleteOptions::default(),
                    )
                    .await;
            }
        }
        if let Ok(mut redis) =
            redis::Client::open(self.redis_url.as_str()).and_then(|c| c.get_connection())
        {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}:*"))
                .query(&mut redis)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut redis);
            }
        }
        if let Ok(docker) = Docker::connect_with_local_defaults() {
            for name in containers_named(&docker, prefix).await {
                let options = RemoveContainerOptionsBuilder::new()
                    .force(true)
                    .v(true)
                    .build();
                let _ = docker.remove_container(&name, Some(options)).await;
            }
            for name in networks_named(&docker, prefix).await {
                let _ = docker.remove_network(&name).await;
            }
            for id in images_of_branches(&docker, prefix).await {
                let options = RemoveImageOptionsBuilder::new().force(true).build();
                let _ = docker.remove_image(&id, Some(options), None).await;
            }
        }
    }
}

/// Ids of the in-tree images tagged with a branch whose name starts with `prefix`.
pub async fn images_of_branches(docker: &Docker, prefix: &str) -> Vec<String> {
    let reference = format!("kiln/*/*/*:{prefix}*");
    let filters = std::collections::HashMap::from([("reference", vec![reference.as_str()])]);
    let options = ListImagesOptionsBuilder::new().filters(&filters).build();
    docker
        .list_images(Some(options))
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.id)
        .collect()
}

/// Names of the networks whose name starts with `prefix`.
pub async fn networks_named(docker: &Docker, prefix: &str) -> Vec<String> {
    let filters = std::collections::HashMap::from([("name", vec![prefix])]);
    let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
    docker
        .list_networks(Some(options))
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| n.name)
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Names of the containers whose name starts with `prefix`, running or not.
pub async fn containers_named(docker: &Docker, prefix: &str) -> Vec<String> {
    let filters = std::collections::HashMap::from([("name", vec![prefix])]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let containers = docker
        .list_containers(Some(options))
        .await
        .unwrap_or_default();
    futures_util::stream::iter(containers)
        .filter_map(|c| async move { c.names.and_then(|n| n.first().cloned()) })
        .map(|n| n.trim_start_matches('/').to_owned())
        .collect()
        .await
}

//! The drain's floors: what its tasks need of the services and the machine, each done as
//! many times as the drain has tasks, as many at once as it has workers, with nothing of
//! Kiln's around it but the work directories (made and removed by the worker's own code,
//! alone): a consume and an acknowledgement, a claim's round trip, a work directory, and a
//! process started. Their sum is the drain's floor.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use futures_util::{StreamExt, stream};
use kiln_worker::checkout::{Checkouts, WorkDirs};
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicQosOptions, QueueDeleteOptions};
use tokio_util::sync::CancellationToken;

use super::{Figure, consume, floor_queue};

/// The floors of a drain of `total` tasks by `workers` workers, of commit `commit` of
/// `clone_url` with work directories `made` so, in seconds: consume and ack, claim, work
/// directories, spawn.
pub(super) async fn floors(
    workers: usize,
    total: usize,
    (clone_url, commit): (&str, &str),
    made: WorkDirs,
) -> [f64; 4] {
    [
        consume_ack(workers, total).await,
        claims(workers, total).await,
        work_dirs(workers, total, clone_url, commit, made).await,
        spawns(workers, total).await,
    ]
}

/// The floors' figures and their sum, from each run's floors.
pub(super) fn floors_figures(runs: &[[f64; 4]]) -> (Vec<Figure>, Figure) {
    const NAMES: [&str; 4] = [
        "floor_drain_consume_ack",
        "floor_drain_claim",
        "floor_drain_work_dirs",
        "floor_drain_spawn",
    ];
    let parts = NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| Figure::new(name, "s", runs.iter().map(|run| run[i]).collect()))
        .collect();
    let sums = runs.iter().map(|run| run.iter().sum()).collect();
    (parts, Figure::new("floor_drain", "s", sums))
}

/// `total` messages, already queued, taken by `workers` consumers of one message at a time,
/// each acknowledged.
async fn consume_ack(workers: usize, total: usize) -> f64 {
    let (connection, channel, queue) = floor_queue("drain").await;
    let body = [0u8; 256];
    let confirms: Vec<_> = stream::iter(0..total)
        .then(|_| {
            channel.basic_publish(
                "".into(),
                queue.as_str().into(),
                lapin::options::BasicPublishOptions::default(),
                &body,
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
        })
        .collect()
        .await;
    for confirm in confirms {
        confirm.expect("publish").await.expect("confirm");
    }
    let taken = Arc::new(AtomicUsize::new(0));
    let all_taken = CancellationToken::new();
    let begun = Instant::now();
    let consumers = (0..workers).map(|_| {
        let (connection, queue, taken, all_taken) =
            (&connection, &queue, taken.clone(), all_taken.clone());
        async move {
            let channel = connection.create_channel().await.expect("channel");
            channel
                .basic_qos(1, BasicQosOptions::default())
                .await
                .expect("qos");
            let mut consumer = consume(&channel, queue).await;
            loop {
                let next = tokio::select! {
                    next = tokio::time::timeout(crate::E2E_TIMEOUT, consumer.next()) => next,
                    () = all_taken.cancelled() => break,
                };
                let Ok(Some(Ok(delivery))) = next else { break };
                delivery.ack(BasicAckOptions::default()).await.expect("ack");
                if taken.fetch_add(1, Ordering::Relaxed) + 1 == total {
                    all_taken.cancel();
                }
            }
            (channel, consumer)
        }
    });
    let channels = futures_util::future::join_all(consumers).await;
    let took = begun.elapsed().as_secs_f64();
    for (channel, consumer) in channels {
        channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await
            .expect("cancel the consumer");
        channel
            .close(0, "".into())
            .await
            .expect("close the channel");
    }
    assert_eq!(taken.load(Ordering::Relaxed), total, "every message taken");
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete the queue");
    let _ = connection.close(0, "".into()).await;
    took
}

/// `total` compare-and-sets of a task's owner, one round trip each, `workers` at once.
async fn claims(workers: usize, total: usize) -> f64 {
    let services = crate::Services::require().await;
    let client = redis::Client::open(services.redis_url.as_str()).expect("Redis URL");
    let conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let script = redis::Script::new(
        r"
local owner = redis.call('HGET', KEYS[1], 'worker')
if owner and owner ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'worker', ARGV[1], 'status', 'running')
return 1
",
    );
    let prefix = format!("{}-bench-claim", crate::services::unique_prefix());
    let begun = Instant::now();
    stream::iter(0..total)
        .for_each_concurrent(workers, |n| {
            let (mut conn, script, key) = (conn.clone(), &script, format!("{prefix}-{n}"));
            async move {
                let claimed: i64 = script
                    .key(key)
                    .arg("worker")
                    .arg("")
                    .invoke_async(&mut conn)
                    .await
                    .expect("claim");
                assert_eq!(claimed, 1);
            }
        })
        .await;
    let took = begun.elapsed().as_secs_f64();
    for chunk in (0..total).collect::<Vec<_>>().chunks(1_000) {
        let keys: Vec<String> = chunk.iter().map(|n| format!("{prefix}-{n}")).collect();
        let _: i64 = redis::cmd("UNLINK")
            .arg(keys)
            .query_async(&mut conn.clone())
            .await
            .expect("UNLINK");
    }
    took
}

/// `total` work directories of `commit` made and removed by the worker's own code (the
/// commit's pristine checkout made before), `workers` at once.
async fn work_dirs(
    workers: usize,
    total: usize,
    clone_url: &str,
    commit: &str,
    made: WorkDirs,
) -> f64 {
    let root = tempfile::tempdir().expect("temp dir");
    let checkouts = Checkouts::open(root.path(), made, None)
        .await
        .expect("the work directories' root");
    let first = checkouts
        .checkout(clone_url, commit, None, "first")
        .await
        .expect("the pristine checkout");
    drop(first);
    checkouts.remove("first").await;
    let begun = Instant::now();
    stream::iter(0..total)
        .for_each_concurrent(workers, |n| {
            let checkouts = &checkouts;
            async move {
                let name = format!("t{n}");
                let dir = checkouts
                    .checkout(clone_url, commit, None, &name)
                    .await
                    .expect("a work directory");
                drop(dir);
                checkouts.remove(&name).await;
            }
        })
        .await;
    begun.elapsed().as_secs_f64()
}

/// `total` shells started, each running one `echo`, `workers` at once.
async fn spawns(workers: usize, total: usize) -> f64 {
    let begun = Instant::now();
    stream::iter(0..total)
        .for_each_concurrent(workers, |_| async {
            let status = tokio::process::Command::new("sh")
                .args(["-c", "echo ran > /dev/null"])
                .status()
                .await
                .expect("sh starts");
            assert!(status.success());
        })
        .await;
    begun.elapsed().as_secs_f64()
}

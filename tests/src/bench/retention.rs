//! Retention's figures: how much of Redis a finished build takes before its logs are
//! archived and after (the keys of a build of five tasks of 1,000 lines each, as Redis
//! counts them with `MEMORY USAGE`), and what a stream of builds leaves once their records
//! have expired.

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;

use super::{Figure, Options, Target};
use crate::forge::TestRepo;
use crate::registry::TestRegistry;
use crate::{Kiln, wait_for};

/// A pipeline of five tasks, each writing 1,000 lines.
fn spec() -> String {
    let mut spec = String::from("steps:\n");
    for task in 1..=5 {
        spec.push_str(&format!(
            "  t{task}:\n    runner: shell\n    run: for i in $(seq 1 1000); do echo \"compiling unit $i of task {task}\"; done\n"
        ));
    }
    spec
}

/// How long an ended build may take to be archived (the keeper waits 10 s after the end).
const ARCHIVED_WITHIN: Duration = Duration::from_secs(120);

/// The bytes Redis holds for keys matching `pattern` (this Kiln's own prefix only).
async fn bytes_of(redis: &mut MultiplexedConnection, pattern: &str) -> f64 {
    let keys: Vec<String> = redis.keys(pattern).await.expect("keys");
    let mut total = 0.0;
    for key in keys {
        let used: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(redis)
            .await
            .expect("MEMORY USAGE");
        total += used.unwrap_or(0) as f64;
    }
    total
}

/// The bytes of build `id`'s keys: its record, its tasks', its counters and its logs.
async fn build_bytes(redis: &mut MultiplexedConnection, prefix: &str, id: u64) -> f64 {
    bytes_of(redis, &format!("{prefix}:build:{id}")).await
        + bytes_of(redis, &format!("{prefix}:build:{id}:*")).await
        + bytes_of(redis, &format!("{prefix}:logs:{id}:*")).await
}

/// A Kiln keeping artifacts and logs in `registry`, whose builds last 2 s and logs none in
/// Redis once archived, with `more` configuration; and a connection to its Redis.
async fn start(registry: &TestRegistry, more: &str) -> (Kiln, MultiplexedConnection) {
    let config = crate::config(&format!(
        "[registry]\naddress = \"{}\"\nauth = \"{}\"\n[retention]\nbuilds = \"2s\"\nlogs_in_redis = \"0s\"\n{more}",
        registry.addr,
        registry.auth.display()
    ));
    let kiln = Kiln::start_with_registry(&config, registry).await;
    let redis = redis::Client::open(kiln.services.redis_url.as_str())
        .expect("a Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers");
    (kiln, redis)
}

/// Redis's bytes per finished build before and after its logs are archived (target: at most
/// 2 KiB after), and, after a stream of builds that expire within seconds, what this Kiln's
/// keys hold in all (printed: it must not grow with the number of builds).
pub(super) async fn redis_per_build(options: Options) -> [Figure; 3] {
    let registry = TestRegistry::require();
    // The repository's builds stay an hour, to be measured once archived.
    let (kiln, mut redis) = start(&registry, "[repository.retention]\nbuilds = \"1h\"\n").await;
    let repo = TestRepo::new();
    let commit = repo.commit("master", "Five tasks", &[(".kiln.yml", &spec())]);
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for run in 0..options.count(3, 1) {
        let id = kiln
            .push(&repo, "master", &commit, &format!("retention-{run}"))
            .await;
        let build = kiln.finished_build(id).await;
        assert_eq!(build["status"], "passed", "{build:#}");
        before.push(build_bytes(&mut redis, &kiln.prefix, id).await);
        let logs = format!("{}:logs:{id}:*", kiln.prefix);
        wait_for("the build's logs archived", ARCHIVED_WITHIN, || {
            let mut redis = redis.clone();
            let logs = logs.clone();
            async move {
                let left: Vec<String> = redis.keys(&logs).await.ok()?;
                left.is_empty().then_some(())
            }
        })
        .await;
        after.push(build_bytes(&mut redis, &kiln.prefix, id).await);
    }
    kiln.stop().await;
    let before = Figure::new("redis_per_build_before_archive", "B", before);
    let mut after = Figure::new("redis_per_build_archived", "B", after);
    after.target = Some(Target::AtMost(2048.0));
    [before, after, soak(options, &registry).await]
}

/// What a Kiln's keys hold in Redis after a stream of builds whose records last 2 s, once the
/// last has expired: about what one build leaves for good (its delivery's deduplication,
/// the counters), not what each does.
async fn soak(options: Options, registry: &TestRegistry) -> Figure {
    let (kiln, mut redis) = start(registry, "").await;
    let repo = TestRepo::new();
    let spec = "steps:\n  t:\n    runner: shell\n    run: echo soak\n";
    let commit = repo.commit("master", "Soak", &[(".kiln.yml", spec)]);
    let builds = options.count(10_000, 10);
    let mut last = 0;
    for n in 0..builds {
        last = kiln
            .push(&repo, "master", &commit, &format!("soak-{n}"))
            .await;
    }
    kiln.finished_build(last).await;
    let pattern = format!("{}:build:{last}", kiln.prefix);
    wait_for("the last build expired", ARCHIVED_WITHIN, || {
        let mut redis = redis.clone();
        let pattern = pattern.clone();
        async move {
            let exists: bool = redis.exists(&pattern).await.ok()?;
            (!exists).then_some(())
        }
    })
    .await;
    let left = bytes_of(&mut redis, &format!("{}:*", kiln.prefix)).await;
    kiln.stop().await;
    let mut figure = Figure::new(
        "redis_after_soak_per_build",
        "B",
        vec![left / builds as f64],
    );
    figure.target = Some(Target::AtMost(2048.0));
    figure
}

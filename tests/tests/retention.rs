//! Retention, end to end on the real services: an ended build's logs are archived (to the
//! registry, or to a directory without one), read back from there once Redis has let their
//! streams go, and the build's records expire after `[retention] builds`.

use kiln_shared::build::BuildId;
use std::time::Duration;

use kiln_tests::forge::TestRepo;
use kiln_tests::registry::TestRegistry;
use kiln_tests::{E2E_TIMEOUT, Kiln, wait_for};
use redis::AsyncCommands;

const OPERATOR_TOKEN: &str = "retention-operator-token";

/// A task whose log has many lines, one of them looking like Kiln's own.
const SPEC: &str = "steps:\n  t:\n    runner: shell\n    run:\n      - for i in $(seq 1 500); do echo \"line $i\"; done\n      - echo '[kiln] not kiln' >&2\n";

/// How long an ended build may take to be archived: the keeper's delay after the end, its
/// pace, and some room.
const ARCHIVED_WITHIN: Duration = Duration::from_secs(60);

async fn redis(kiln: &Kiln) -> redis::aio::MultiplexedConnection {
    redis::Client::open(kiln.services.redis_url.as_str())
        .expect("a Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers")
}

fn operator() -> String {
    format!("[[operator]]\nname = \"ops\"\ntoken = \"{OPERATOR_TOKEN}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archived_log_is_read_from_the_registry_once_redis_lets_it_go() {
    let registry = TestRegistry::require();
    let config = kiln_tests::config(&format!(
        "{}[registry]\naddress = \"{}\"\nauth = \"{}\"\n[retention]\nbuilds = \"1h\"\nlogs_in_redis = \"0s\"\n",
        operator(),
        registry.addr,
        registry.auth.display()
    ));
    let kiln = Kiln::start_with_registry(&config, &registry).await;
    let repo = TestRepo::new();
    let commit = repo.commit("master", "Many lines", &[(".kiln.yml", SPEC)]);
    let id = kiln
        .push(&repo, "master", &commit, "retention-registry")
        .await;
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    // Read while Redis still has it (the keeper waits a while after the end).
    let before = kiln.task_log(id, "t").await;
    assert!(before.contains("line 500\n"), "{before}");
    assert!(before.contains("\\[kiln] not kiln"), "{before}");

    let mut redis = redis(&kiln).await;
    let keys = kiln.keys().await;
    let stream = keys.logs(BuildId(id), "t");
    let task = keys.task(BuildId(id), "t");
    let archived: String = wait_for(
        "the log archived and its stream gone",
        ARCHIVED_WITHIN,
        || {
            let mut redis = redis.clone();
            let (stream, task) = (stream.clone(), task.clone());
            async move {
                let exists: bool = redis.exists(&stream).await.ok()?;
                let archived: Option<String> = redis.hget(&task, "log_archive_json").await.ok()?;
                archived.filter(|_| !exists)
            }
        },
    )
    .await;
    let archived: serde_json::Value = serde_json::from_str(&archived).expect("json");
    assert_eq!(archived["lines"], 501, "{archived}");
    assert!(
        archived["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{archived}"
    );

    // Every reader now reads the archive, and sees what it saw before.
    assert_eq!(kiln.task_log(id, "t").await, before);
    let followed = kiln
        .follow_log(id, "t")
        .await
        .text()
        .await
        .expect("the whole log");
    assert_eq!(followed, before);
    let (status, reply) = kiln
        .command_text(OPERATOR_TOKEN, &format!("logs {id} t --lines 3"))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("line 500"), "{reply}");
    assert!(
        reply.contains("of 501 line"),
        "the whole log's length: {reply}"
    );

    // The build's records stay, for an hour.
    let ttl: i64 = redis
        .ttl(format!("{}:build:{id}", kiln.prefix))
        .await
        .expect("a TTL");
    assert!((3500..=3600).contains(&ttl), "{ttl}");
    let ttl: i64 = redis.ttl(&task).await.expect("a TTL");
    assert!((3500..=3600).contains(&ttl), "{ttl}");
    kiln.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_registry_logs_go_to_a_directory_and_a_build_expires_whole() {
    let archive = tempfile::tempdir().expect("an archive directory");
    let config = kiln_tests::config(&format!(
        "[retention]\nbuilds = \"3s\"\nlogs_in_redis = \"1h\"\narchive_dir = \"{}\"\n",
        archive.path().display()
    ));
    let kiln = Kiln::start(&config).await;
    let repo = TestRepo::new();
    let commit = repo.commit("master", "Many lines", &[(".kiln.yml", SPEC)]);
    let id = kiln.push(&repo, "master", &commit, "retention-dir").await;
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "passed", "{build:#}");

    // The build is gone after its three seconds, and with it everything it kept in Redis.
    wait_for("the build expired", ARCHIVED_WITHIN, || async {
        kiln.build(id).await.is_none().then_some(())
    })
    .await;
    let mut redis = redis(&kiln).await;
    let mut left: Vec<String> = Vec::new();
    for pattern in [
        format!("{}:build:{id}", kiln.prefix),
        format!("{}:build:{id}:*", kiln.prefix),
        format!("{}:logs:{id}:*", kiln.prefix),
    ] {
        let keys: Vec<String> = redis.keys(&pattern).await.expect("keys");
        left.extend(keys);
    }
    // A log kept in Redis for an hour still goes with its build, which lasts three seconds.
    assert!(left.is_empty(), "{left:?}");

    // Its log was archived first, by content.
    let blobs: Vec<_> = std::fs::read_dir(archive.path().join("sha256"))
        .expect("the archive has blobs")
        .collect();
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    let response = kiln
        .http
        .get(kiln.url(&format!("/builds/{id}/logs?task=t")))
        .timeout(E2E_TIMEOUT)
        .send()
        .await
        .expect("the bot answers");
    assert_eq!(response.status(), 404);
    kiln.stop().await;
}

/// A build that ended before its Kiln had retention (no due note, no expiry) is found by the
/// first bot that starts with retention, and expires like the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_from_before_retention_is_found_and_expires() {
    let config = kiln_tests::config("[retention]\nbuilds = \"3s\"\n");
    let mut kiln = Kiln::start(&config).await;
    let repo = TestRepo::new();
    let commit = repo.commit("master", "Old", &[(".kiln.yml", SPEC)]);
    let id = kiln.push(&repo, "master", &commit, "retention-old").await;
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "passed", "{build:#}");

    // Made to look like a build from before: within the keeper's 10 s after the end, its
    // due note is taken out, and no sweep has been done.
    kiln.halt().await;
    let mut redis = redis(&kiln).await;
    let build_key = format!("{}:build:{id}", kiln.prefix);
    let _: () = redis
        .zrem(format!("{}:retention:due", kiln.prefix), id)
        .await
        .expect("ZREM");
    let _: () = redis.persist(&build_key).await.expect("PERSIST");
    let _: () = redis
        .del(format!("{}:retention:swept", kiln.prefix))
        .await
        .expect("DEL");
    let ttl: i64 = redis.ttl(&build_key).await.expect("a TTL");
    assert_eq!(ttl, -1, "the build has no expiry");

    kiln.start_bot(&config).await;
    wait_for("the old build expired", ARCHIVED_WITHIN, || async {
        kiln.build(id).await.is_none().then_some(())
    })
    .await;
    let swept: bool = redis
        .exists(format!("{}:retention:swept", kiln.prefix))
        .await
        .expect("EXISTS");
    assert!(swept, "the sweep is done once");
    kiln.stop().await;
}

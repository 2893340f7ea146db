//! Redis stopped while pushes arrive, with RabbitMQ up: the bot cannot record them, so it
//! holds them in RabbitMQ and answers `202`; once Redis is back each delivery becomes exactly
//! one build that runs, a delivery sent twice still one. With RabbitMQ stopped too, the bot
//! spools them on its disk, and builds them once both are back. A Redis that stops answering for a
//! while (`DEBUG SLEEP`) does not keep a webhook waiting past the forge's deadline, and its
//! push is built once. Redis here is the test's own.

use std::time::{Duration, Instant};

use kiln_shared::keys::Keys;
use kiln_tests::broker::TestBroker;
use kiln_tests::forge::{TestRepo, push_payload};
use kiln_tests::redis_server::TestRedis;
use kiln_tests::{E2E_TIMEOUT, Kiln, REPO, Services, TEST_SECRET, config, wait_for};

const SPEC: &str = "steps:\n  t:\n    runner: shell\n    run: 'true'\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_while_redis_is_away_are_held_and_built_once_it_is_back() {
    let mut redis = TestRedis::start().await;
    let services = Services {
        redis_url: redis.url(),
        ..Services::require().await
    };
    let kiln = Kiln::start_on(services, &config("")).await;
    let repo = TestRepo::new();
    let commit = repo.commit("master", "One quick task", &[(".kiln.yml", SPEC)]);
    let first = kiln.push(&repo, "master", &commit, "before").await;
    assert_eq!(kiln.finished_build(first).await["status"], "passed");

    redis.stop().await;
    let body = push_payload(REPO, "master", &commit, &repo.clone_url(), "One quick task");
    let deliveries = ["held-1", "held-2", "held-3", "held-1"];
    for delivery in deliveries {
        let (status, answer) = kiln.send_github("push", delivery, &body, TEST_SECRET).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["held"], true, "{answer}");
    }
    let (status, ready) = readyz(&kiln).await;
    assert_eq!(status, 503);
    assert_eq!(ready["rabbitmq"], "up", "{ready}");
    assert_ne!(ready["redis"], "up", "{ready}");

    redis.run().await;
    let keys = Keys::new(&kiln.prefix);
    let client = redis::Client::open(redis.url().as_str()).expect("Redis URL");
    let mut builds = Vec::new();
    for delivery in ["held-1", "held-2", "held-3"] {
        let id = build_of(&client, &keys, delivery).await;
        assert_eq!(
            kiln.finished_build(id).await["status"],
            "passed",
            "build {id}"
        );
        builds.push(id);
    }
    builds.sort_unstable();
    builds.dedup();
    assert_eq!(
        builds.len(),
        3,
        "three deliveries, three builds: {builds:?}"
    );
    // The delivery sent twice made no fourth build.
    assert_eq!(
        numbered(&client, &keys).await,
        4,
        "one build before, three held"
    );
    let (status, ready) = readyz(&kiln).await;
    assert_eq!(status, 200, "{ready}");
    kiln.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_while_redis_and_rabbitmq_are_away_are_spooled_and_built_once_they_are_back() {
    let mut redis = TestRedis::start().await;
    let broker = TestBroker::start().await;
    let services = Services {
        redis_url: redis.url(),
        amqp_url: broker.url(),
    };
    let kiln = Kiln::start_on(services, &config("")).await;
    let repo = TestRepo::new();
    let commit = repo.commit("master", "One quick task", &[(".kiln.yml", SPEC)]);
    let first = kiln.push(&repo, "master", &commit, "before-both").await;
    assert_eq!(kiln.finished_build(first).await["status"], "passed");

    broker.stop_app().await;
    redis.stop().await;
    // Load balancers keep the bot: it still takes webhooks.
    let answer = kiln
        .http
        .get(kiln.url("/readyz/webhooks"))
        .send()
        .await
        .expect("/readyz/webhooks");
    assert_eq!(answer.status(), 200);
    let ready: serde_json::Value = answer.json().await.expect("JSON");
    assert_eq!(ready["spool"], "up", "{ready}");
    let body = push_payload(REPO, "master", &commit, &repo.clone_url(), "One quick task");
    for delivery in ["spooled-1", "spooled-2", "spooled-1"] {
        let (status, answer) = kiln.send_github("push", delivery, &body, TEST_SECRET).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["spooled"], true, "{answer}");
    }

    broker.start_app().await;
    redis.run().await;
    let keys = Keys::new(&kiln.prefix);
    let client = redis::Client::open(redis.url().as_str()).expect("Redis URL");
    for delivery in ["spooled-1", "spooled-2"] {
        let id = build_of(&client, &keys, delivery).await;
        assert_eq!(
            kiln.finished_build(id).await["status"],
            "passed",
            "build {id}"
        );
    }
    // The delivery sent twice made no third build.
    assert_eq!(
        numbered(&client, &keys).await,
        3,
        "one build before, two spooled"
    );
    kiln.stop().await;
}

/// How long GitHub waits for a webhook's answer before it counts the delivery as failed
/// (GitHub's documentation: "respond within 10 seconds"); it does not send it again by itself.
const WEBHOOK_DEADLINE: Duration = Duration::from_secs(10);

/// How long the test's Redis sleeps: longer than the bot waits for an answer.
const REDIS_SLEEP_SECS: u64 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_stops_answering_does_not_hold_a_webhook_past_its_deadline() {
    let redis = TestRedis::start().await;
    let services = Services {
        redis_url: redis.url(),
        ..Services::require().await
    };
    let kiln = Kiln::start_on(services, &config("")).await;
    let repo = TestRepo::new();
    let commit = repo.commit("master", "One quick task", &[(".kiln.yml", SPEC)]);
    let first = kiln.push(&repo, "master", &commit, "before-sleep").await;
    assert_eq!(kiln.finished_build(first).await["status"], "passed");

    let client = redis::Client::open(redis.url().as_str()).expect("Redis URL");
    let sleeper = {
        let client = client.clone();
        tokio::spawn(async move {
            let patient = redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(Duration::from_secs(REDIS_SLEEP_SECS * 4)));
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&patient)
                .await
                .expect("Redis");
            redis::cmd("DEBUG")
                .arg("SLEEP")
                .arg(REDIS_SLEEP_SECS)
                .query_async::<()>(&mut conn)
                .await
                .expect("DEBUG SLEEP");
        })
    };
    wait_for("Redis to stop answering", E2E_TIMEOUT, || {
        let client = client.clone();
        async move {
            let ping = async {
                let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .ok()
            };
            let answered = tokio::time::timeout(Duration::from_millis(300), ping).await;
            answered.is_err().then_some(())
        }
    })
    .await;

    let body = push_payload(REPO, "master", &commit, &repo.clone_url(), "One quick task");
    let sent = Instant::now();
    let (status, answer) = kiln
        .send_github("push", "while-asleep", &body, TEST_SECRET)
        .await;
    let waited = sent.elapsed();
    assert_eq!(status, 202, "{answer}");
    assert!(
        waited < WEBHOOK_DEADLINE,
        "the webhook was answered after {waited:?}, past GitHub's {WEBHOOK_DEADLINE:?}: {answer}"
    );
    sleeper.await.expect("the sleeper");

    // Whether Redis took the build when it woke or the held push brought it, it is one build.
    let keys = Keys::new(&kiln.prefix);
    let id = build_of(&client, &keys, "while-asleep").await;
    assert_eq!(
        kiln.finished_build(id).await["status"],
        "passed",
        "build {id}"
    );
    assert_eq!(
        numbered(&client, &keys).await,
        2,
        "one build before, one while Redis slept"
    );
    kiln.stop().await;
}

/// The build GitHub's delivery `delivery` became, once it has.
async fn build_of(client: &redis::Client, keys: &Keys, delivery: &str) -> u64 {
    let key = keys.delivery("github", delivery);
    wait_for(
        &format!("{delivery} to become a build"),
        E2E_TIMEOUT,
        || {
            let (client, key) = (client.clone(), key.clone());
            async move {
                let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                redis::cmd("GET")
                    .arg(&key)
                    .query_async::<Option<u64>>(&mut conn)
                    .await
                    .ok()?
            }
        },
    )
    .await
}

/// How many builds the installation has numbered.
async fn numbered(client: &redis::Client, keys: &Keys) -> u64 {
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis");
    redis::cmd("GET")
        .arg(keys.build_sequence())
        .query_async(&mut conn)
        .await
        .expect("the build counter")
}

/// `/readyz`: its status and answer.
async fn readyz(kiln: &Kiln) -> (u16, serde_json::Value) {
    let response = kiln
        .http
        .get(kiln.url("/readyz"))
        .send()
        .await
        .expect("/readyz");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

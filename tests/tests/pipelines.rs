//! Pipelines as task graphs, end to end on the real services: stages, a platform matrix with
//! arm64 under QEMU, shards, service sidecars, retries, failures that stop what comes after,
//! replayed events, two bots at once, interrupted workers, cancelled builds and secrets.

use std::collections::BTreeMap;
use std::time::Duration;

use kiln_shared::platform::Platform;
use kiln_shared::wire::{self, Event};
use kiln_tests::events::{jobs_so_far, next_event, subscribe, tap_jobs};
use kiln_tests::forge::TestRepo;
use kiln_tests::services::{containers_named, networks_named};
use kiln_tests::{E2E_TIMEOUT, Kiln, TEST_IMAGE, TEST_IMAGE_ARM64, wait_for};
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Connection, ConnectionProperties};

fn config() -> String {
    kiln_tests::config("")
}

/// Each task's name and status, in plan order.
fn statuses(build: &serde_json::Value) -> Vec<(String, String)> {
    build["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| {
            let text = |field: &str| t[field].as_str().unwrap_or_default().to_owned();
            (text("name"), text("status"))
        })
        .collect()
}

/// One task's log, as plain text.
async fn log(kiln: &Kiln, id: u64, task: &str) -> String {
    kiln.task_log(id, task).await
}

/// Waits until build `id`'s task `long` has printed `started`.
async fn long_task_started(kiln: &Kiln, id: u64) {
    wait_for("the long task to start", E2E_TIMEOUT, || async {
        log(kiln, id, "long")
            .await
            .contains("started")
            .then_some(())
    })
    .await;
}

/// Every event until build `id`'s `build.<status>`, in the order they arrived.
async fn events_until_finished(consumer: &mut lapin::Consumer, id: u64) -> Vec<Event> {
    let mut seen = Vec::new();
    loop {
        let event = next_event(consumer).await;
        let done = matches!(&event, Event::BuildFinished(f) if f.build.id.0 == id);
        seen.push(event);
        if done {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_a_platform_matrix_shards_and_services() {
    let kiln = Kiln::start(&config()).await;
    let repo = TestRepo::new();
    let mut events = subscribe(&kiln, "task.#").await;
    let spec = format!(
        r#"stages: [acceptance, test]
steps:
  smoke:
    stage: acceptance
    image: {TEST_IMAGE}
    run: echo smoke
  unit:
    stage: test
    image: {{ linux/amd64: "{TEST_IMAGE}", linux/arm64: "{TEST_IMAGE_ARM64}" }}
    platforms: [linux/amd64, linux/arm64]
    shards: 2
    run: echo "arch=$(uname -m) shard=$KILN_SHARD/$KILN_SHARDS platform=$KILN_PLATFORM"
  web:
    stage: test
    image: {TEST_IMAGE}
    services:
      api: {{ image: "{TEST_IMAGE}", command: "httpd -f -p 8080 -h /etc" }}
    run:
      - for i in $(seq 1 100); do wget -q -O /dev/null http://api:8080/hostname && break; sleep 0.1; done
      - echo "service says $(wget -q -O - http://api:8080/hostname)"
"#
    );
    let commit = repo.commit("master", "A matrix", &[(".kiln.yml", &spec)]);
    let id = kiln.push(&repo, "master", &commit, "delivery-matrix").await;
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    let names: Vec<String> = statuses(&build).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "smoke",
            "unit.linux-amd64.1",
            "unit.linux-amd64.2",
            "unit.linux-arm64.1",
            "unit.linux-arm64.2",
            "web",
        ]
    );

    assert_eq!(
        log(&kiln, id, "unit.linux-arm64.2").await.trim(),
        "arch=aarch64 shard=2/2 platform=linux/arm64",
        "the arm64 task ran under emulation"
    );
    assert_eq!(
        log(&kiln, id, "unit.linux-amd64.1").await.trim(),
        "arch=x86_64 shard=1/2 platform=linux/amd64"
    );
    assert!(
        log(&kiln, id, "web").await.contains("service says api"),
        "the task reached its service by name"
    );

    // The test stage started only after the acceptance stage passed.
    let seen = events_until_finished_tasks(&mut events, 6).await;
    let smoke_passed = seen
        .iter()
        .position(|e| matches!(e, Event::TaskFinished(f) if f.task == "smoke"))
        .expect("smoke finished");
    let first_test_start = seen
        .iter()
        .position(|e| matches!(e, Event::TaskStarted(s) if s.task != "smoke"))
        .expect("a test task started");
    assert!(smoke_passed < first_test_start, "{seen:#?}");
    let arm_worker = seen.iter().find_map(|e| match e {
        Event::TaskStarted(s) if s.task == "unit.linux-arm64.1" => Some(s.worker.clone()),
        _ => None,
    });
    assert_eq!(
        arm_worker.as_deref(),
        Some(format!("{}-linux-arm64", kiln.prefix).as_str())
    );

    // Services, networks and task containers are gone.
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
    assert_eq!(
        containers_named(&docker, &kiln.prefix).await,
        Vec::<String>::new()
    );
    assert_eq!(
        networks_named(&docker, &kiln.prefix).await,
        Vec::<String>::new()
    );
    kiln.stop().await;
}

/// Task events until `count` tasks have finished.
async fn events_until_finished_tasks(consumer: &mut lapin::Consumer, count: usize) -> Vec<Event> {
    let mut seen = Vec::new();
    while seen
        .iter()
        .filter(|e| matches!(e, Event::TaskFinished(_)))
        .count()
        < count
    {
        seen.push(next_event(consumer).await);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_stop_what_follows_while_neighbours_finish_and_retries_recover() {
    let kiln = Kiln::start(&config()).await;
    let repo = TestRepo::new();
    let spec = format!(
        r#"stages: [test, deploy]
steps:
  flaky:
    image: {TEST_IMAGE}
    retry: {{ max: 2, exit_codes: [75] }}
    run: 'if [ "$KILN_ATTEMPT" -lt 2 ]; then echo "attempt $KILN_ATTEMPT fails"; exit 75; fi; echo "passed on attempt $KILN_ATTEMPT"'
  lint:
    image: {TEST_IMAGE}
    allow_failure: true
    run: exit 1
  broken:
    image: {TEST_IMAGE}
    run: exit 3
  after-broken:
    image: {TEST_IMAGE}
    needs: [broken]
    run: echo never
  independent:
    image: {TEST_IMAGE}
    run: [sleep 1, echo done]
  deploy:
    stage: deploy
    image: {TEST_IMAGE}
    run: echo never
"#
    );
    let commit = repo.commit("master", "Some fail", &[(".kiln.yml", &spec)]);
    let id = kiln.push(&repo, "master", &commit, "delivery-fail").await;
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "failed", "{build:#}");
    let got: BTreeMap<String, String> = statuses(&build).into_iter().collect();
    let expect: BTreeMap<String, String> = [
        ("after-broken", "skipped"),
        ("broken", "failed"),
        ("deploy", "skipped"),
        ("flaky", "passed"),
        ("independent", "passed"),
        ("lint", "failed"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    assert_eq!(got, expect);
    let flaky = build["tasks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "flaky"))
        .expect("flaky");
    assert_eq!(flaky["attempt"], 2, "{flaky}");
    assert_eq!(log(&kiln, id, "flaky").await.trim(), "passed on attempt 2");

    // Only the allowed failure: the build passes.
    let spec = format!(
        "steps:\n  lint: {{ image: {TEST_IMAGE}, allow_failure: true, run: exit 1 }}\n  ok: {{ image: {TEST_IMAGE}, needs: [lint], run: echo ran }}\n"
    );
    let commit = repo.commit("master", "Lint only", &[(".kiln.yml", &spec)]);
    let id = kiln
        .push(&repo, "master", &commit, "delivery-allowed")
        .await;
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    assert_eq!(
        statuses(&build),
        [
            ("lint".to_owned(), "failed".to_owned()),
            ("ok".to_owned(), "passed".to_owned())
        ]
    );
    kiln.stop().await;
}

/// A wide graph: four tasks, a fan-in, then two more.
fn wide_pipeline() -> String {
    format!(
        r#"stages: [one, two, three]
steps:
  a: {{ stage: one, image: {TEST_IMAGE}, run: echo a }}
  b: {{ stage: one, image: {TEST_IMAGE}, run: echo b }}
  c: {{ stage: one, image: {TEST_IMAGE}, run: echo c }}
  d: {{ stage: one, image: {TEST_IMAGE}, run: echo d }}
  join: {{ stage: two, image: {TEST_IMAGE}, run: echo join }}
  e: {{ stage: three, image: {TEST_IMAGE}, run: echo e }}
  f: {{ stage: three, image: {TEST_IMAGE}, run: echo f }}
"#
    )
}

/// How many times each task of build `id` started.
fn starts(events: &[Event], id: u64) -> BTreeMap<String, usize> {
    let mut starts = BTreeMap::new();
    for event in events {
        if let Event::TaskStarted(s) = event
            && s.build.id.0 == id
        {
            *starts.entry(s.task.clone()).or_default() += 1;
        }
    }
    starts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bots_at_once_run_every_task_once() {
    let kiln = Kiln::start_with(&config(), 2).await;
    let repo = TestRepo::new();
    let mut events = subscribe(&kiln, "#").await;
    let commit = repo.commit("master", "Wide", &[(".kiln.yml", &wide_pipeline())]);
    let id = kiln
        .push(&repo, "master", &commit, "delivery-two-bots")
        .await;
    let seen = events_until_finished(&mut events, id).await;
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    let once: BTreeMap<String, usize> = ["a", "b", "c", "d", "e", "f", "join"]
        .into_iter()
        .map(|t| (t.to_owned(), 1))
        .collect();
    assert_eq!(starts(&seen, id), once);
    let finished = seen
        .iter()
        .filter(|e| matches!(e, Event::BuildFinished(_)))
        .count();
    assert_eq!(finished, 1, "one build.passed");
    kiln.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_events_change_nothing() {
    let kiln = Kiln::start(&config()).await;
    let repo = TestRepo::new();
    let mut events = subscribe(&kiln, "#").await;
    let mut jobs = tap_jobs(&kiln, Platform::LinuxAmd64).await;
    let commit = repo.commit("master", "Wide", &[(".kiln.yml", &wide_pipeline())]);
    let id = kiln.push(&repo, "master", &commit, "delivery-replay").await;
    let first = events_until_finished(&mut events, id).await;
    let before = kiln.finished_build(id).await;
    let published = jobs_so_far(&mut jobs, Duration::from_millis(500)).await;
    assert_eq!(published.len(), 7, "one job per task");

    // Every event of the build, published again, twice over, as a broker redelivering
    // after a crash would.
    let connection = Connection::connect(&kiln.services.amqp_url, ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    for event in first.iter().chain(&first) {
        channel
            .basic_publish(
                format!("{}.events", kiln.prefix).into(),
                event.routing_key().into(),
                BasicPublishOptions::default(),
                &wire::encode(event),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }

    // The bot handles events in order: once a later build has finished, the replays were
    // handled before it.
    let commit = repo.commit("master", "After", &[("README", "later\n")]);
    let later = kiln.push(&repo, "master", &commit, "delivery-after").await;
    let second = events_until_finished(&mut events, later).await;
    let republished: Vec<String> = jobs_so_far(&mut jobs, Duration::from_millis(500))
        .await
        .into_iter()
        .filter(|job| job.build.id.0 == id)
        .map(|job| job.message_id())
        .collect();
    assert_eq!(republished, Vec::<String>::new(), "no job published again");
    // The subscription sees the replayed copies themselves, and nothing more.
    let replayed: BTreeMap<String, usize> = starts(&first, id)
        .into_iter()
        .map(|(task, n)| (task, 2 * n))
        .collect();
    assert_eq!(
        starts(&second, id),
        replayed,
        "no task of the replayed build ran again"
    );
    let announced = second
        .iter()
        .filter(|e| matches!(e, Event::BuildFinished(f) if f.build.id.0 == id))
        .count();
    assert_eq!(
        announced, 2,
        "only the replayed copies of build.passed, none new"
    );
    let after = kiln.finished_build(id).await;
    assert_eq!(before, after);
    kiln.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_task_leaves_no_container_or_network() {
    let mut kiln = Kiln::start(&config()).await;
    let repo = TestRepo::new();
    let spec = format!(
        r#"steps:
  long:
    image: {TEST_IMAGE}
    services: {{ db: {{ image: "{TEST_IMAGE}", command: "sleep 600" }} }}
    run: [echo started, sleep 600]
"#
    );
    let commit = repo.commit("master", "Long", &[(".kiln.yml", &spec)]);
    let id = kiln.push(&repo, "master", &commit, "delivery-long").await;
    long_task_started(&kiln, id).await;
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
    let prefix = kiln.prefix.clone();
    assert_eq!(
        containers_named(&docker, &prefix).await.len(),
        2,
        "the task and its service"
    );
    assert_eq!(networks_named(&docker, &prefix).await.len(), 1);
    kiln.halt().await;
    assert_eq!(
        containers_named(&docker, &prefix).await,
        Vec::<String>::new()
    );
    assert_eq!(networks_named(&docker, &prefix).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_build_stops_its_tasks_and_leaves_nothing_behind() {
    const TOKEN: &str = "alice-token-0123456789";
    let config = format!(
        "{}\n[[operator]]\nname = \"alice\"\ntoken = \"{TOKEN}\"\n",
        config()
    );
    let kiln = Kiln::start(&config).await;
    let repo = TestRepo::new();
    let mut builds = subscribe(&kiln, "build.#").await;
    let spec = format!(
        r#"steps:
  long:
    image: {TEST_IMAGE}
    services: {{ db: {{ image: "{TEST_IMAGE}", command: "sleep 600" }} }}
    run: [echo started, sleep 600]
  after:
    image: {TEST_IMAGE}
    needs: [long]
    run: echo never
"#
    );
    let commit = repo.commit("master", "Long", &[(".kiln.yml", &spec)]);
    let id = kiln.push(&repo, "master", &commit, "delivery-cancel").await;
    long_task_started(&kiln, id).await;
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
    assert_eq!(containers_named(&docker, &kiln.prefix).await.len(), 2);

    let cancel = |token: &'static str| {
        kiln.http
            .post(kiln.url(&format!("/builds/{id}/cancel")))
            .bearer_auth(token)
            .send()
    };
    let refused = cancel("not-a-token").await.expect("the bot answers");
    assert_eq!(refused.status(), 401);
    assert_eq!(kiln.build(id).await.expect("build")["status"], "running");

    let answer = cancel(TOKEN).await.expect("the bot answers");
    assert_eq!(answer.status(), 200);
    let answer: serde_json::Value = answer.json().await.expect("json");
    assert_eq!(
        answer["cancelled_tasks"],
        serde_json::json!(["long", "after"])
    );

    // The worker sees the cancel, stops the task and removes what it made.
    wait_for(
        "the task's containers and network to go",
        E2E_TIMEOUT,
        || async {
            (containers_named(&docker, &kiln.prefix).await.is_empty()
                && networks_named(&docker, &kiln.prefix).await.is_empty())
            .then_some(())
        },
    )
    .await;
    wait_for("the cancel note in the log", E2E_TIMEOUT, || async {
        log(&kiln, id, "long")
            .await
            .contains("[kiln] cancelled")
            .then_some(())
    })
    .await;
    let build = kiln.build(id).await.expect("build");
    assert_eq!(build["status"], "cancelled");
    assert_eq!(
        statuses(&build),
        [
            ("long".to_owned(), "cancelled".to_owned()),
            ("after".to_owned(), "cancelled".to_owned())
        ]
    );
    let finished = kiln_tests::events::next_build_finished(&mut builds).await;
    assert_eq!(finished.build.id.0, id);
    assert_eq!(finished.status, kiln_shared::build::BuildStatus::Cancelled);
    assert_eq!(finished.error.as_deref(), Some("cancelled by alice"));

    let again = cancel(TOKEN).await.expect("the bot answers");
    assert_eq!(again.status(), 409, "a second cancel finds the build ended");
    let missing = kiln
        .http
        .post(kiln.url("/builds/999/cancel"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("the bot answers");
    assert_eq!(missing.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_allowed_branches_only_and_are_masked_in_logs() {
    const VALUE: &str = "s3cr3t-value";
    let config = format!("{}secrets = {{ DEPLOY_TOKEN = [\"master\"] }}\n", config());
    let kiln = Kiln::start(&config).await;
    std::fs::create_dir_all(kiln.secrets_dir()).expect("mkdir");
    std::fs::write(
        kiln.secrets_dir().join("DEPLOY_TOKEN"),
        format!("{VALUE}\n"),
    )
    .expect("write");
    let repo = TestRepo::new();
    let spec = format!(
        r#"steps:
  deploy:
    image: {TEST_IMAGE}
    secrets: [DEPLOY_TOKEN]
    run:
      - test "$DEPLOY_TOKEN" = "{VALUE}"
      - echo "token is $DEPLOY_TOKEN"
"#
    );
    let commit = repo.commit("master", "Deploy", &[(".kiln.yml", &spec)]);
    let id = kiln.push(&repo, "master", &commit, "delivery-secret").await;
    let build = kiln.finished_build(id).await;
    assert_eq!(
        build["status"], "passed",
        "the task got the value: {build:#}"
    );
    let text = log(&kiln, id, "deploy").await;
    assert!(text.contains("token is ***"), "{text}");
    assert!(!text.contains(VALUE), "{text}");

    // Policy is Kiln's, not the commit's: another branch may not use the secret.
    let commit = repo.commit("feature", "Deploy from a branch", &[]);
    let id = kiln
        .push(&repo, "feature", &commit, "delivery-secret-2")
        .await;
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "failed", "{build:#}");
    let error = build["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("secret `DEPLOY_TOKEN`") && error.contains("branch `feature`"),
        "{build:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_no_worker_can_finish_is_dead_lettered_and_its_task_errors() {
    let kiln = Kiln::start(&config()).await;
    let repo = TestRepo::new();
    // The harness has no Windows worker: this test plays one that keeps failing the job.
    let spec = r#"steps:
  win:
    platforms: [windows/amd64]
    runner: shell
    retry: { max: 0 }
    run: ci\test.cmd
  after:
    needs: [win]
    image: kiln/busybox:latest
    run: echo never
"#;
    let commit = repo.commit("master", "Windows", &[(".kiln.yml", spec)]);
    let id = kiln.push(&repo, "master", &commit, "delivery-dead").await;

    let connection = Connection::connect(&kiln.services.amqp_url, ConnectionProperties::default())
        .await
        .expect("RabbitMQ");
    let channel = connection.create_channel().await.expect("channel");
    let topology = kiln_shared::routing::Topology::new(&kiln.prefix);
    let mut consumer = channel
        .basic_consume(
            topology.jobs_queue(Platform::WindowsAmd64).into(),
            "flaky-windows".into(),
            lapin::options::BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("consume");
    // Every delivery handed back, as by a worker that dies: RabbitMQ gives up after its
    // delivery limit and dead-letters the job.
    let mut deliveries = 0;
    while let Ok(Some(Ok(delivery))) = tokio::time::timeout(
        Duration::from_secs(3),
        futures_util::StreamExt::next(&mut consumer),
    )
    .await
    {
        deliveries += 1;
        let requeue = lapin::options::BasicNackOptions {
            requeue: true,
            ..Default::default()
        };
        delivery.nack(requeue).await.expect("nack");
        assert!(deliveries <= 20, "RabbitMQ never dead-lettered the job");
    }
    assert_eq!(
        deliveries,
        kiln_shared::routing::JOB_DELIVERY_LIMIT + 1,
        "delivered until the limit, then dead-lettered"
    );

    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "errored", "{build:#}");
    assert_eq!(
        statuses(&build),
        [
            ("win".to_owned(), "errored".to_owned()),
            ("after".to_owned(), "skipped".to_owned())
        ]
    );
    let outcome = build["tasks"][0]["outcome"].as_str().unwrap_or_default();
    assert!(outcome.contains("dead-letter queue"), "{build:#}");
    // The job itself stays where people can look at it.
    let kept = channel
        .queue_declare(
            topology.dead_jobs_queue().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("the dead-letter queue exists");
    assert_eq!(kept.message_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_the_installation_does_not_serve_fails_the_build_and_says_so() {
    let kiln = Kiln::start_serving(&config(), &[Platform::LinuxAmd64]).await;
    let repo = TestRepo::new();
    let spec = format!(
        "steps:\n  unit:\n    image: {TEST_IMAGE_ARM64}\n    platforms: [linux/arm64]\n    run: uname -m\n"
    );
    let commit = repo.commit("master", "Arm", &[(".kiln.yml", &spec)]);
    let id = kiln
        .push(&repo, "master", &commit, "delivery-unserved")
        .await;
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "failed", "{build:#}");
    let error = build["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("runs on linux/arm64, which this Kiln does not serve"),
        "{build:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_builds_services_on_one_port_do_not_collide() {
    let kiln = Kiln::start(&config()).await;
    let repo = TestRepo::new();
    let spec = |word: &str| {
        format!(
            r#"steps:
  web:
    image: {TEST_IMAGE}
    timeout: 30s
    services:
      api: {{ image: "{TEST_IMAGE}", command: "sh -c 'echo {word} > /tmp/id; httpd -f -p 8080 -h /tmp'" }}
    run:
      - for i in $(seq 1 100); do wget -q -O /dev/null http://api:8080/id && break; sleep 0.1; done
      - sleep 1
      - echo "service says $(wget -q -O - http://api:8080/id)"
"#
        )
    };
    let one = repo.commit("one", "One", &[(".kiln.yml", &spec("one"))]);
    let two = repo.commit("two", "Two", &[(".kiln.yml", &spec("two"))]);
    let first = kiln.push(&repo, "one", &one, "delivery-port-1").await;
    let second = kiln.push(&repo, "two", &two, "delivery-port-2").await;
    for (id, word) in [(first, "one"), (second, "two")] {
        let build = kiln.finished_build(id).await;
        assert_eq!(build["status"], "passed", "{build:#}");
        let text = log(&kiln, id, "web").await;
        assert!(text.contains(&format!("service says {word}")), "{text}");
    }
}

//! A worker with credentials of its own, over TLS: RabbitMQ on 5671 and Redis on 6380
//! (`deploy/dev/services` starts both beside the plain ports, with a CA of the machine's own).
//! It runs a build; everything else its users might try (another platform's jobs, `build.*`
//! and `promotion.*` events, the bot's queues, a build's record, the audit stream, other
//! keys, the secret tasks are named with, declaring or deleting) is refused by the broker or
//! Redis; a task's end forged with them moves no build; and a worker that trusts another CA
//! refuses both services, saying why.

use std::time::Duration;

use kiln_io::tls::Trust;
use kiln_shared::build::{BuildId, TaskOutcome};
use kiln_shared::platform::Platform;
use kiln_shared::record::TaskField;
use kiln_shared::routing::Topology;
use kiln_shared::wire::{BuildRef, Event, TaskFinished};
use kiln_tests::forge::TestRepo;
use kiln_tests::{E2E_TIMEOUT, Kiln, TEST_IMAGE, wait_for};
use kiln_worker::credentials::{self, Issued, Request};
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

/// The TLS services' URLs and CAs `deploy/dev/services` prints; a missing one fails the test.
struct Tls {
    rabbitmqctl: std::path::PathBuf,
    amqps_url: String,
    rediss_url: String,
    ca: std::path::PathBuf,
    other_ca: std::path::PathBuf,
}

fn tls() -> Tls {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: start the services with `deploy/dev/services`")
        })
    };
    Tls {
        rabbitmqctl: var("KILN_TEST_RABBITMQCTL").into(),
        amqps_url: var("KILN_TEST_AMQPS_URL"),
        rediss_url: var("KILN_TEST_REDISS_URL"),
        ca: var("KILN_TEST_TLS_CA").into(),
        other_ca: var("KILN_TEST_TLS_OTHER_CA").into(),
    }
}

/// A worker's users, made for the test and taken back when dropped (even after a failure,
/// and after one half-way through making them).
struct Users {
    request: Request,
    issued: Option<Issued>,
}

impl Users {
    async fn issue(kiln: &Kiln, tls: &Tls, name: &str, platform: Platform) -> Self {
        let request = Request {
            name: name.into(),
            platform,
            prefix: kiln.prefix.clone(),
            vhost: "/".into(),
            rabbitmqctl: tls.rabbitmqctl.clone(),
            redis_admin_url: kiln.services.redis_url.clone(),
            tls_ca: None,
        };
        let mut users = Self {
            request,
            issued: None,
        };
        let issued = credentials::issue(&users.request)
            .await
            .expect("kiln-worker credentials makes the users");
        users.issued = Some(issued);
        users
    }

    fn issued(&self) -> &Issued {
        self.issued.as_ref().expect("issued")
    }

    fn amqp_url(&self, base: &str) -> String {
        self.issued().url(base, &self.issued().amqp_password)
    }

    fn redis_url(&self, base: &str) -> String {
        self.issued().url(base, &self.issued().redis_password)
    }

    /// Redis as these users, over TLS.
    async fn redis(&self, tls: &Tls) -> redis::aio::ConnectionManager {
        let trust = Trust::load(Some(&tls.ca)).expect("the CA");
        let (_, redis) = kiln_io::redis::connect(&self.redis_url(&tls.rediss_url), &trust)
            .await
            .expect("the worker's user connects over TLS");
        redis
    }

    /// RabbitMQ as these users, on `kiln`'s broker.
    async fn amqp(&self, kiln: &Kiln) -> Connection {
        let amqp = self.amqp_url(&kiln.services.amqp_url.replace("guest:guest@", ""));
        Connection::connect(&amqp, ConnectionProperties::default())
            .await
            .expect("the worker's user connects")
    }
}

impl Drop for Users {
    fn drop(&mut self) {
        let request = self.request.clone();
        let revoked = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(credentials::revoke(&request))
        });
        if let Ok(Err(error)) = revoked.join() {
            eprintln!("the test's users were not all deleted: {error:#}");
        }
    }
}

/// A step that says where it ran.
fn spec() -> String {
    format!("steps:\n  hello: {{ image: {TEST_IMAGE}, run: echo hello over tls }}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_users_of_its_own_runs_a_build_over_tls() {
    let tls = tls();
    let kiln = Kiln::start_without_workers(&kiln_tests::config("")).await;
    let users = Users::issue(&kiln, &tls, "tls", Platform::LinuxAmd64).await;
    let state = tempfile::tempdir().expect("temp dir");
    let settings = kiln_worker::Settings {
        amqp_url: users.amqp_url(&tls.amqps_url),
        redis_url: users.redis_url(&tls.rediss_url),
        tls_ca: Some(tls.ca.clone()),
        prefix: kiln.prefix.clone(),
        platform: Platform::LinuxAmd64,
        slots: 1,
        name: format!("{}-tls", kiln.prefix),
        state_dir: state.path().join("worker"),
        work_dirs: Default::default(),
        store_dir: kiln.store_dir(),
        secrets_dir: Some(kiln.secrets_dir()),
        advertise_host: "127.0.0.1".into(),
        registry: None,
        registry_auth: None,
        docker_host: None,
        metrics_listen: None,
        task_user: Some("kiln-task".into()),
        task_shares: Vec::new(),
    };
    let stop = CancellationToken::new();
    let worker = tokio::spawn(kiln_worker::run(settings, stop.clone()));

    let repo = TestRepo::new();
    let branch = format!("{}-main", kiln.prefix);
    let commit = repo.commit(&branch, "Over TLS", &[(".kiln.yml", spec().as_str())]);
    let id = kiln.push(&repo, &branch, &commit, "tls-1").await;
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    assert!(
        kiln.task_log(id, "hello").await.contains("hello over tls"),
        "the worker stored its log lines"
    );

    // The broker says the worker's own connection is its user's, over TLS.
    let user = users.issued().user.clone();
    let listed = rabbitmqctl(&tls, &["list_connections", "user", "ssl", "--silent"]);
    assert!(
        listed
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == [user.as_str(), "true"]),
        "no TLS connection of {user} in:\n{listed}"
    );

    stop.cancel();
    worker
        .await
        .expect("no panic")
        .expect("the worker stops cleanly");
    drop(users);
    kiln.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_s_users_may_do_nothing_but_a_worker_s_work() {
    let tls = tls();
    // The bot declares every platform's queue and the exchanges.
    let kiln = Kiln::start_without_workers(&kiln_tests::config("")).await;
    let users = Users::issue(&kiln, &tls, "limited", Platform::LinuxAmd64).await;
    let topology = Topology::new(&kiln.prefix);

    // RabbitMQ, as the worker's user.
    let connection = users.amqp(&kiln).await;
    let refused = |what: &str, result: lapin::Result<()>| match result {
        Err(error) if kiln_io::amqp::is_access_refused(&error) => {}
        other => panic!("{what}: expected ACCESS_REFUSED, got {other:?}"),
    };

    // What a worker does: consume its platform's queue, publish a task's event.
    let channel = connection.create_channel().await.expect("channel");
    channel
        .basic_consume(
            topology.jobs_queue(Platform::LinuxAmd64).into(),
            "own".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("its own platform's jobs");
    let publish = async |key: &str, exchange: String| {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channel
            .basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions::default(),
                b"{}",
                BasicProperties::default(),
            )
            .await?
            .await?;
        lapin::Result::Ok(())
    };
    publish("task.started.acme%2Fapi.master", topology.events_exchange())
        .await
        .expect("a task's event");

    // What it may not.
    for platform in [Platform::LinuxArm64, Platform::WindowsAmd64] {
        let channel = connection.create_channel().await.expect("channel");
        let consumed = channel
            .basic_consume(
                topology.jobs_queue(platform).into(),
                "other".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map(drop);
        refused(&format!("consuming {platform}'s jobs"), consumed);
    }
    for queue in [topology.bot_events_queue(), topology.bot_builds_queue()] {
        let channel = connection.create_channel().await.expect("channel");
        let consumed = channel
            .basic_consume(
                queue.as_str().into(),
                "bot".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map(drop);
        refused(&format!("consuming {queue}"), consumed);
    }
    for key in [
        "build.passed.acme%2Fapi.master",
        "build.requested.acme%2Fapi.master",
        "promotion.promoted.acme%2Fapi.production",
    ] {
        refused(key, publish(key, topology.events_exchange()).await);
    }
    refused(
        "publishing a job",
        publish("linux-arm64", topology.jobs_exchange()).await,
    );
    let channel = connection.create_channel().await.expect("channel");
    let bound = channel
        .queue_bind(
            topology.jobs_queue(Platform::LinuxAmd64).into(),
            topology.jobs_exchange().into(),
            "linux-arm64".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await;
    refused("binding its queue to another platform's jobs", bound);
    let channel = connection.create_channel().await.expect("channel");
    let declared = channel
        .queue_declare(
            format!("{}.stolen", kiln.prefix).into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .map(drop);
    refused("declaring a queue", declared);
    let channel = connection.create_channel().await.expect("channel");
    let deleted = channel
        .queue_delete(
            topology.jobs_queue(Platform::LinuxAmd64).into(),
            QueueDeleteOptions::default(),
        )
        .await
        .map(drop);
    refused("deleting its own queue", deleted);

    // Redis, as the worker's user, over TLS.
    let mut redis = users.redis(&tls).await;
    let p = &kiln.prefix;
    let allowed: [redis::Cmd; 3] = [
        redis::cmd("HSET")
            .arg(format!("{p}:workers"))
            .arg("w")
            .arg("{}")
            .clone(),
        redis::cmd("XADD")
            .arg(format!("{p}:logs:1:unit"))
            .arg("*")
            .arg("line")
            .arg("hello")
            .clone(),
        redis::cmd("HGETALL")
            .arg(format!("{p}:build:1:task:unit"))
            .clone(),
    ];
    for command in allowed {
        let answer: redis::RedisResult<redis::Value> = command.query_async(&mut redis).await;
        answer.unwrap_or_else(|e| panic!("{command:?} is a worker's: {e}"));
    }
    let forbidden: Vec<(&str, redis::Cmd)> = vec![
        (
            "changing a build's record",
            redis::cmd("HSET")
                .arg(format!("{p}:build:1"))
                .arg("status")
                .arg("passed")
                .clone(),
        ),
        (
            "reading a build's record",
            redis::cmd("HGETALL").arg(format!("{p}:build:1")).clone(),
        ),
        (
            "reading the audit stream",
            redis::cmd("XRANGE")
                .arg(format!("{p}:audit"))
                .arg("-")
                .arg("+")
                .clone(),
        ),
        (
            "changing another installation's task",
            redis::cmd("HSET")
                .arg("other:build:1:task:unit")
                .arg("status")
                .arg("passed")
                .clone(),
        ),
        (
            "reading a task's log",
            redis::cmd("XRANGE")
                .arg(format!("{p}:logs:1:unit"))
                .arg("-")
                .arg("+")
                .clone(),
        ),
        (
            "resetting the lease numbers",
            redis::cmd("SET")
                .arg(format!("{p}:lease:seq"))
                .arg("0")
                .clone(),
        ),
        (
            "reading a promotion",
            redis::cmd("HGETALL")
                .arg(format!("{p}:promotion:1"))
                .clone(),
        ),
        (
            "reading the outbox",
            redis::cmd("ZRANGE")
                .arg(format!("{p}:outbox"))
                .arg(0)
                .arg(-1)
                .clone(),
        ),
        (
            "reading the secret that names tasks' records and logs",
            redis::cmd("HGETALL").arg(format!("{p}:task-names")).clone(),
        ),
        ("listing keys", redis::cmd("KEYS").arg("*").clone()),
        ("scanning keys", redis::cmd("SCAN").arg(0).clone()),
        (
            "reading the configuration",
            redis::cmd("CONFIG").arg("GET").arg("*").clone(),
        ),
        ("listing the ACL", redis::cmd("ACL").arg("LIST").clone()),
        (
            "publishing to channels",
            redis::cmd("PUBLISH").arg("x").arg("y").clone(),
        ),
    ];
    for (what, command) in forbidden {
        let answer: redis::RedisResult<redis::Value> = command.query_async(&mut redis).await;
        match answer {
            Err(error) if error.to_string().to_ascii_uppercase().contains("NOPERM") => {}
            other => panic!("{what}: expected NOPERM, got {other:?}"),
        }
    }

    drop(users);
    kiln.stop().await;
}

/// A build whose second task needs the first, which runs a while.
fn slow_then_after() -> String {
    format!(
        "steps:\n  slow: {{ image: {TEST_IMAGE}, run: sleep 4 }}\n  \
         after: {{ image: {TEST_IMAGE}, needs: [slow], run: 'true' }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_s_users_cannot_move_another_task_along() {
    let tls = tls();
    let kiln = Kiln::start(&kiln_tests::config("")).await;
    let users = Users::issue(&kiln, &tls, "forger", Platform::LinuxAmd64).await;
    let repo = TestRepo::new();
    let branch = format!("{}-forged", kiln.prefix);
    let commit = repo.commit(
        &branch,
        "Slow",
        &[(".kiln.yml", slow_then_after().as_str())],
    );
    let id = kiln.push(&repo, &branch, &commit, "forged-1").await;
    let task_status = |build: &serde_json::Value, name: &str| {
        build["tasks"]
            .as_array()
            .and_then(|tasks| tasks.iter().find(|t| t["name"] == name))
            .and_then(|t| t["status"].as_str())
            .map(str::to_owned)
    };
    let build = wait_for("`slow` running", E2E_TIMEOUT, || async {
        let build = kiln.build(id).await?;
        (task_status(&build, "slow").as_deref() == Some("running")).then_some(build)
    })
    .await;

    // Another worker's users, of the same platform, try to end `slow` as passed: by the
    // record name they can guess, and by its event.
    let mut redis = users.redis(&tls).await;
    let guessed = format!("{}:build:{id}:task:slow", kiln.prefix);
    let keys = kiln.keys().await;
    assert_ne!(keys.task(BuildId(id), "slow"), guessed);
    let _: () = redis::cmd("HSET")
        .arg(&guessed)
        .arg(&["status", "passed", "attempt", "1", "outcome", "passed"])
        .query_async(&mut redis)
        .await
        .expect("a key of a task record's shape is the worker's to write");
    let connection = users.amqp(&kiln).await;
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let forged = Event::TaskFinished(TaskFinished {
        build: BuildRef {
            id: BuildId(id),
            repo: build["repo"].as_str().expect("repo").into(),
            branch: branch.as_str().into(),
            commit: commit.as_str().into(),
        },
        task: "slow".into(),
        attempt: 1,
        outcome: TaskOutcome::Passed,
        artifacts: Vec::new(),
        images: Vec::new(),
        ran_ms: Some(1),
    });
    channel
        .basic_publish(
            Topology::new(&kiln.prefix).events_exchange().into(),
            forged.routing_key().into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &kiln_shared::wire::encode(&forged),
            BasicProperties::default(),
        )
        .await
        .expect("published")
        .await
        .expect("a task's event is the worker's to publish");
    let now = kiln.build(id).await.expect("the build");
    assert_eq!(
        task_status(&now, "slow").as_deref(),
        Some("running"),
        "{now:#}"
    );

    // `after` waited for `slow`'s real end, not the forged one.
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    let mut admin = redis::Client::open(kiln.services.redis_url.as_str())
        .and_then(|c| c.get_connection())
        .expect("Redis");
    let mut field = |task: &str, field: TaskField| -> Option<u64> {
        redis::cmd("HGET")
            .arg(keys.task(BuildId(id), task))
            .arg(field.name())
            .query(&mut admin)
            .expect("HGET")
    };
    let slow_ended = field("slow", TaskField::FinishedMs);
    let after_started = field("after", TaskField::StartedMs);
    assert!(
        matches!((slow_ended, after_started), (Some(ended), Some(started)) if started >= ended),
        "`slow` ended at {slow_ended:?}, `after` started at {after_started:?}: {build:#}"
    );

    drop(users);
    kiln.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_trusts_another_ca_refuses_the_services_and_says_why() {
    let tls = tls();
    let kiln = Kiln::start_without_workers(&kiln_tests::config("")).await;
    let state = tempfile::tempdir().expect("temp dir");
    let settings = kiln_worker::Settings {
        amqp_url: tls.amqps_url.replace("amqps://", "amqps://guest:guest@"),
        redis_url: tls.rediss_url.clone(),
        tls_ca: Some(tls.other_ca.clone()),
        prefix: kiln.prefix.clone(),
        platform: Platform::LinuxAmd64,
        slots: 1,
        name: format!("{}-wrong-ca", kiln.prefix),
        state_dir: state.path().join("worker"),
        work_dirs: Default::default(),
        store_dir: kiln.store_dir(),
        secrets_dir: None,
        advertise_host: "127.0.0.1".into(),
        registry: None,
        registry_auth: None,
        docker_host: None,
        metrics_listen: None,
        task_user: Some("kiln-task".into()),
        task_shares: Vec::new(),
    };
    let ended = tokio::time::timeout(
        E2E_TIMEOUT,
        kiln_worker::run(settings, CancellationToken::new()),
    )
    .await
    .expect("the worker gives up on Redis at once");
    let error = format!("{:#}", ended.expect_err("Redis is refused"));
    assert!(
        error.contains("cannot connect to Redis") && error.contains("UnknownIssuer"),
        "the worker says Redis's certificate has an unknown issuer: {error}"
    );

    // RabbitMQ: the link stays down, and says why, trying again meanwhile.
    let trust = Trust::load(Some(&tls.other_ca)).expect("the other CA");
    let url = tls.amqps_url.replace("amqps://", "amqps://guest:guest@");
    let prepare: kiln_io::amqp::Prepare = std::sync::Arc::new(|_| Box::pin(async { Ok(()) }));
    let link = kiln_io::amqp::Link::open(&url, &trust, "wrong-ca", prepare)
        .await
        .expect("a usable URL");
    let why = wait_for(
        "the link to say why it is down",
        Duration::from_secs(20),
        || {
            let state = link.state();
            async move {
                match state {
                    kiln_io::amqp::LinkState::Down {
                        error: Some(error), ..
                    } => Some(error),
                    _ => None,
                }
            }
        },
    )
    .await;
    assert!(
        why.contains("UnknownIssuer") && why.contains("127.0.0.1"),
        "the broker's certificate is refused, and the reason named: {why}"
    );
    drop(link);
    kiln.stop().await;
}

/// `rabbitmqctl args…`'s output; a failure fails the test.
fn rabbitmqctl(tls: &Tls, args: &[&str]) -> String {
    let output = std::process::Command::new(&tls.rabbitmqctl)
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(output.status.success(), "rabbitmqctl {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

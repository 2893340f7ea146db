//! Test environments leased from pools, end to end on the real Redis and Docker: a slot is
//! never given twice, a `docker` pool's environment is a container a worker starts, reachable
//! on the worker's advertised host (loopback here), and the worker's reaper removes it when
//! its lease ends, or finds it orphaned by its label.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::CreateContainerOptionsBuilder;
use kiln_shared::platform::Platform;
use kiln_shared::routing::Topology;
use kiln_tests::forge::TestRepo;
use kiln_tests::services::containers_named;
use kiln_tests::slack::{BOT_TOKEN, FakeSlack, now, send, slash_command};
use kiln_tests::{E2E_TIMEOUT, Kiln, TEST_IMAGE, wait_for};

const TOKENS: [&str; 4] = [
    "alice-token-0123456789",
    "bob-token-0123456789ab",
    "carol-token-0123456789",
    "dave-token-0123456789a",
];

fn config() -> String {
    let mut text = format!(
        "[[pool]]\nname = \"device-lab\"\nkind = \"static\"\nhosts = [\"lab-1.test\", \"lab-2.test\"]\n\
         [[pool]]\nname = \"bench\"\nkind = \"static\"\nhosts = [\"bench-1.test\"]\n\
         [[pool]]\nname = \"review\"\nkind = \"docker\"\nimage = \"{TEST_IMAGE}\"\ncapacity = 1\n\
         command = [\"httpd\", \"-f\", \"-p\", \"8000\", \"-h\", \"/etc\"]\nports = [8000]\ndefault_ttl = \"30m\"\nmax_ttl = \"1h\"\n"
    );
    for (name, token) in ["alice", "bob", "carol", "dave"].into_iter().zip(TOKENS) {
        text.push_str(&format!(
            "[[operator]]\nname = \"{name}\"\ntoken = \"{token}\"\n"
        ));
    }
    kiln_tests::config(&text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_for_the_last_slot_give_it_to_exactly_one() {
    let kiln = Kiln::start(&config()).await;
    let (status, reply) = kiln
        .command_text(TOKENS[0], "env request device-lab for 2h")
        .await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply.contains("Lease #1 of pool `device-lab`: lab-1.test, for 2h"),
        "{reply}"
    );

    let requests = TOKENS[1..]
        .iter()
        .map(|token| kiln.command_text(token, "env request device-lab"));
    let answers = futures_util::future::join_all(requests).await;
    let won: Vec<&(u16, String)> = answers.iter().filter(|(s, _)| *s == 200).collect();
    assert_eq!(won.len(), 1, "{answers:?}");
    assert!(won[0].1.contains("lab-2.test"), "{answers:?}");
    for (status, reply) in answers.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(*status, 422, "{reply}");
        assert!(
            reply.contains("Every slot of pool `device-lab` is taken"),
            "{reply}"
        );
    }

    let (_, listed) = kiln.command_text(TOKENS[0], "env list").await;
    assert!(
        listed.contains("Pool `device-lab` (static): 2 of 2 taken"),
        "{listed}"
    );
    assert!(
        listed.contains("#1 lab-1.test, held by alice, ends in 1h 59m"),
        "{listed}"
    );

    let (status, reply) = kiln.command_text(TOKENS[0], "env release 1").await;
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = kiln
        .command_text(TOKENS[0], "env request device-lab for 9h")
        .await;
    assert_eq!(status, 422, "{reply}");
    assert!(reply.contains("lends for at most 8h"), "{reply}");
    let (status, reply) = kiln.command_text(TOKENS[0], "env request device-lab").await;
    assert_eq!(status, 200, "a released slot is free again: {reply}");
    assert!(reply.contains("lab-1.test"), "{reply}");
    let (status, reply) = kiln.command_text(TOKENS[0], "env request nowhere").await;
    assert_eq!(status, 422, "{reply}");
    assert!(
        reply.contains("the pools: device-lab, bench, review"),
        "{reply}"
    );
    kiln.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_ends_while_the_bot_is_down_is_reaped_when_it_is_back() {
    let mut kiln = Kiln::start(&config()).await;
    let docker = Docker::connect_with_local_defaults().expect("docker");
    let containers = format!("{}-lease-", kiln.prefix);
    let (status, reply) = kiln
        .command_text(TOKENS[0], "env request review for 8s")
        .await;
    assert_eq!(status, 200, "{reply}");
    kiln.halt().await;
    assert_eq!(
        containers_named(&docker, &containers).await.len(),
        1,
        "nothing removes an environment while the bot is down"
    );
    kiln.start_bot(&config()).await;
    // The bot ends the lease; the worker whose engine runs the container removes it.
    kiln.start_workers().await;
    reaped(&kiln, &docker, "the restarted bot to reap the lease").await;
    kiln.stop().await;
}

/// How soon a cancelled build's slots are free again.
const SLOT_BACK_WITHIN: Duration = Duration::from_secs(5);

/// `<word> <seconds>` in a task's log, as its commands printed it.
fn moment(log: &str, word: &str) -> u64 {
    log.lines()
        .find_map(|line| line.split_once(&format!("{word} "))?.1.trim().parse().ok())
        .unwrap_or_else(|| panic!("`{word}` in the log:\n{log}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_that_need_the_same_device_take_turns() {
    let kiln = Kiln::start(&config()).await;
    let repo = TestRepo::new();
    let step = format!(
        "    image: {TEST_IMAGE}\n    resources: [bench]\n    \
         run: ['echo \"on $KILN_RESOURCE_BENCH\"', 'echo \"from $(date +%s)\"', \
         'sleep 2', 'echo \"until $(date +%s)\"']\n"
    );
    // One bench, two tasks a worker would run side by side: one waits for the other.
    let spec = format!("steps:\n  a:\n{step}  b:\n{step}");
    let commit = repo.commit("master", "Use the lab", &[(".kiln.yml", &spec)]);
    let id = kiln.push(&repo, "master", &commit, "delivery-lab").await;
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    let mut spans = Vec::new();
    for task in ["a", "b"] {
        let log = kiln.task_log(id, task).await;
        assert!(log.contains("on bench-1.test"), "{log}");
        spans.push((moment(&log, "from"), moment(&log, "until")));
    }
    spans.sort();
    assert!(
        spans[1].0 >= spans[0].1,
        "the second started after the first ended: {spans:?}"
    );
    let (_, listed) = kiln.command_text(TOKENS[0], "env list").await;
    assert!(
        listed.contains("Pool `bench` (static): 0 of 1 taken"),
        "{listed}"
    );

    // A cancelled task gives its slot back at once, running or waiting.
    let spec = format!("steps:\n  a:\n{step}  b:\n{step}").replace("sleep 2", "sleep 60");
    let commit = repo.commit("master", "Hold the bench", &[(".kiln.yml", &spec)]);
    let id = kiln.push(&repo, "master", &commit, "delivery-hold").await;
    wait_for("a task to hold the bench", E2E_TIMEOUT, || async {
        let (_, listed) = kiln.command_text(TOKENS[0], "env list").await;
        listed
            .contains("Pool `bench` (static): 1 of 1 taken")
            .then_some(())
    })
    .await;
    let (status, reply) = kiln.command_text(TOKENS[0], &format!("cancel {id}")).await;
    assert_eq!(status, 200, "{reply}");
    // A hand-out that read the build just before the cancel (the reaper's pass) may take the
    // slot for the waiting task; it gives it back as soon as it sees the build ended.
    wait_for("the cancelled build's slot", SLOT_BACK_WITHIN, || async {
        let (_, listed) = kiln.command_text(TOKENS[0], "env list").await;
        listed
            .contains("Pool `bench` (static): 0 of 1 taken")
            .then_some(())
    })
    .await;

    let spec = format!(
        "steps:\n  a:\n    image: {TEST_IMAGE}\n    resources: [nowhere]\n    run: 'true'\n"
    );
    let commit = repo.commit(
        "master",
        "Use a pool that is not there",
        &[(".kiln.yml", &spec)],
    );
    let id = kiln
        .push(&repo, "master", &commit, "delivery-nowhere")
        .await;
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "failed", "{build:#}");
    assert!(
        build["error"]
            .as_str()
            .unwrap_or_default()
            .contains("pool `nowhere`"),
        "{build:#}"
    );
    kiln.stop().await;
}

/// Waits for every container of `kiln`'s leases to be gone, then checks the docker pool's
/// slot is free.
async fn reaped(kiln: &Kiln, docker: &Docker, what: &str) {
    let containers = format!("{}-lease-", kiln.prefix);
    wait_for(what, E2E_TIMEOUT, || async {
        containers_named(docker, &containers)
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    let (_, listed) = kiln.command_text(TOKENS[0], "env list").await;
    assert!(
        listed.contains("Pool `review` (docker): 0 of 1 taken"),
        "{listed}"
    );
}

/// The host port a lease's answer says its environment's port 8000 is published on.
fn published_port(reply: &str) -> u16 {
    let (before, _) = reply.split_once(" → 8000").expect("a published port");
    before
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_environment_is_reachable_then_reaped_when_its_lease_ends() {
    let kiln = Kiln::start(&config()).await;
    let docker = Docker::connect_with_local_defaults().expect("docker");
    let containers = format!("{}-lease-", kiln.prefix);

    let (status, reply) = kiln
        .command_text(TOKENS[0], "env request review feature/x for 20s")
        .await;
    assert_eq!(status, 200, "{reply}");
    let port = published_port(&reply);
    assert_eq!(containers_named(&docker, &containers).await.len(), 1);
    // The container's own /etc/hostname, served by its httpd through the published port.
    let answer = wait_for("the environment to answer", E2E_TIMEOUT, || async {
        let url = format!("http://127.0.0.1:{port}/hostname");
        reqwest::get(url).await.ok().map(|r| r.status().as_u16())
    })
    .await;
    assert_eq!(answer, 200);
    let (status, reply) = kiln.command_text(TOKENS[1], "env request review").await;
    assert_eq!(status, 422, "one container at most: {reply}");

    reaped(&kiln, &docker, "the lease's container to be removed").await;

    // Released by hand: gone at once.
    let (status, reply) = kiln.command_text(TOKENS[1], "env request review").await;
    assert_eq!(status, 200, "the reaped slot is free: {reply}");
    let (status, reply) = kiln.command_text(TOKENS[1], "env extend 2 45m").await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply.contains("Lease #2 now ends in 1h, the most pool `review` lends for"),
        "{reply}"
    );
    let (status, reply) = kiln.command_text(TOKENS[1], "env release 2").await;
    assert_eq!(status, 200, "{reply}");
    assert!(containers_named(&docker, &containers).await.is_empty());
    kiln.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_asked_for_in_slack_is_answered_privately_and_its_channel_reminded() {
    const SIGNING_SECRET: &str = "slack-signing-secret-for-tests";
    let slack = FakeSlack::start().await;
    let config = format!(
        "{}[slack]\nsigning_secret = \"{SIGNING_SECRET}\"\nbot_token = \"{BOT_TOKEN}\"\n\
         api_url = \"{}\"\n[[permission]]\nusers = [\"slack:UALICE\"]\ncommands = [\"env\"]\n",
        config(),
        slack.api_url()
    );
    let kiln = Kiln::start(&config).await;
    let asked = slash_command(
        "UALICE",
        "alice",
        "env request device-lab for 10s",
        &slack.response_url(1),
    );
    let (status, _) = send(&kiln, "/slack/commands", &asked, SIGNING_SECRET, now()).await;
    assert_eq!(status, 200);
    let answer = wait_for("the private answer", E2E_TIMEOUT, || async {
        slack
            .answers()
            .into_iter()
            .find(|a| a.to_string().contains("Lease #1"))
    })
    .await;
    assert!(answer.to_string().contains("lab-1.test"), "{answer}");
    assert_eq!(answer["response_type"], "ephemeral", "{answer}");
    // A tenth of the lease before its end, then its end, in the channel it was asked in.
    let said = |needle: &'static str| {
        let slack = &slack;
        async move {
            slack
                .channel("C1")
                .into_iter()
                .find(|m| m["text"].as_str().is_some_and(|t| t.contains(needle)))
        }
    };
    let reminder = wait_for("the reminder", E2E_TIMEOUT, || said("`env extend 1`")).await;
    assert!(
        reminder["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with("alice: lease #1"),
        "{reminder}"
    );
    wait_for("the end", E2E_TIMEOUT, || said("has ended")).await;
    let (_, listed) = kiln.command_text(TOKENS[0], "env list").await;
    assert!(
        listed.contains("Pool `device-lab` (static): 0 of 2 taken"),
        "{listed}"
    );
    kiln.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_cannot_be_had_is_said_plainly_and_loses_nothing() {
    let config = format!(
        "{}[[pool]]\nname = \"broken\"\nkind = \"docker\"\n\
         image = \"kiln-test/no-such-image:{{{{ branch_slug }}}}\"\ncapacity = 1\nports = [8000]\n",
        config()
    );
    let kiln = Kiln::start(&config).await;
    let docker = Docker::connect_with_local_defaults().expect("docker");
    let image = format!(
        "kiln-test/no-such-image:{}",
        kiln_shared::template::branch_slug("never")
    );
    // Twice: the first failure gave its slot back, so the second is told the same.
    for delivery in 0..2 {
        let (status, reply) = kiln
            .command_text(TOKENS[0], "env request broken never")
            .await;
        assert_eq!(status, 503, "{delivery}: {reply}");
        assert!(
            reply.contains(&format!(
                "Kiln could not start an environment of pool `broken`: {image}: "
            )),
            "{delivery}: {reply}"
        );
    }
    let (_, listed) = kiln.command_text(TOKENS[0], "env list").await;
    assert!(
        listed.contains("Pool `broken` (docker): 0 of 1 taken"),
        "{listed}"
    );
    let containers = format!("{}-lease-", kiln.prefix);
    assert!(containers_named(&docker, &containers).await.is_empty());
    // Each request was answered and acknowledged: none waits in the queue or went dead.
    let topology = Topology::new(&kiln.prefix);
    let queues = [
        topology.jobs_queue(Platform::LinuxAmd64),
        topology.dead_jobs_queue(),
    ];
    for queue in queues {
        assert_eq!(messages_in(&kiln, &queue).await, 0, "{queue}");
    }
    kiln.stop().await;
}

/// How many messages wait in `queue`.
async fn messages_in(kiln: &Kiln, queue: &str) -> u32 {
    use lapin::options::QueueDeclareOptions;
    let connection = lapin::Connection::connect(
        &kiln.services.amqp_url,
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("RabbitMQ");
    let channel = connection.create_channel().await.expect("a channel");
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let declared = channel
        .queue_declare(queue.into(), passive, lapin::types::FieldTable::default())
        .await
        .expect("the queue exists");
    declared.message_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_reaper_removes_an_environment_whose_lease_is_gone_by_its_label() {
    let kiln = Kiln::start(&config()).await;
    let docker = Docker::connect_with_local_defaults().expect("docker");
    let prefix = &kiln.prefix;
    // As a worker that died between starting a container and recording it leaves one: its
    // lease (#99) never ran, or ended long ago.
    let labelled = |lease: &str, installation: &str| {
        HashMap::from([
            ("kiln.lease".to_owned(), lease.to_owned()),
            ("kiln.installation".to_owned(), installation.to_owned()),
        ])
    };
    let made = [
        (format!("{prefix}-lease-99"), Some(labelled("99", prefix))),
        // Named like an environment, labelled as none: not the reaper's.
        (format!("{prefix}-lease-98-by-hand"), None),
        // Another installation's environment on the same engine.
        (
            format!("{prefix}-lease-97-elsewhere"),
            Some(labelled("97", &format!("{prefix}-other"))),
        ),
    ];
    for (name, labels) in &made {
        let body = ContainerCreateBody {
            image: Some(TEST_IMAGE.to_owned()),
            cmd: Some(vec!["sleep".into(), "300".into()]),
            labels: labels.clone(),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        docker
            .create_container(Some(options), body)
            .await
            .expect("a container");
        let started = docker.start_container(name, None).await;
        // The reaper may take the orphan before it even starts.
        if *name != made[0].0 {
            started.expect("it starts");
        }
    }
    let stem = format!("{prefix}-lease-");
    wait_for("the orphan to be removed", E2E_TIMEOUT, || async {
        let left = containers_named(&docker, &stem).await;
        (!left.contains(&made[0].0)).then_some(())
    })
    .await;
    let mut left = containers_named(&docker, &stem).await;
    left.sort();
    assert_eq!(left, [made[2].0.clone(), made[1].0.clone()]);
    kiln.stop().await;
}

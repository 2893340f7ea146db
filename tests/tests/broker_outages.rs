//! RabbitMQ stopped, killed, frozen and cut off under a steady stream of signed pushes, with
//! a bot and two workers running as processes against a broker node of the test's own: the
//! processes never exit, every push is answered `202` and becomes exactly one build that
//! passes, and a new push after each outage is built as soon as the broker is back.
//!
//! `KILN_OUTAGES` sets how many restarts each of the first two tests makes (50 by default).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kiln_io::amqp::CONFIRM_DEADLINE;
use kiln_tests::broker::TestBroker;
use kiln_tests::forge::github_comment_payload;
use kiln_tests::installation::Installation;
use kiln_tests::{E2E_TIMEOUT, REPO, Services, TEST_SECRET, post_github, wait_for};

/// How soon after the broker is back a new push must have been built. The target is 5 s
/// (the benchmark prints the figures); the bound leaves room for a loaded machine.
const RECOVERY_BOUND: Duration = Duration::from_secs(20);

/// How long the bot and the workers may take to stop together, whatever the broker does:
/// their 20 s grace, and room for a loaded machine.
const STOP_BOUND: Duration = Duration::from_secs(30);

/// How long GitHub waits for a webhook's answer before it calls the delivery failed.
const FORGE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a test does to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outage {
    /// `rabbitmqctl stop_app`, then `start_app`.
    Stop,
    /// SIGKILL of the node, then a new boot.
    Kill,
}

/// A broker node of the test's own, and an installation on it.
struct OnOwnBroker {
    broker: TestBroker,
    kiln: Installation,
}

impl OnOwnBroker {
    async fn start() -> Self {
        let shared = Services::require().await;
        let broker = TestBroker::start().await;
        let services = Services {
            amqp_url: broker.url(),
            redis_url: shared.redis_url,
        };
        let kiln = Installation::start(services).await;
        Self { broker, kiln }
    }
}

/// `broker`'s id of the bot's connection, once it has one other than `closed`.
async fn bot_connection(broker: &TestBroker, closed: &str) -> String {
    let args = [
        "list_connections",
        "pid",
        "client_properties",
        "--no-table-headers",
    ];
    wait_for("the bot to be connected", E2E_TIMEOUT, || async {
        let connections = broker.ctl(&args).await;
        connections
            .lines()
            .filter(|l| l.contains("kiln-bot"))
            .filter_map(|l| l.split_whitespace().next())
            .find(|pid| *pid != closed)
            .map(str::to_owned)
    })
    .await
}

/// The pause of outage `n`: spread from 0.5 s to 20 s, evenly on a log scale and in a
/// scrambled order (golden-ratio steps), so short and long outages alternate.
fn pause(n: usize) -> Duration {
    let position = (n as f64 * 0.618_033_988_75).fract();
    Duration::from_secs_f64(0.5 * 40f64.powf(position))
}

fn outages() -> usize {
    std::env::var("KILN_OUTAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(50)
}

/// The p-th percentile of `figures` (sorted in place).
fn percentile(figures: &mut [Duration], p: f64) -> Duration {
    figures.sort_unstable();
    let at = ((figures.len() as f64 - 1.0) * p).round() as usize;
    figures.get(at).copied().unwrap_or_default()
}

async fn survive(outage: Outage) {
    let OnOwnBroker {
        mut broker,
        mut kiln,
    } = OnOwnBroker::start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let name = match outage {
        Outage::Stop => "stop",
        Outage::Kill => "kill",
    };
    let stream = tokio::spawn(kiln.pusher().stream(name, stop.clone()));
    let probe = kiln.pusher();
    if outage == Outage::Kill {
        // RabbitMQ 3.10 loses a quorum queue killed within seconds of its creation: after
        // the new boot its leader is never known. An installation's queues are older.
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    let count = outages();
    let mut recoveries = Vec::new();
    let mut probes = Vec::new();
    for n in 0..count {
        match outage {
            Outage::Stop => broker.stop_app().await,
            Outage::Kill => broker.kill().await,
        }
        let pause = pause(n);
        if n == 0 {
            // While RabbitMQ is away the bot says so, and still takes pushes.
            let (status, ready) =
                wait_for("/readyz to say RabbitMQ is down", E2E_TIMEOUT, || async {
                    let (status, ready) = kiln.readyz().await;
                    (status == 503).then_some((status, ready))
                })
                .await;
            assert_eq!(status, 503);
            assert!(
                ready["rabbitmq"].as_str().is_some_and(|s| s != "up"),
                "{ready}"
            );
            assert_eq!(ready["redis"], "up", "{ready}");
        }
        tokio::time::sleep(pause).await;
        kiln.check_running(&format!("during outage {n} ({pause:?})"));
        let back = match outage {
            Outage::Stop => broker.start_app().await,
            Outage::Kill => {
                broker.boot().await;
                broker.wait_up().await
            }
        };
        // A new push is accepted and built once the broker is back.
        let answer = probe.push(&format!("{name}-probe-{n}")).await;
        let status = kiln.ended(answer.build, E2E_TIMEOUT).await;
        let recovery = back.elapsed();
        assert_eq!(status, "passed", "the probe after outage {n}");
        assert!(
            recovery <= RECOVERY_BOUND,
            "after outage {n} ({pause:?}) a new push took {recovery:?} to be built"
        );
        recoveries.push(recovery);
        probes.push(answer);
        kiln.check_running(&format!("after outage {n}"));
        if n == 0 {
            let (status, ready) = kiln.readyz().await;
            assert_eq!(status, 200, "{ready}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut answers = stream.await.expect("the push stream");
    let pushed = answers.len();
    answers.extend(probes);
    let waited = kiln.check_builds(&answers).await;
    kiln.check_running("at the end");
    eprintln!(
        "{name}: {count} outages, {} pushes, all built once; {waited} waited in the outbox; \
         broker back → new push built: p50 {:?}, p99 {:?}",
        pushed + count,
        percentile(&mut recoveries, 0.5),
        percentile(&mut recoveries, 0.99),
    );
    kiln.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_push_is_built_once_through_broker_restarts() {
    survive(Outage::Stop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_push_is_built_once_through_broker_kills() {
    survive(Outage::Kill).await;
}

/// The bot's connection closed by the broker, then the broker frozen (so publishes wait for
/// confirms that do not come): no push is refused or lost, and nothing hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_under_a_publish_loses_nothing() {
    let OnOwnBroker { broker, mut kiln } = OnOwnBroker::start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let stream = tokio::spawn(kiln.pusher().stream("cut", stop.clone()));
    let mut closed = String::new();
    for _ in 0..3 {
        let bot = bot_connection(&broker, &closed).await;
        broker
            .ctl(&["close_connection", &bot, "closed by the test"])
            .await;
        closed = bot;
    }
    bot_connection(&broker, &closed).await;
    // Frozen past the bot's confirm deadline: publishes in flight time out, the bot gives
    // the connection up, and the pushes meanwhile wait in the outbox.
    broker.signal(nix::sys::signal::Signal::SIGSTOP);
    tokio::time::sleep(CONFIRM_DEADLINE + Duration::from_secs(2)).await;
    kiln.check_running("while the broker was frozen");
    broker.signal(nix::sys::signal::Signal::SIGCONT);
    wait_for("/readyz to say RabbitMQ is back", E2E_TIMEOUT, || async {
        (kiln.readyz().await.0 == 200).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let answers = stream.await.expect("the push stream");
    let waited = kiln.check_builds(&answers).await;
    assert!(
        waited > 0,
        "pushes sent while the broker was frozen waited in the outbox"
    );
    kiln.check_running("at the end");
    // Asked to stop while the broker is frozen, the bot and the workers still stop, cleanly
    // and within their grace.
    broker.signal(nix::sys::signal::Signal::SIGSTOP);
    let asked = std::time::Instant::now();
    kiln.stop_processes().await;
    let took = asked.elapsed();
    assert!(took < STOP_BOUND, "stopping took {took:?}");
    broker.signal(nix::sys::signal::Signal::SIGCONT);
    kiln.stop().await;
}

/// A broker that holds the connection and never answers keeps no webhook past GitHub's 10 s:
/// a push is accepted into the outbox, and built once the broker answers again; a comment's
/// command is refused with `503`, and its delivery is left unclaimed for the forge's
/// redelivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_broker_keeps_no_webhook_past_the_forges_timeout() {
    let OnOwnBroker { broker, mut kiln } = OnOwnBroker::start().await;
    let pusher = kiln.pusher();
    let before = pusher.push("frozen-before").await;
    assert_eq!(kiln.ended(before.build, E2E_TIMEOUT).await, "passed");

    broker.signal(nix::sys::signal::Signal::SIGSTOP);
    let asked = std::time::Instant::now();
    let push = pusher.push("frozen-push").await;
    let took = asked.elapsed();
    assert!(push.outbox, "the push waits in the outbox");
    assert!(took < FORGE_TIMEOUT, "the push was answered after {took:?}");

    let http = reqwest::Client::new();
    let hook = kiln.url("/hooks/github");
    let comment = github_comment_payload(REPO, 7, "alice", 101, "/kiln workers");
    let send = || {
        post_github(
            &http,
            &hook,
            "issue_comment",
            "frozen-comment",
            &comment,
            TEST_SECRET,
        )
    };
    let asked = std::time::Instant::now();
    let (status, answer) = send().await.expect("the bot answers");
    let took = asked.elapsed();
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("RabbitMQ")),
        "{answer}"
    );
    assert!(
        took < FORGE_TIMEOUT,
        "the comment was answered after {took:?}"
    );
    kiln.check_running("while the broker was frozen");

    broker.signal(nix::sys::signal::Signal::SIGCONT);
    assert_eq!(kiln.ended(push.build, E2E_TIMEOUT).await, "passed");
    // Redelivered once the broker answers, the comment is taken.
    let (status, answer) = send().await.expect("the bot answers");
    assert_eq!(status, 202, "{answer}");
    kiln.stop().await;
}

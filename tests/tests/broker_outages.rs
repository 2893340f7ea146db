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
use kiln_tests::forge::{TestRepo, push_payload};
use kiln_tests::processes::{self, Process};
use kiln_tests::services::unique_prefix;
use kiln_tests::{E2E_TIMEOUT, REPO, Services, TEST_SECRET, config, github_signature, wait_for};

/// One quick task, in the shell: the tests are about delivery, not running.
const SPEC: &str = "steps:\n  t:\n    runner: shell\n    run: 'true'\n";

/// How often a push arrives.
const PUSH_EVERY: Duration = Duration::from_millis(400);

/// How long a push's answer may take: longer than the bot waits for a confirm.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// How soon after the broker is back a new push must have been built. The target is 5 s
/// (the benchmark prints the figures); the bound leaves room for a loaded machine.
const RECOVERY_BOUND: Duration = Duration::from_secs(20);

/// How long the bot and the workers may take to stop together, whatever the broker does:
/// their 20 s grace, and room for a loaded machine.
const STOP_BOUND: Duration = Duration::from_secs(30);

/// What a test does to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outage {
    /// `rabbitmqctl stop_app`, then `start_app`.
    Stop,
    /// SIGKILL of the node, then a new boot.
    Kill,
}

/// A bot and two workers as processes, on a broker of their own.
struct Installation {
    broker: TestBroker,
    services: Services,
    prefix: String,
    bot: Process,
    bot_addr: std::net::SocketAddr,
    workers: Vec<Process>,
    repo: TestRepo,
    commit: String,
    http: reqwest::Client,
    _state: tempfile::TempDir,
}

impl Installation {
    async fn start() -> Self {
        let shared = Services::require().await;
        let broker = TestBroker::start().await;
        let services = Services {
            amqp_url: broker.url(),
            redis_url: shared.redis_url,
        };
        let prefix = unique_prefix();
        // `KILN_KEEP=1` keeps the processes' logs for a look after the test.
        let state = tempfile::Builder::new()
            .prefix("kiln-outages-")
            .disable_cleanup(std::env::var_os("KILN_KEEP").is_some())
            .tempdir()
            .expect("temp dir");
        eprintln!("logs in {}", state.path().display());
        let repo = TestRepo::new();
        let commit = repo.commit("master", "One quick task", &[(".kiln.yml", SPEC)]);
        let (bot, bot_addr) =
            processes::start_bot(&config(""), &services, &prefix, state.path()).await;
        let mut workers = Vec::new();
        for name in ["worker-a", "worker-b"] {
            workers.push(
                processes::start_named_worker(&services, &prefix, state.path(), 2, name).await,
            );
        }
        let installation = Self {
            broker,
            services,
            prefix,
            bot,
            bot_addr,
            workers,
            repo,
            commit,
            http: reqwest::Client::builder()
                .timeout(ANSWER_TIMEOUT)
                .build()
                .expect("HTTP client"),
            _state: state,
        };
        // A running installation: a build has gone all the way through before any outage.
        let first = installation.pusher().push("warm-up").await;
        let status = installation.ended(first.build, E2E_TIMEOUT).await;
        assert_eq!(status, "passed", "the first build");
        installation
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.bot_addr)
    }

    /// Checks that the bot and the workers are still running.
    fn check_running(&mut self, when: &str) {
        for process in std::iter::once(&mut self.bot).chain(self.workers.iter_mut()) {
            if let Some(status) = process.exited() {
                panic!("{} exited ({status}) {when}", process.name);
            }
        }
    }

    /// A pusher for this installation's commit, to move into a task.
    fn pusher(&self) -> Pusher {
        Pusher {
            http: self.http.clone(),
            url: self.url("/hooks/github"),
            body: Arc::new(push_payload(
                REPO,
                "master",
                &self.commit,
                &self.repo.clone_url(),
                "One quick task",
            )),
        }
    }

    /// `GET /builds/{id}`'s status, if the bot answers.
    async fn status(&self, id: u64) -> Option<String> {
        let response = self
            .http
            .get(self.url(&format!("/builds/{id}")))
            .send()
            .await
            .ok()?;
        let build: serde_json::Value = response.json().await.ok()?;
        build["status"].as_str().map(str::to_owned)
    }

    /// Waits for build `id` to end, within `timeout`, and returns its status.
    async fn ended(&self, id: u64, timeout: Duration) -> String {
        wait_for(&format!("build {id} to end"), timeout, || async {
            self.status(id)
                .await
                .filter(|s| !matches!(s.as_str(), "queued" | "running"))
        })
        .await
    }

    /// The broker's id of the bot's connection, once it has one other than `closed`.
    async fn bot_connection(&self, closed: &str) -> String {
        let args = [
            "list_connections",
            "pid",
            "client_properties",
            "--no-table-headers",
        ];
        wait_for("the bot to be connected", E2E_TIMEOUT, || async {
            let connections = self.broker.ctl(&args).await;
            connections
                .lines()
                .filter(|l| l.contains("kiln-bot"))
                .filter_map(|l| l.split_whitespace().next())
                .find(|pid| *pid != closed)
                .map(str::to_owned)
        })
        .await
    }

    /// `/readyz`: its status and answer.
    async fn readyz(&self) -> (u16, serde_json::Value) {
        let response = self
            .http
            .get(self.url("/readyz"))
            .send()
            .await
            .expect("the bot answers /readyz");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON"))
    }

    /// How many builds wait in the outbox.
    async fn outbox_len(&self) -> u64 {
        let mut redis = redis::Client::open(self.services.redis_url.as_str())
            .and_then(|c| c.get_connection())
            .expect("Redis");
        redis::cmd("ZCARD")
            .arg(format!("{}:outbox", self.prefix))
            .query(&mut redis)
            .expect("ZCARD")
    }

    /// Checks that every answered push became its own build and that each passed; returns
    /// how many waited in the outbox.
    async fn check_builds(&self, answers: &[Answer]) -> usize {
        let mut ids: Vec<u64> = answers.iter().map(|a| a.build).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), answers.len(), "two pushes became one build");
        for id in &ids {
            let status = self.ended(*id, E2E_TIMEOUT).await;
            assert_eq!(status, "passed", "build {id}");
        }
        wait_for("the outbox to empty", E2E_TIMEOUT, || async {
            (self.outbox_len().await == 0).then_some(())
        })
        .await;
        answers.iter().filter(|a| a.outbox).count()
    }

    /// Stops the bot and the workers (SIGTERM), checking each stopped cleanly.
    async fn stop_processes(&mut self) {
        let processes = std::iter::once(&mut self.bot).chain(self.workers.iter_mut());
        futures_util::future::join_all(processes.map(Process::stop_in_place)).await;
    }

    /// Stops everything cleanly (SIGTERM), checking each process stopped well, and removes
    /// what the installation left.
    async fn stop(mut self) {
        self.stop_processes().await;
        let prefix = self.prefix.clone();
        self.services.remove_everything_under(&prefix).await;
    }
}

/// What the bot answered a push.
#[derive(Debug, Clone)]
struct Answer {
    build: u64,
    /// Whether its request waited in the outbox.
    outbox: bool,
}

/// Sends signed pushes of one commit, each with a delivery id of its own.
#[derive(Clone)]
struct Pusher {
    http: reqwest::Client,
    url: String,
    body: Arc<Vec<u8>>,
}

impl Pusher {
    /// Sends one push as `delivery`; the answer must be `202`.
    async fn push(&self, delivery: &str) -> Answer {
        let response = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-github-delivery", delivery)
            .header(
                "x-hub-signature-256",
                github_signature(TEST_SECRET, &self.body),
            )
            .body(self.body.as_ref().clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("push {delivery} got no answer: {e}"));
        let status = response.status().as_u16();
        let answer: serde_json::Value = response.json().await.unwrap_or_default();
        assert_eq!(status, 202, "push {delivery}: {answer}");
        Answer {
            build: answer["build_id"].as_u64().expect("a build id"),
            outbox: answer["outbox"].as_bool().unwrap_or(false),
        }
    }

    /// Pushes every [`PUSH_EVERY`] until `stop` is set, each push in a task of its own so
    /// a slow answer does not hold up the stream; returns every answer.
    async fn stream(self, name: &'static str, stop: Arc<AtomicBool>) -> Vec<Answer> {
        let mut pushes = Vec::new();
        let mut every = tokio::time::interval(PUSH_EVERY);
        while !stop.load(Ordering::Relaxed) {
            every.tick().await;
            let pusher = self.clone();
            let delivery = format!("{name}-{}", pushes.len());
            pushes.push(tokio::spawn(async move { pusher.push(&delivery).await }));
        }
        let mut answers = Vec::new();
        for push in pushes {
            answers.push(push.await.expect("a push panicked"));
        }
        answers
    }
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
    let mut kiln = Installation::start().await;
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
            Outage::Stop => kiln.broker.stop_app().await,
            Outage::Kill => kiln.broker.kill().await,
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
            Outage::Stop => kiln.broker.start_app().await,
            Outage::Kill => {
                kiln.broker.boot().await;
                kiln.broker.wait_up().await
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
    let mut kiln = Installation::start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let stream = tokio::spawn(kiln.pusher().stream("cut", stop.clone()));
    let mut closed = String::new();
    for _ in 0..3 {
        let bot = kiln.bot_connection(&closed).await;
        kiln.broker
            .ctl(&["close_connection", &bot, "closed by the test"])
            .await;
        closed = bot;
    }
    kiln.bot_connection(&closed).await;
    // Frozen past the bot's confirm deadline: publishes in flight time out, the bot gives
    // the connection up, and the pushes meanwhile wait in the outbox.
    kiln.broker.signal(nix::sys::signal::Signal::SIGSTOP);
    tokio::time::sleep(CONFIRM_DEADLINE + Duration::from_secs(2)).await;
    kiln.check_running("while the broker was frozen");
    kiln.broker.signal(nix::sys::signal::Signal::SIGCONT);
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
    kiln.broker.signal(nix::sys::signal::Signal::SIGSTOP);
    let asked = std::time::Instant::now();
    kiln.stop_processes().await;
    let took = asked.elapsed();
    assert!(took < STOP_BOUND, "stopping took {took:?}");
    kiln.broker.signal(nix::sys::signal::Signal::SIGCONT);
    kiln.stop().await;
}

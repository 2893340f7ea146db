//! The benchmark: a whole Kiln on the real services, driven, and measured. Each figure is
//! the median of its runs, printed beside the floor measured in the same run (what the
//! services themselves take), so a comparison holds on a noisy machine.
//!
//! `deploy/dev/bench` runs it in full; `--quick` (a test runs it, so it never rots) does the
//! same with small counts and one run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use futures_util::StreamExt;
use kiln_shared::wire::{self, Event};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

use crate::forge::{TestRepo, push_payload};
use crate::{E2E_TIMEOUT, Kiln, REPO, TEST_IMAGE, TEST_SECRET};

/// How much to do.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Runs per figure; the median is printed.
    pub runs: usize,
    /// Small counts, for CI.
    pub quick: bool,
}

impl Options {
    /// `n` in a full run, `quick` in a quick one.
    fn count(&self, n: usize, quick: usize) -> usize {
        if self.quick { quick } else { n }
    }
}

/// One figure: its samples (one per run, or one per event for latencies), its unit, and
/// what it is compared with.
#[derive(Debug, Clone)]
pub struct Figure {
    pub name: &'static str,
    pub unit: &'static str,
    pub samples: Vec<f64>,
    /// The floor it is compared with: its name and median.
    pub floor: Option<(&'static str, f64)>,
    /// The target, as the issue states it, and whether more is better.
    pub target: Option<(f64, bool)>,
    /// Which of the samples' percentiles the figure is (50 for the median).
    pub percentile: u8,
}

impl Figure {
    fn new(name: &'static str, unit: &'static str, samples: Vec<f64>) -> Self {
        Self {
            name,
            unit,
            samples,
            floor: None,
            target: None,
            percentile: 50,
        }
    }

    /// The `p`th percentile of the samples (nearest rank).
    pub fn value(&self) -> f64 {
        percentile(&self.samples, self.percentile)
    }

    /// Whether the figure meets its target, if it has one.
    pub fn meets(&self) -> Option<bool> {
        let (target, more_is_better) = self.target?;
        Some(if more_is_better {
            self.value() >= target
        } else {
            self.value() <= target
        })
    }

    /// `name: value unit [min=… max=… n=…]`, then the floor and the target.
    pub fn line(&self) -> String {
        let min = self.samples.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self
            .samples
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        let mut line = format!(
            "{}: {} {} [min={} max={} n={}]",
            self.name,
            shown(self.value()),
            self.unit,
            shown(min),
            shown(max),
            self.samples.len()
        );
        if let Some((floor, value)) = self.floor
            && value > 0.0
        {
            line.push_str(&format!(" ({:.1}× {floor})", self.value() / value));
        }
        if let (Some((target, more)), Some(met)) = (self.target, self.meets()) {
            let sign = if more { "≥" } else { "≤" };
            let verdict = if met { "met" } else { "missed" };
            line.push_str(&format!(
                " target {sign} {} {}: {verdict}",
                shown(target),
                self.unit
            ));
        }
        line
    }
}

fn shown(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// The nearest-rank percentile `p` of `samples`; 0 for none.
pub fn percentile(samples: &[f64], p: u8) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (usize::from(p) * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// The summary line: how many figures met their targets.
pub fn summary(figures: &[Figure]) -> String {
    let judged: Vec<bool> = figures.iter().filter_map(Figure::meets).collect();
    let met = judged.iter().filter(|m| **m).count();
    format!(
        "summary: {} figures; {met} of {} targets met",
        figures.len(),
        judged.len()
    )
}

/// Runs every figure and returns them, printing each line as it is measured.
pub async fn run(options: Options) -> Vec<Figure> {
    let mut figures = Vec::new();
    let mut report = |figure: Figure| {
        println!("{}", figure.line());
        figures.push(figure.clone());
        figure
    };
    let amqp = report(amqp_round_trip(options).await);
    let docker = report(docker_create_start(options).await);
    let xadd = report(redis_xadd(options).await);

    let kiln = Kiln::start(&crate::config("")).await;
    let bench = Bench::new(&kiln).await;
    let mut started = bench.push_to_task_started(options).await;
    started.floor = Some((amqp.name, amqp.value()));
    started.target = Some((3.0, false));
    report(started.clone());
    let mut p99 = started;
    p99.name = "push_to_task_started_p99";
    p99.percentile = 99;
    p99.target = Some((10.0, false));
    report(p99);
    let mut done = bench.push_to_docker_task_done(options).await;
    done.floor = Some((docker.name, docker.value()));
    report(done);
    let mut accepted = bench.webhooks_accepted(options).await;
    accepted.target = Some((3000.0, true));
    report(accepted);
    let mut builds = bench.builds_completed(options).await;
    builds.target = Some((3000.0, true));
    report(builds);
    let mut lines = bench.log_lines(options).await;
    lines.floor = Some((xadd.name, xadd.value()));
    lines.target = Some((200_000.0, true));
    report(lines);
    kiln.stop().await;
    println!("{}", summary(&figures));
    figures
}

/// AMQP's round trip on a quorum queue: publish with a confirm, then consume.
async fn amqp_round_trip(options: Options) -> Figure {
    let services = crate::Services::require().await;
    let connection = Connection::connect(&services.amqp_url, ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let queue = format!("{}-bench-floor", crate::services::unique_prefix());
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.as_str().into(), durable, arguments)
        .await
        .expect("declare");
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut samples = Vec::new();
    for _ in 0..options.count(200, 20) {
        let begun = Instant::now();
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                b"ping",
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        let delivery = tokio::time::timeout(E2E_TIMEOUT, consumer.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("delivery");
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
        samples.push(millis(begun.elapsed()));
    }
    let _ = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    Figure::new("floor_amqp_round_trip", "ms", samples)
}

/// Docker's create and start of a container, through the Engine API.
async fn docker_create_start(options: Options) -> Figure {
    let docker = Docker::connect_with_local_defaults().expect("docker");
    let prefix = crate::services::unique_prefix();
    let mut samples = Vec::new();
    for i in 0..options.count(20, 3) {
        let name = format!("{prefix}-bench-{i}");
        let body = ContainerCreateBody {
            image: Some(TEST_IMAGE.into()),
            cmd: Some(vec!["sleep".into(), "5".into()]),
            ..Default::default()
        };
        let begun = Instant::now();
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        docker
            .create_container(Some(options), body)
            .await
            .expect("create");
        docker.start_container(&name, None).await.expect("start");
        samples.push(millis(begun.elapsed()));
        let remove = RemoveContainerOptionsBuilder::new().force(true).build();
        let _ = docker.remove_container(&name, Some(remove)).await;
    }
    Figure::new("floor_docker_create_start", "ms", samples)
}

/// Raw pipelined `XADD` into one stream, in entries per second.
async fn redis_xadd(options: Options) -> Figure {
    let services = crate::Services::require().await;
    let client = redis::Client::open(services.redis_url.as_str()).expect("Redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let key = format!("{}-bench-stream", crate::services::unique_prefix());
    let entries = options.count(200_000, 20_000);
    let mut samples = Vec::new();
    for _ in 0..options.runs {
        let begun = Instant::now();
        for chunk in 0..entries / 1000 {
            let mut pipe = redis::pipe();
            for i in 0..1000 {
                pipe.cmd("XADD")
                    .arg(&key)
                    .arg("*")
                    .arg("line")
                    .arg(format!("line {}", chunk * 1000 + i))
                    .ignore();
            }
            let _: () = pipe.query_async(&mut conn).await.expect("XADD");
        }
        samples.push(entries as f64 / begun.elapsed().as_secs_f64());
        let _: usize = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("DEL");
    }
    Figure::new("floor_redis_xadd", "lines/s", samples)
}

/// A running Kiln, its test repository, and when each build's events were heard.
struct Bench<'a> {
    kiln: &'a Kiln,
    repo: TestRepo,
    heard: Arc<Mutex<HashMap<(u64, &'static str), Instant>>>,
    deliveries: std::sync::atomic::AtomicU64,
}

impl<'a> Bench<'a> {
    async fn new(kiln: &'a Kiln) -> Self {
        let heard: Arc<Mutex<HashMap<(u64, &'static str), Instant>>> = Arc::default();
        let mut events = crate::events::subscribe(kiln, "#").await;
        let log = heard.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = events.next().await {
                let now = Instant::now();
                let _ = delivery.ack(BasicAckOptions::default()).await;
                let Ok(event) = wire::decode::<Event>(&delivery.data) else {
                    continue;
                };
                let kind = match &event {
                    Event::BuildRequested(_) => "requested",
                    Event::TaskStarted(_) => "started",
                    Event::TaskFinished(_) => "finished",
                    Event::BuildFinished(_) => "ended",
                };
                let id = event.build().id.0;
                log.lock()
                    .expect("not poisoned")
                    .entry((id, kind))
                    .or_insert(now);
            }
        });
        Self {
            kiln,
            repo: TestRepo::new(),
            heard,
            deliveries: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Commits `spec` on master and returns the commit.
    fn pipeline(&self, spec: &str) -> String {
        self.repo
            .commit("master", "A pipeline", &[(".kiln.yml", spec)])
    }

    /// Announces `commit`, signed; when the 202 came, and the build.
    async fn push(&self, commit: &str) -> (Instant, u64) {
        let n = self
            .deliveries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body = push_payload(REPO, "master", commit, &self.repo.clone_url(), "Bench");
        let (status, answer) = self
            .kiln
            .send_github("push", &format!("bench-{n}"), &body, TEST_SECRET)
            .await;
        let accepted = Instant::now();
        assert_eq!(status, 202, "{answer}");
        (accepted, answer["build_id"].as_u64().expect("a build id"))
    }

    /// When build `id`'s event `kind` was heard, waiting for it.
    async fn heard(&self, id: u64, kind: &'static str) -> Instant {
        self.heard_within(id, kind, E2E_TIMEOUT).await
    }

    /// The same, waiting at most `timeout`.
    async fn heard_within(&self, id: u64, kind: &'static str, timeout: Duration) -> Instant {
        crate::wait_for(&format!("build {id} {kind}"), timeout, || async {
            self.heard
                .lock()
                .expect("not poisoned")
                .get(&(id, kind))
                .copied()
        })
        .await
    }

    /// From a push's 202 to its one shell task's `task.started`, idle worker.
    async fn push_to_task_started(&self, options: Options) -> Figure {
        let commit = self.pipeline("steps:\n  t:\n    runner: shell\n    run: 'true'\n");
        let mut samples = Vec::new();
        for _ in 0..options.count(100, 10) {
            let (accepted, id) = self.push(&commit).await;
            let started = self.heard(id, "started").await;
            samples.push(millis(started.saturating_duration_since(accepted)));
            self.kiln.finished_build(id).await;
        }
        Figure::new("push_to_task_started_p50", "ms", samples)
    }

    /// From a push's 202 to the end of its one Docker task (`true`): checkout, container
    /// create and start, run, logs, removal.
    async fn push_to_docker_task_done(&self, options: Options) -> Figure {
        let commit = self.pipeline(&format!(
            "steps:\n  t:\n    image: {TEST_IMAGE}\n    run: 'true'\n"
        ));
        let mut samples = Vec::new();
        for _ in 0..options.count(20, 3) {
            let (accepted, id) = self.push(&commit).await;
            let finished = self.heard(id, "finished").await;
            samples.push(millis(finished.saturating_duration_since(accepted)));
            self.kiln.finished_build(id).await;
        }
        Figure::new("push_to_docker_task_done", "ms", samples)
    }

    /// Signed pushes answered 202 per second, 32 at a time; their builds run nothing.
    async fn webhooks_accepted(&self, options: Options) -> Figure {
        let commit = self.pipeline(
            "steps:\n  t:\n    runner: shell\n    when: { branch: [nowhere] }\n    run: 'true'\n",
        );
        let count = options.count(1000, 100);
        let mut samples = Vec::new();
        for _ in 0..options.runs {
            let ids = Mutex::new(Vec::with_capacity(count));
            let begun = Instant::now();
            futures_util::stream::iter(0..count)
                .for_each_concurrent(32, |_| async {
                    let (_, id) = self.push(&commit).await;
                    ids.lock().expect("not poisoned").push(id);
                })
                .await;
            samples.push(count as f64 / begun.elapsed().as_secs_f64());
            // Drained before the next run or figure, which would otherwise wait behind them.
            let drain = E2E_TIMEOUT + Duration::from_secs(count as u64);
            for id in ids.into_inner().expect("not poisoned") {
                self.heard_within(id, "ended", drain).await;
            }
        }
        Figure::new("webhooks_accepted", "/s", samples)
    }

    /// One-task shell builds completed per minute: pushed all at once, timed to the last end.
    async fn builds_completed(&self, options: Options) -> Figure {
        let commit = self.pipeline("steps:\n  t:\n    runner: shell\n    run: 'true'\n");
        let count = options.count(300, 20);
        let mut samples = Vec::new();
        for _ in 0..options.runs {
            let begun = Instant::now();
            let mut ids = Vec::new();
            for _ in 0..count {
                ids.push(self.push(&commit).await.1);
            }
            let mut last = begun;
            let drain = E2E_TIMEOUT + Duration::from_secs(count as u64);
            for id in ids {
                last = last.max(self.heard_within(id, "ended", drain).await);
            }
            samples.push(count as f64 / last.duration_since(begun).as_secs_f64() * 60.0);
        }
        Figure::new("builds_completed", "/min", samples)
    }

    /// Log lines per second from one shell task into Redis: its lines over the time from
    /// `task.started` to `task.finished`.
    async fn log_lines(&self, options: Options) -> Figure {
        let lines = options.count(200_000, 20_000);
        let commit = self.pipeline(&format!(
            "steps:\n  t:\n    runner: shell\n    run: 'seq 1 {lines}'\n"
        ));
        let mut samples = Vec::new();
        for _ in 0..options.runs {
            let (_, id) = self.push(&commit).await;
            let started = self.heard(id, "started").await;
            let finished = self.heard(id, "finished").await;
            let build = self.kiln.finished_build(id).await;
            assert_eq!(build["status"], "passed", "{build:#}");
            samples.push(lines as f64 / finished.duration_since(started).as_secs_f64());
        }
        Figure::new("log_lines", "lines/s", samples)
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_say_the_median_the_spread_the_floor_and_the_target() {
        let mut figure = Figure::new("push_to_task_started_p50", "ms", vec![4.0, 2.0, 3.0]);
        figure.floor = Some(("floor_amqp_round_trip", 1.5));
        figure.target = Some((3.0, false));
        assert_eq!(
            figure.line(),
            "push_to_task_started_p50: 3.00 ms [min=2.00 max=4.00 n=3] (2.0× floor_amqp_round_trip) target ≤ 3.00 ms: met"
        );
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 100.0], 99), 100.0);
        assert_eq!(percentile(&[], 50), 0.0);
        assert_eq!(summary(&[figure]), "summary: 1 figures; 1 of 1 targets met");
    }
}

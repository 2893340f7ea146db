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
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use kiln_shared::build::BuildStatus;
use kiln_shared::platform::Platform;
use kiln_shared::routing::Topology;
use kiln_shared::wire::{self, Event};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use kiln_worker::checkout::WorkDirs;
use tokio_util::sync::CancellationToken;

mod cluster;
mod drain;
mod fleet;
mod retention;
mod workers;

use crate::forge::{TestRepo, push_payload};
use crate::processes::rss_mib;
use crate::{E2E_TIMEOUT, Kiln, REPO, TEST_IMAGE, TEST_SECRET};

/// How much to do.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Runs per figure; the median is printed.
    pub runs: usize,
    /// Small counts, for CI.
    pub quick: bool,
    /// Only the figures whose names start with one of these (the floors always); every
    /// figure if none.
    pub only: &'static [String],
}

impl Options {
    /// `n` in a full run, `quick` in a quick one.
    fn count(&self, n: usize, quick: usize) -> usize {
        if self.quick { quick } else { n }
    }

    /// Whether any of the figures `names` is to be measured.
    fn wants(&self, names: &[&str]) -> bool {
        self.only.is_empty()
            || names.iter().any(|name| {
                self.only
                    .iter()
                    .any(|start| name.starts_with(start.as_str()))
            })
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
    /// What it should be.
    pub target: Option<Target>,
    /// Which of the samples' percentiles the figure is (50 for the median).
    pub percentile: u8,
}

/// A figure's target. Speeds and sizes are judged against their floor of the same run, never
/// in absolute terms: machines of one kind differ by 2–3× in speed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// At most this many times the floor.
    AtMostTimes(f64),
    /// At least this many times the floor.
    AtLeastTimes(f64),
    /// At most this count (of tasks lost, say), whatever the machine.
    AtMost(f64),
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

    /// Compares the figure with `floor`, of the same run, and judges it by `target`.
    fn against(mut self, floor: &Figure, target: Option<Target>) -> Self {
        self.floor = Some((floor.name, floor.value()));
        self.target = target;
        self
    }

    /// The `p`th percentile of the samples (nearest rank).
    pub fn value(&self) -> f64 {
        percentile(&self.samples, self.percentile)
    }

    /// The target's bound in the figure's unit, if it has one (and, for a ratio, a floor).
    fn bound(&self) -> Option<f64> {
        let floor = self.floor.map(|(_, value)| value);
        match self.target? {
            Target::AtMostTimes(times) | Target::AtLeastTimes(times) => Some(times * floor?),
            Target::AtMost(count) => Some(count),
        }
    }

    /// Whether the figure meets its target, if it has one.
    pub fn meets(&self) -> Option<bool> {
        let bound = self.bound()?;
        Some(match self.target? {
            Target::AtLeastTimes(_) => self.value() >= bound,
            Target::AtMostTimes(_) | Target::AtMost(_) => self.value() <= bound,
        })
    }

    /// The figure as JSON: its value, samples, floor, target and verdict.
    pub fn json(&self) -> serde_json::Value {
        let target = self.target.map(|target| match target {
            Target::AtMostTimes(times) => serde_json::json!({ "at_most_times": times }),
            Target::AtLeastTimes(times) => serde_json::json!({ "at_least_times": times }),
            Target::AtMost(count) => serde_json::json!({ "at_most": count }),
        });
        serde_json::json!({
            "name": self.name,
            "unit": self.unit,
            "value": self.value(),
            "percentile": self.percentile,
            "samples": self.samples,
            "floor": self.floor.map(|(name, value)| serde_json::json!({ "name": name, "value": value })),
            "target": target,
            "bound": self.bound(),
            "met": self.meets(),
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
        if let (Some(target), Some(bound), Some(met)) = (self.target, self.bound(), self.meets()) {
            let verdict = if met { "met" } else { "missed" };
            let (unit, floor) = (self.unit, self.floor.map_or("", |(name, _)| name));
            let wanted = match target {
                Target::AtMostTimes(times) => {
                    format!("≤ {times}× {floor} = {} {unit}", shown(bound))
                }
                Target::AtLeastTimes(times) => {
                    format!("≥ {times}× {floor} = {} {unit}", shown(bound))
                }
                Target::AtMost(_) => format!("≤ {} {unit}", shown(bound)),
            };
            line.push_str(&format!(" target {wanted}: {verdict}"));
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
    // Sampled through every figure from the Kiln's start: each line is followed by the
    // processes' peak and end while it was measured.
    let memory = std::sync::OnceLock::<Footprint>::new();
    let mut report = |figure: Figure| {
        println!("{}", figure.line());
        if let Some(said) = memory.get().map(Footprint::since_mark)
            && !said.is_empty()
        {
            println!("{said}");
        }
        figures.push(figure.clone());
        figure
    };
    let amqp = report(amqp_round_trip(options).await);
    let docker = report(docker_create_start(options).await);
    let xadd = report(redis_xadd(options).await);
    let confirms = report(amqp_confirms(options).await);
    let xread = report(redis_xread_wakeup(options).await);

    // The bot and a worker of two slots, as processes of their own: their memory is theirs.
    // `hotfix/*`'s builds are of high priority (`priority_normal_started_before_high`).
    let kiln = Kiln::start_processes(&crate::config(HIGH_PRIORITY), 2).await;
    let _ = memory.set(Footprint::sample(&kiln));
    let bench = Bench::new(&kiln).await;
    bench
        .warm_up(&bench.pipeline("steps:\n  t:\n    runner: shell\n    run: 'true'\n"))
        .await;
    // Memory under load is judged against memory idle, and the load is the two throughputs:
    // the four are measured together.
    const LOAD: [&str; 4] = [
        "bot_rss",
        "worker_rss",
        "webhooks_accepted",
        "builds_completed",
    ];
    // The cluster's figures are judged against the single node's of the same run.
    let cluster = options.wants(&["cluster_"]);
    let (mut single_started, mut single_accepted) = (None, None);
    // Printed, not judged: idle memory has no floor to compare it with. Every figure's
    // memory is judged against it.
    let [bot_idle, worker_idle] = bench.footprint_idle(options).await;
    let (bot_idle, worker_idle) = (report(bot_idle), report(worker_idle));

    if options.wants(&["push_to_task_started"]) || cluster {
        let started = bench
            .push_to_task_started(options)
            .await
            .against(&amqp, Some(Target::AtMostTimes(2.0)));
        single_started = Some(report(started.clone()));
        let mut p99 = started;
        p99.name = "push_to_task_started_p99";
        p99.percentile = 99;
        p99.target = Some(Target::AtMostTimes(4.0));
        report(p99);
    }
    if options.wants(&["push_to_container_running"]) {
        let running = bench.push_to_container_running(options).await;
        report(running.against(&docker, Some(Target::AtMostTimes(1.1))));
    }
    if options.wants(&["push_to_docker_task_done"]) {
        let done = bench.push_to_docker_task_done(options).await;
        report(done.against(&docker, None));
    }

    if options.wants(&LOAD) || cluster {
        let load = Footprint::sample(&kiln);
        let accepted = bench.webhooks_accepted(options).await;
        let accepted = accepted.against(&confirms, Some(Target::AtLeastTimes(0.6)));
        single_accepted = Some(report(accepted));
        // Printed, not judged: no floor measures a whole build.
        report(bench.builds_completed(options).await);
        let [bot_loaded, worker_loaded] =
            load.finish(["bot_rss_loaded", "worker_rss_loaded"]).await;
        for (mut loaded, idle) in [(bot_loaded, &bot_idle), (worker_loaded, &worker_idle)] {
            // The peak under load, against twice the idle median.
            loaded.percentile = 100;
            report(loaded.against(idle, Some(Target::AtMostTimes(2.0))));
        }
    }

    if cluster {
        let single = (single_started.as_ref(), single_accepted.as_ref());
        for figure in cluster::figures(options, single.0, single.1).await {
            report(figure);
        }
    }

    if options.wants(&["log_lines"]) {
        let lines = bench.log_lines(options).await;
        report(lines.against(&xadd, Some(Target::AtLeastTimes(0.9))));
    }
    if options.wants(&["live_tail_lag"]) {
        let lag = bench.live_tail_lag(options).await;
        report(lag.against(&xread, Some(Target::AtMostTimes(5.0))));
    }
    if options.wants(&["sse_log_lag"]) {
        let lag = bench.sse_log_lag(options).await;
        report(lag.against(&xread, Some(Target::AtMostTimes(5.0))));
    }
    if options.wants(&[
        "build_json_first_byte",
        "build_page_first_byte",
        "build_page_render",
    ]) {
        let [json, first_byte, render] = bench.build_page(options).await;
        let json = report(json);
        report(first_byte.against(&json, Some(Target::AtMostTimes(2.0))));
        // Printed, not judged: no floor measures a browser's render.
        report(render);
    }
    if options.wants(&["priority_"]) {
        report(bench.priority(options).await);
    }
    if options.wants(&["image_resolve"]) {
        // Printed, not judged: hashing the context and asking Docker have no floor here.
        report(bench.image_resolve(options).await);
    }

    if options.wants(&["registry_image_pull"]) {
        for figure in fleet::image_pull(options).await {
            report(figure);
        }
    }
    if options.wants(&["artifact_upload", "artifact_download"]) {
        for figure in fleet::artifact_transfer(options).await {
            report(figure);
        }
    }

    if options.wants(&["redis_per_build", "redis_after_soak"]) {
        for figure in retention::redis_per_build(options).await {
            report(figure);
        }
    }

    if options.wants(&["broker_back"]) {
        let [start, back, waited] = broker_recovery(options).await;
        let start = report(start);
        let back = back.against(&start, None);
        report(back.clone());
        let mut p99 = back;
        p99.name = "broker_back_to_build_p99";
        p99.percentile = 99;
        report(p99);
        report(waited);
    }

    if options.wants(&["frozen_worker"]) {
        report(workers::frozen_worker(options).await);
    }
    if options.wants(&["dispatch_"]) {
        for figure in workers::tls_dispatch(options).await {
            report(figure);
        }
    }

    let drained = options.wants(&["drain"]);
    kiln.stop_process("kiln-worker").await;
    if drained {
        for figure in bench.drain(options).await {
            report(figure);
        }
    }
    drop(bench);
    let memory = memory.get().expect("sampled since the Kiln started");
    if drained {
        // What the bot keeps once the drain is over, over a second (a fifth, quick).
        let from = memory.samples.lock().expect("not poisoned")[0].len();
        memory.sampled(options.count(50, 10)).await;
        let after = memory.samples.lock().expect("not poisoned")[0][from..].to_vec();
        let after = Figure::new("bot_rss_after_drain", "MiB", after);
        report(after.against(&bot_idle, Some(Target::AtMostTimes(2.0))));
    }
    // The peaks through every figure since the Kiln started, against four times idle.
    memory.stop.cancel();
    let [bot, worker] = memory.samples.lock().expect("not poisoned").clone();
    let peaks = [
        Figure::new("bot_rss_peak", "MiB", bot),
        Figure::new("worker_rss_peak", "MiB", worker),
    ];
    for (mut peak, idle) in peaks.into_iter().zip([&bot_idle, &worker_idle]) {
        peak.percentile = 100;
        report(peak.against(idle, Some(Target::AtMostTimes(4.0))));
    }
    kiln.stop().await;
    println!("{}", summary(&figures));
    figures
}

/// RabbitMQ restarted (`stop_app`, 2 s away, `start_app`) under a bot and a worker of their
/// own, with pushes arriving while it is away: how long the broker takes to start again (the
/// floor), how long from its being back until a new push is built, and how many deliveries
/// waited in the outbox meanwhile (all of them built).
async fn broker_recovery(options: Options) -> [Figure; 3] {
    let broker = crate::broker::TestBroker::start().await;
    let services = crate::Services {
        amqp_url: broker.url(),
        ..crate::Services::require().await
    };
    let kiln = Kiln::start_processes_on(services, &crate::config(""), 2).await;
    let repo = TestRepo::new();
    let spec = "steps:\n  t:\n    runner: shell\n    run: 'true'\n";
    let commit = repo.commit("master", "Quick", &[(".kiln.yml", spec)]);
    let body = push_payload(REPO, "master", &commit, &repo.clone_url(), "Quick");
    let (mut starts, mut backs, mut waited, mut builds) = (Vec::new(), Vec::new(), 0, Vec::new());
    for n in 0..options.count(10, 2) {
        broker.stop_app().await;
        for k in 0..3 {
            let delivery = format!("outage-{n}-{k}");
            let (status, answer) = kiln
                .send_github("push", &delivery, &body, TEST_SECRET)
                .await;
            assert_eq!(status, 202, "{answer}");
            waited += usize::from(answer["outbox"].as_bool().unwrap_or(false));
            builds.push(answer["build_id"].as_u64().expect("a build id"));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let asked = Instant::now();
        let back = broker.start_app().await;
        starts.push(ms(back - asked));
        let (status, answer) = kiln
            .send_github("push", &format!("probe-{n}"), &body, TEST_SECRET)
            .await;
        assert_eq!(status, 202, "{answer}");
        let build = kiln
            .finished_build(answer["build_id"].as_u64().expect("a build id"))
            .await;
        assert_eq!(build["status"], "passed", "{build}");
        backs.push(ms(back.elapsed()));
    }
    for id in builds {
        assert_eq!(kiln.finished_build(id).await["status"], "passed");
    }
    kiln.stop().await;
    [
        Figure::new("floor_broker_start_app", "ms", starts),
        Figure::new("broker_back_to_build_p50", "ms", backs),
        Figure::new("outbox_waited", "deliveries", vec![waited as f64]),
    ]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// A quorum queue of the benchmark's own, and a channel with confirms on its connection.
async fn floor_queue(name: &str) -> (Connection, Channel, String) {
    let services = crate::Services::require().await;
    let connection = Connection::connect(&services.amqp_url, ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let queue = format!("{}-bench-{name}", crate::services::unique_prefix());
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
    (connection, channel, queue)
}

/// Publishes `body` to `queue`, persistent, and waits for the confirm.
async fn publish_confirmed(channel: &Channel, queue: &str, body: &[u8]) {
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
}

/// Consumes `queue` on `channel`, acknowledging by hand.
async fn consume(channel: &Channel, queue: &str) -> lapin::Consumer {
    channel
        .basic_consume(
            queue.into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume")
}

/// AMQP's round trip on a quorum queue: publish with a confirm, then consume.
async fn amqp_round_trip(options: Options) -> Figure {
    let (_connection, channel, queue) = floor_queue("floor").await;
    let mut consumer = consume(&channel, &queue).await;
    let mut samples = Vec::new();
    for _ in 0..options.count(200, 20) {
        let begun = Instant::now();
        publish_confirmed(&channel, &queue, b"ping").await;
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

/// Messages through a quorum queue per second, 32 in flight, the way webhooks come: each
/// published with a confirm, then consumed and acknowledged. A webhook costs one such
/// message (its build's request) and more.
async fn amqp_confirms(options: Options) -> Figure {
    let (connection, channel, queue) = floor_queue("confirms").await;
    let taker = connection.create_channel().await.expect("channel");
    taker
        .basic_qos(32, BasicQosOptions::default())
        .await
        .expect("prefetch");
    let mut consumer = consume(&taker, &queue).await;
    let taken = tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            delivery.ack(BasicAckOptions::default()).await.expect("ack");
        }
    });
    // About the size of a build's request.
    let body = [b'x'; 600];
    let count = options.count(2000, 200);
    let mut samples = Vec::new();
    for _ in 0..options.runs {
        let begun = Instant::now();
        futures_util::stream::iter(0..count)
            .for_each_concurrent(32, |_| publish_confirmed(&channel, &queue, &body))
            .await;
        samples.push(count as f64 / begun.elapsed().as_secs_f64());
    }
    taken.abort();
    let _ = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    Figure::new("floor_amqp_confirms", "/s", samples)
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

/// Redis's own wake-up of a blocked reader, the floor of a followed log's lag: a reader
/// blocked in `XREAD` on one connection, an entry added on another, the time from the add to
/// the reader's return (p99, as the lag is).
async fn redis_xread_wakeup(options: Options) -> Figure {
    let services = crate::Services::require().await;
    let client = redis::Client::open(services.redis_url.as_str()).expect("Redis URL");
    let mut writer = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    // A blocked read must outlast the connection's default response timeout.
    let blocking =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
    let reader = client
        .get_multiplexed_async_connection_with_config(&blocking)
        .await
        .expect("connect to Redis");
    let reader_id: u64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut reader.clone())
        .await
        .expect("CLIENT ID");
    let key = format!("{}-bench-wakeup", crate::services::unique_prefix());
    let mut last = "0-0".to_owned();
    let mut samples = Vec::new();
    for _ in 0..options.count(200, 20) {
        let (mut conn, stream, from) = (reader.clone(), key.clone(), last.clone());
        let read = tokio::spawn(async move {
            let _: redis::Value = redis::cmd("XREAD")
                .arg("BLOCK")
                .arg(5000)
                .arg("STREAMS")
                .arg(&stream)
                .arg(&from)
                .query_async(&mut conn)
                .await
                .expect("XREAD");
            Instant::now()
        });
        // The entry comes once Redis has the reader blocked (`b` among its flags).
        crate::wait_for("the reader to block", E2E_TIMEOUT, || async {
            let listed: String = redis::cmd("CLIENT")
                .arg("LIST")
                .arg("ID")
                .arg(reader_id)
                .query_async(&mut writer.clone())
                .await
                .ok()?;
            let flags = listed
                .split_whitespace()
                .find_map(|f| f.strip_prefix("flags="))?;
            flags.contains('b').then_some(())
        })
        .await;
        let sent = Instant::now();
        last = redis::cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg("line")
            .arg("x")
            .query_async(&mut writer)
            .await
            .expect("XADD");
        let woke = read.await.expect("the reader");
        samples.push(millis(woke.saturating_duration_since(sent)));
    }
    let _: usize = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut writer)
        .await
        .expect("DEL");
    let mut figure = Figure::new("floor_redis_xread_wakeup_p99", "ms", samples);
    figure.percentile = 99;
    figure
}

/// The repository configuration under which `hotfix/*`'s builds are of high priority.
const HIGH_PRIORITY: &str = "high_priority_branches = [\"hotfix/*\"]\n";

/// A running Kiln, its test repository, and when each build's events were heard.
struct Bench<'a> {
    kiln: &'a Kiln,
    repo: TestRepo,
    heard: Arc<Mutex<HashMap<(u64, &'static str), Instant>>>,
    /// Every `task.started` heard: when, and of which build.
    starts: Arc<Mutex<Vec<(Instant, u64)>>>,
    deliveries: std::sync::atomic::AtomicU64,
    /// Each commit's push payload, made once: the client's own work is not what is measured.
    payloads: Mutex<HashMap<String, Arc<[u8]>>>,
}

impl<'a> Bench<'a> {
    async fn new(kiln: &'a Kiln) -> Self {
        let heard: Arc<Mutex<HashMap<(u64, &'static str), Instant>>> = Arc::default();
        // Tasks' events and builds' ends: not `build.requested`, which no figure reads and
        // which would only load the broker and this client under the measured load.
        let ends: Vec<String> = BuildStatus::ALL
            .into_iter()
            .filter(|s| s.is_final())
            .map(|s| format!("build.{}.#", s.as_str()))
            .collect();
        let bindings: Vec<&str> = std::iter::once("task.#")
            .chain(ends.iter().map(String::as_str))
            .collect();
        let mut events = crate::events::listen(kiln, &bindings).await;
        let log = heard.clone();
        let starts: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
        let started = starts.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = events.next().await {
                let now = Instant::now();
                let Ok(event) = wire::decode::<Event>(&delivery.data) else {
                    continue;
                };
                let kind = match &event {
                    Event::BuildRequested(_) => continue,
                    Event::TaskStarted(_) => "started",
                    Event::TaskFinished(_) => "finished",
                    Event::BuildFinished(_) => "ended",
                };
                let id = event.build().id.0;
                if kind == "started" {
                    started.lock().expect("not poisoned").push((now, id));
                }
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
            starts,
            deliveries: std::sync::atomic::AtomicU64::new(0),
            payloads: Mutex::default(),
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
        let body = self
            .payloads
            .lock()
            .expect("not poisoned")
            .entry(commit.to_owned())
            .or_insert_with(|| {
                push_payload(REPO, "master", commit, &self.repo.clone_url(), "Bench").into()
            })
            .clone();
        let (status, answer) = self
            .kiln
            .send_github("push", &format!("bench-{n}"), &body, TEST_SECRET)
            .await;
        let accepted = Instant::now();
        assert_eq!(status, 202, "{answer}");
        (accepted, answer["build_id"].as_u64().expect("a build id"))
    }

    /// A high-priority build's one task pushed behind 1,000 normal ones queued (100, quick)
    /// for the worker's two slots: how many normal tasks started between its push's `202`
    /// and its own start. The worker gives it the next slot freed once its job is in hand:
    /// the two slots' tasks, and those started while it was planned, are ahead of it; a
    /// queue served in order would start all 1,000 first.
    async fn priority(&self, options: Options) -> Figure {
        let shards = 50;
        let spec = format!(
            "steps:\n  a:\n    runner: shell\n    shards: {shards}\n    run: 'true'\n  \
             b:\n    runner: shell\n    shards: {shards}\n    run: 'true'\n"
        );
        let normal = self.pipeline(&spec);
        let fix = self.repo.commit(
            "hotfix/bench",
            "A fix",
            &[(
                ".kiln.yml",
                "steps:\n  t:\n    runner: shell\n    run: 'true'\n",
            )],
        );
        self.repo.reset("master", &normal);
        let fix_payload = push_payload(REPO, "hotfix/bench", &fix, &self.repo.clone_url(), "Fix");
        self.warm_up(&normal).await;
        let mut samples = Vec::new();
        for run in 0..options.runs {
            let mut builds = Vec::new();
            for _ in 0..options.count(10, 1) {
                builds.push(self.push(&normal).await.1);
            }
            // Every normal build's jobs are queued once its first task has started.
            let last = *builds.last().expect("a build");
            self.heard(last, "started").await;
            let (status, answer) = self
                .kiln
                .send_github(
                    "push",
                    &format!("bench-fix-{run}"),
                    &fix_payload,
                    TEST_SECRET,
                )
                .await;
            let pushed = Instant::now();
            assert_eq!(status, 202, "{answer}");
            let fix_build = answer["build_id"].as_u64().expect("a build id");
            let started = self.heard(fix_build, "started").await;
            for id in builds.iter().chain([&fix_build]) {
                let build = self.kiln.finished_build(*id).await;
                assert_eq!(build["status"], "passed", "{build:#}");
            }
            let starts = self.starts.lock().expect("not poisoned");
            let normal: Vec<Instant> = starts
                .iter()
                .filter(|(_, id)| builds.contains(id))
                .map(|(at, _)| *at)
                .collect();
            let ahead = normal.iter().filter(|at| **at > pushed && **at < started);
            samples.push(ahead.count() as f64);
            // Otherwise the queue was empty before it came, and nothing was overtaken.
            let behind = normal.iter().filter(|at| **at > started).count();
            assert!(
                behind > 0,
                "no normal task started after the high-priority one"
            );
        }
        let mut figure = Figure::new("priority_normal_started_before_high", "tasks", samples);
        figure.percentile = 100;
        figure.target = Some(Target::AtMost(4.0));
        figure
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

    /// From a push's 202 to its one shell task's `task.started`, idle worker, the commit
    /// already fetched.
    async fn push_to_task_started(&self, options: Options) -> Figure {
        let commit = self.pipeline("steps:\n  t:\n    runner: shell\n    run: 'true'\n");
        self.warm_up(&commit).await;
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
        self.warm_up(&commit).await;
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

    /// One build of `commit`, so that what its first build sets up (the bot's and the
    /// worker's mirrors, the commit fetched into them, the worker's pristine checkout) is in
    /// place before anything is measured.
    async fn warm_up(&self, commit: &str) {
        let (_, id) = self.push(commit).await;
        let build = self.kiln.finished_build(id).await;
        assert_eq!(build["status"], "passed", "{build:#}");
    }

    /// The bot's and the worker's resident memory over a second (a fifth, quick) with
    /// nothing to do: 50 samples (10), one every 20 ms.
    async fn footprint_idle(&self, options: Options) -> [Figure; 2] {
        let idle = Footprint::sample(self.kiln);
        idle.sampled(options.count(50, 10)).await;
        idle.finish(["bot_rss_idle", "worker_rss_idle"]).await
    }

    /// From a push's 202 to Docker's `start` event of its one task's container.
    async fn push_to_container_running(&self, options: Options) -> Figure {
        let commit = self.pipeline(&format!(
            "steps:\n  t:\n    image: {TEST_IMAGE}\n    run: 'true'\n"
        ));
        self.warm_up(&commit).await;
        let started: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let docker = Docker::connect_with_local_defaults().expect("docker");
        let filters = HashMap::from([("type", vec!["container"]), ("event", vec!["start"])]);
        // From a second back, so that no start is missed while the stream opens.
        let since = (crate::slack::now() - 1).to_string();
        let options_ = EventsOptionsBuilder::new()
            .filters(&filters)
            .since(&since)
            .build();
        let mut events = docker.events(Some(options_));
        let seen = started.clone();
        let listener = tokio::spawn(async move {
            while let Some(Ok(event)) = events.next().await {
                let now = Instant::now();
                let name = event
                    .actor
                    .and_then(|a| a.attributes)
                    .and_then(|mut a| a.remove("name"));
                if let Some(name) = name {
                    seen.lock().expect("not poisoned").insert(name, now);
                }
            }
        });
        let mut samples = Vec::new();
        for _ in 0..options.count(20, 3) {
            let (accepted, id) = self.push(&commit).await;
            // The worker names a task's container `<prefix>-<build>-<task>-<attempt>`.
            let name = format!("{}-{id}-t-1", self.kiln.prefix);
            let running = crate::wait_for(&format!("{name} to start"), E2E_TIMEOUT, || async {
                started.lock().expect("not poisoned").get(&name).copied()
            })
            .await;
            samples.push(millis(running.saturating_duration_since(accepted)));
            self.kiln.finished_build(id).await;
        }
        listener.abort();
        Figure::new("push_to_container_running", "ms", samples)
    }

    /// A follower's lag behind a task's output: each line is the time it was printed, read
    /// through `GET /builds/{id}/logs?follow=true`.
    async fn live_tail_lag(&self, options: Options) -> Figure {
        let lines = options.count(200, 50);
        let commit = self.pipeline(&format!(
            "steps:\n  t:\n    runner: shell\n    run: 'for i in $(seq 1 {lines}); do date +%s%N; sleep 0.01; done'\n"
        ));
        let mut samples = Vec::new();
        for _ in 0..options.runs {
            let (_, id) = self.push(&commit).await;
            let mut response = self.kiln.follow_log(id, "t").await;
            let mut pending = String::new();
            loop {
                let chunk = tokio::time::timeout(E2E_TIMEOUT, response.chunk())
                    .await
                    .expect("the log goes on in time")
                    .expect("the answer goes on");
                let Some(chunk) = chunk else { break };
                let now = unix_nanos();
                pending.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = pending.find('\n') {
                    let line: String = pending.drain(..=end).collect();
                    if let Ok(printed) = line.trim().parse::<u128>() {
                        samples.push(now.saturating_sub(printed) as f64 / 1e6);
                    }
                }
            }
            let build = self.kiln.finished_build(id).await;
            assert_eq!(build["status"], "passed", "{build:#}");
        }
        assert_eq!(
            samples.len(),
            lines * options.runs,
            "every line was followed"
        );
        let mut figure = Figure::new("live_tail_lag_p99", "ms", samples);
        figure.percentile = 99;
        figure
    }

    /// The same lag through a build page's live log (Server-Sent Events): each line is the
    /// time it was printed, read from the `lines` events of
    /// `GET /builds/{id}/tasks/{task}/live`.
    async fn sse_log_lag(&self, options: Options) -> Figure {
        let lines = options.count(200, 50);
        let commit = self.pipeline(&format!(
            "steps:\n  t:\n    runner: shell\n    run: 'for i in $(seq 1 {lines}); do date +%s%N; sleep 0.01; done'\n"
        ));
        let mut samples = Vec::new();
        for _ in 0..options.runs {
            let (_, id) = self.push(&commit).await;
            // The stream answers once the build is planned.
            let url = self.kiln.url(&format!("/builds/{id}/tasks/t/live"));
            let mut response = crate::wait_for("the live log", E2E_TIMEOUT, || async {
                let answer = self.kiln.http.get(&url).send().await.ok()?;
                answer.status().is_success().then_some(answer)
            })
            .await;
            let mut pending = String::new();
            'events: loop {
                let chunk = tokio::time::timeout(E2E_TIMEOUT, response.chunk())
                    .await
                    .expect("the log goes on in time")
                    .expect("the answer goes on");
                let Some(chunk) = chunk else { break };
                let now = unix_nanos();
                pending.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = pending.find("\n\n") {
                    let event: String = pending.drain(..end + 2).collect();
                    if event.contains("event: end") {
                        break 'events;
                    }
                    for data in event.lines().filter_map(|l| l.strip_prefix("data: ")) {
                        let lines: Vec<serde_json::Value> =
                            serde_json::from_str(data).unwrap_or_default();
                        for line in lines {
                            if let Some(printed) = line["html"]
                                .as_str()
                                .and_then(|t| t.trim().parse::<u128>().ok())
                            {
                                samples.push(now.saturating_sub(printed) as f64 / 1e6);
                            }
                        }
                    }
                }
            }
            let build = self.kiln.finished_build(id).await;
            assert_eq!(build["status"], "passed", "{build:#}");
        }
        assert_eq!(samples.len(), lines * options.runs, "every line arrived");
        let mut figure = Figure::new("sse_log_lag_p99", "ms", samples);
        figure.percentile = 99;
        figure
    }

    /// A 200-task build's page: its JSON record (the floor: the build's and tasks' records
    /// read, nothing rendered), the page's first byte, and its whole render in a headless
    /// browser (to the load event).
    async fn build_page(&self, options: Options) -> [Figure; 3] {
        // Four steps of 50 shards (the most a step has is 64), each after the one before.
        let mut spec = String::from("steps:\n");
        for step in 0..4 {
            spec.push_str(&format!(
                "  s{step}:\n    runner: shell\n    shards: 50\n    run: 'echo \"shard $KILN_TASK\"'\n"
            ));
            if step > 0 {
                spec.push_str(&format!("    needs: [s{}]\n", step - 1));
            }
        }
        let commit = self.pipeline(&spec);
        let (_, id) = self.push(&commit).await;
        let build = self.kiln.finished_build(id).await;
        assert_eq!(build["status"], "passed", "{build:#}");
        let url = self.kiln.url(&format!("/builds/{id}"));
        let first_byte = |accept: &'static str| {
            let url = url.clone();
            async move {
                let started = Instant::now();
                let answer = self
                    .kiln
                    .http
                    .get(&url)
                    .header("accept", accept)
                    .send()
                    .await
                    .expect("the bot answers");
                assert!(answer.status().is_success(), "{}", answer.status());
                let took = millis(started.elapsed());
                answer.bytes().await.expect("the body");
                took
            }
        };
        let (mut json, mut page) = (Vec::new(), Vec::new());
        for _ in 0..options.count(50, 10) {
            json.push(first_byte("application/json").await);
            page.push(first_byte("text/html").await);
        }
        let browser = crate::browser::Browser::start("bench").await;
        let mut render = Vec::new();
        for _ in 0..options.count(10, 3) {
            browser.open(&url).await;
            let took = browser
                .run("const t = performance.getEntriesByType('navigation')[0]; return t.loadEventEnd - t.startTime;")
                .await;
            render.push(took.as_f64().expect("a duration"));
        }
        browser.close().await;
        [
            Figure::new("build_json_first_byte", "ms", json),
            Figure::new("build_page_first_byte", "ms", page),
            Figure::new("build_page_render", "ms", render),
        ]
    }

    /// The time a worker takes to find that an in-tree image is already built, as the
    /// task's log says it (`image `app`: reused … in N ms`), on builds after the first.
    async fn image_resolve(&self, options: Options) -> Figure {
        let spec =
            "images:\n  app: { context: ci/app }\nsteps:\n  t: { image: app, run: 'true' }\n";
        let dockerfile = format!("FROM {TEST_IMAGE}\nRUN echo built > /built\n");
        let commit = self.repo.commit(
            "master",
            "An in-tree image",
            &[(".kiln.yml", spec), ("ci/app/Dockerfile", &dockerfile)],
        );
        let mut samples = Vec::new();
        for run in 0..=options.count(10, 3) {
            let (_, id) = self.push(&commit).await;
            let build = self.kiln.finished_build(id).await;
            assert_eq!(build["status"], "passed", "{build:#}");
            if run == 0 {
                continue; // it built the image
            }
            let log = self.kiln.task_log(id, "t").await;
            let took = log
                .lines()
                .find_map(|l| Some(l.split_once("image `app`: reused ")?.1))
                .and_then(|l| l.rsplit_once(" in "))
                .and_then(|(_, ms)| ms.strip_suffix(" ms")?.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("the log says the image was reused: {log}"));
            samples.push(took);
        }
        Figure::new("image_resolve", "ms", samples)
    }

    /// Workers started together on a queue that already holds every task (one-line shell
    /// tasks, each recording that it ran): the time until every build ended, and how many
    /// tasks never ran or ran twice. 200 workers of one slot in this process: 1,000 on two
    /// cores, even with a broker allowed 20,000 files, had their Redis calls time out and
    /// their AMQP connections reset, and the drain did not end; 200 as processes of their
    /// own drained slower (347 s against 235). Their work directories are `KILN_WORK_DIRS`'s
    /// (overlays by default, where the benchmark runs as root).
    async fn drain(&self, options: Options) -> Vec<Figure> {
        let workers = options.count(200, 20);
        let (steps, shards, builds) = if options.quick {
            (4, 25, 2)
        } else {
            (50, 50, 4)
        };
        let total = steps * shards * builds;
        let ran = crate::state_dir(tempfile::tempdir().expect("temp dir"));
        let record = crate::task_share(ran.path()).join("ran");
        let mut spec = String::from("steps:\n");
        for step in 0..steps {
            spec.push_str(&format!(
                "  s{step}:\n    runner: shell\n    shards: {shards}\n    run: 'echo \"$KILN_BUILD_ID $KILN_TASK\" >> {}'\n",
                record.display()
            ));
        }
        let commit = self.pipeline(&spec);
        let services = crate::Services::require().await;
        let queue = Topology::new(&self.kiln.prefix).jobs_queue(Platform::LinuxAmd64);
        // Ample: a task not run by then is counted lost.
        let deadline = E2E_TIMEOUT + Duration::from_millis(total as u64 * 50);
        let (mut times, mut lost, mut twice) = (Vec::new(), Vec::new(), Vec::new());
        let mut floors = Vec::new();
        // As `kiln-worker --work-dirs` would take it, to compare overlays with copies.
        let work_dirs = std::env::var("KILN_WORK_DIRS").map_or(WorkDirs::Auto, |chosen| {
            clap::ValueEnum::from_str(&chosen, true).expect("KILN_WORK_DIRS: auto, overlay or copy")
        });
        for run in 0..options.runs {
            let repo = (self.repo.clone_url(), commit.clone());
            let floor = drain::floors(workers, total, (&repo.0, &repo.1), work_dirs).await;
            floors.push(floor);
            std::fs::write(&record, "").expect("empty the record");
            // The tasks append to it as kiln-task.
            std::fs::set_permissions(&record, std::os::unix::fs::PermissionsExt::from_mode(0o666))
                .expect("chmod the record");
            let mut ids = Vec::new();
            for _ in 0..builds {
                ids.push(self.push(&commit).await.1);
            }
            crate::wait_for("every job to be queued", deadline, || async {
                (queued(&services.amqp_url, &queue).await >= total).then_some(())
            })
            .await;

            let stop = CancellationToken::new();
            let state = crate::state_dir(tempfile::tempdir().expect("temp dir"));
            let begun = Instant::now();
            let running: Vec<_> = (0..workers)
                .map(|n| {
                    let settings = kiln_worker::Settings {
                        amqp_url: services.amqp_url.clone(),
                        redis_url: services.redis_url.clone(),
                        tls_ca: None,
                        prefix: self.kiln.prefix.clone(),
                        platform: Platform::LinuxAmd64,
                        slots: 1,
                        name: format!("{}-drain-{run}-{n}", self.kiln.prefix),
                        state_dir: state.path().join(format!("worker-{n}")),
                        work_dirs,
                        store_dir: state.path().join("store"),
                        secrets_dir: None,
                        advertise_host: "127.0.0.1".into(),
                        registry: None,
                        registry_auth: None,
                        docker_host: None,
                        metrics_listen: None,
                        task_user: Some("kiln-task".into()),
                        task_shares: vec![crate::task_share(ran.path())],
                    };
                    tokio::spawn(kiln_worker::run(settings, stop.clone()))
                })
                .collect();
            // Lost tasks would keep their build from ending: the wait is bounded, and what
            // never ran is counted below.
            let mut every = tokio::time::interval(Duration::from_millis(50));
            let ended = loop {
                every.tick().await;
                let heard = self.heard.lock().expect("not poisoned");
                let ends: Option<Vec<Instant>> = ids
                    .iter()
                    .map(|id| heard.get(&(*id, "ended")).copied())
                    .collect();
                if let Some(ends) = ends {
                    break ends.into_iter().max();
                }
                if begun.elapsed() > deadline {
                    break None;
                }
            };
            let last = ended.unwrap_or_else(Instant::now);
            times.push(last.duration_since(begun).as_secs_f64());
            stop.cancel();
            for worker in running {
                worker
                    .await
                    .expect("no panic")
                    .expect("the worker stops cleanly");
            }

            let text = std::fs::read_to_string(&record).expect("the record");
            let runs: Vec<&str> = text.lines().collect();
            let distinct: std::collections::HashSet<&str> = runs.iter().copied().collect();
            lost.push(total.saturating_sub(distinct.len()) as f64);
            twice.push((runs.len() - distinct.len()) as f64);
        }
        let (mut figures, floor) = drain::floors_figures(&floors);
        let drained =
            Figure::new("drain_time", "s", times).against(&floor, Some(Target::AtMostTimes(2.0)));
        figures.push(floor);
        let mut lost = Figure::new("drain_tasks_lost", "tasks", lost);
        lost.percentile = 100;
        lost.target = Some(Target::AtMost(0.0));
        let mut twice = Figure::new("drain_tasks_run_twice", "tasks", twice);
        twice.percentile = 100;
        twice.target = Some(Target::AtMost(0.0));
        println!("drain: {workers} worker connections, {total} queued tasks");
        figures.extend([drained, lost, twice]);
        figures
    }
}

/// How many messages `queue` holds.
async fn queued(amqp_url: &str, queue: &str) -> usize {
    let Ok(connection) = Connection::connect(amqp_url, ConnectionProperties::default()).await
    else {
        return 0;
    };
    let count = match connection.create_channel().await {
        Ok(channel) => {
            let passive = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            let declared = channel
                .queue_declare(queue.into(), passive, FieldTable::default())
                .await;
            let _ = channel.close(0, "".into()).await;
            declared.map_or(0, |q| q.message_count() as usize)
        }
        Err(_) => 0,
    };
    let _ = connection.close(0, "".into()).await;
    count
}

/// Nanoseconds since the Unix epoch, as `date +%s%N` prints them.
fn unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The resident memory of the bot and the worker processes, sampled every 20 ms until
/// [`Footprint::finish`].
struct Footprint {
    stop: CancellationToken,
    /// The bot's samples and the worker's (none once a process has ended).
    samples: Arc<Mutex<[Vec<f64>; 2]>>,
    /// How many of each one's samples [`Footprint::since_mark`] has told of.
    marked: Mutex<[usize; 2]>,
    sampler: tokio::task::JoinHandle<()>,
}

impl Footprint {
    fn sample(kiln: &Kiln) -> Self {
        const NAMES: [&str; 2] = ["kiln-bot", "kiln-worker"];
        let pids = NAMES.map(|name| kiln.process_id(name).expect("Kiln runs as processes"));
        let stop = CancellationToken::new();
        let until = stop.clone();
        let samples: Arc<Mutex<[Vec<f64>; 2]>> = Arc::default();
        let taken = samples.clone();
        let sampler = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(20));
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    () = until.cancelled() => return,
                }
                let rss = [0, 1].map(|i| rss_mib(pids[i], NAMES[i]));
                let mut samples = taken.lock().expect("not poisoned");
                for (rss, samples) in rss.into_iter().zip(samples.iter_mut()) {
                    samples.extend(rss);
                }
            }
        });
        Self {
            stop,
            samples,
            marked: Mutex::default(),
            sampler,
        }
    }

    /// Waits until the bot has been sampled `rounds` more times.
    async fn sampled(&self, rounds: usize) {
        let from = self.samples.lock().expect("not poisoned")[0].len();
        crate::wait_for(&format!("{rounds} memory samples"), E2E_TIMEOUT, || async {
            let taken = self.samples.lock().expect("not poisoned")[0].len();
            (taken >= from + rounds).then_some(())
        })
        .await;
    }

    /// Each process's peak and last sample since the last call, in words (a figure measured
    /// with others, as the drain's are, is told of with the first of them).
    fn since_mark(&self) -> String {
        let samples = self.samples.lock().expect("not poisoned");
        let mut marked = self.marked.lock().expect("not poisoned");
        let said: Vec<String> = ["bot", "worker"]
            .iter()
            .zip(samples.iter().zip(marked.iter_mut()))
            .filter_map(|(who, (samples, mark))| {
                let new = &samples[(*mark).min(samples.len())..];
                *mark = samples.len();
                let peak = new.iter().copied().reduce(f64::max)?;
                let end = new.last()?;
                Some(format!("{who} peak {peak:.1} MiB, end {end:.1} MiB"))
            })
            .collect();
        if said.is_empty() {
            String::new()
        } else {
            format!("  memory since the figure before: {}", said.join("; "))
        }
    }

    /// The bot's samples and the worker's, named `bot_<what>` and `worker_<what>`.
    async fn finish(self, names: [&'static str; 2]) -> [Figure; 2] {
        self.stop.cancel();
        self.sampler.await.expect("the sampler ends");
        let [bot, worker] = std::mem::take(&mut *self.samples.lock().expect("not poisoned"));
        [
            Figure::new(names[0], "MiB", bot),
            Figure::new(names[1], "MiB", worker),
        ]
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_picks_figures_by_the_start_of_their_names() {
        let only = vec!["push_to".to_owned(), "drain".to_owned()].leak();
        let options = Options {
            runs: 1,
            quick: true,
            only,
        };
        assert!(options.wants(&["push_to_task_started"]));
        assert!(options.wants(&["log_lines", "drain"]));
        assert!(!options.wants(&["log_lines"]));
        let every = Options {
            only: &[],
            ..options
        };
        assert!(every.wants(&["log_lines"]));
    }

    #[test]
    fn lines_say_the_median_the_spread_the_floor_and_the_target() {
        let floor = Figure::new("floor_amqp_round_trip", "ms", vec![1.5]);
        let figure = Figure::new("push_to_task_started_p50", "ms", vec![4.0, 2.0, 3.0])
            .against(&floor, Some(Target::AtMostTimes(2.0)));
        assert_eq!(
            figure.line(),
            "push_to_task_started_p50: 3.00 ms [min=2.00 max=4.00 n=3] (2.0× floor_amqp_round_trip) target ≤ 2× floor_amqp_round_trip = 3.00 ms: met"
        );
        let slow = Figure::new("webhooks_accepted", "/s", vec![100.0])
            .against(&floor, Some(Target::AtLeastTimes(0.6)));
        assert_eq!(slow.meets(), Some(true));
        let lost = Figure {
            target: Some(Target::AtMost(0.0)),
            ..Figure::new("drain_tasks_lost", "tasks", vec![1.0])
        };
        assert_eq!(lost.meets(), Some(false));
        let unjudged = Figure {
            target: Some(Target::AtMostTimes(2.0)),
            ..Figure::new("no_floor", "ms", vec![1.0])
        };
        assert_eq!(unjudged.meets(), None, "a ratio needs its floor");
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 100.0], 99), 100.0);
        assert_eq!(percentile(&[], 50), 0.0);
        assert_eq!(summary(&[figure]), "summary: 1 figures; 1 of 1 targets met");
    }
}

//! Faults under load (`kiln-chaos`, `deploy/dev/chaos`): a whole Kiln as processes (a bot, two
//! workers) on a RabbitMQ node and a Redis of its own, so nothing else on the machine is
//! disturbed, under a steady stream of signed pushes of a pipeline of three tasks, each of
//! which notes its start and its end in a file. One kind of fault after another is injected
//! while the pushes go on; a sender retries a push the bot did not answer, or answered `503`,
//! as a forge's redelivery would.
//!
//! Per kind it counts the injections, the builds accepted and passed, and:
//! - **lost**: accepted (`202` with a build id), yet no such build at the end;
//! - **doubled**: one attempt of a task that ended twice (the file holds its `done` twice)
//!   with no worker killed between the two runs' starts. A job whose worker died before it
//!   recorded the end is given to another worker and run again, as the same attempt: that is
//!   the rule (at least once), and is counted apart, as **rerun**;
//! - **stuck**: a build not ended [`STUCK_AFTER`] after the load stopped;
//!
//! and the time from each fault's end (the process or service back) to a new push built.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::Services;
use crate::broker::TestBroker;
use crate::installation::{Answer, Installation, Pusher};
use crate::redis_server::TestRedis;

/// How long every build of a phase has, once its load stopped, to end.
pub const STUCK_AFTER: Duration = Duration::from_secs(180);

/// How often the load pushes.
const PUSH_EVERY: Duration = Duration::from_millis(700);

/// Between two injections of a kind, so the load is running tasks again.
const SETTLE: Duration = Duration::from_millis(1500);

/// How long a frozen worker stays frozen: shorter than the bot's `reclaim_after`, so the
/// worker keeps its tasks and goes on.
const FROZEN_FOR: Duration = Duration::from_secs(3);

/// How many times a sender tries one push.
const PUSH_TRIES: usize = 120;

/// The kinds of fault, in the order they are injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A worker SIGKILLed (most likely in the middle of a task) and started again.
    WorkerKill,
    /// A worker and its tasks frozen (SIGSTOP), then let go (SIGCONT).
    WorkerFreeze,
    /// The bot SIGKILLed and started again.
    BotKill,
    /// RabbitMQ stopped and started.
    BrokerRestart,
    /// Redis stopped (SIGTERM: its AOF written) and started.
    RedisRestart,
    /// Redis SIGKILLed and started: AOF's `appendfsync everysec` loses up to the last second
    /// of writes, so Redis comes back a little behind RabbitMQ.
    RedisKill,
}

impl Fault {
    pub const ALL: [Fault; 6] = [
        Self::WorkerKill,
        Self::WorkerFreeze,
        Self::BotKill,
        Self::BrokerRestart,
        Self::RedisRestart,
        Self::RedisKill,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::WorkerKill => "worker-kill",
            Self::WorkerFreeze => "worker-freeze",
            Self::BotKill => "bot-kill",
            Self::BrokerRestart => "broker-restart",
            Self::RedisRestart => "redis-restart",
            Self::RedisKill => "redis-kill",
        }
    }

    /// How many times it is injected in a run.
    fn count(self, quick: bool) -> usize {
        match (self, quick) {
            (Self::WorkerKill, false) => 100,
            (_, false) => 10,
            (Self::WorkerKill, true) => 4,
            (_, true) => 2,
        }
    }
}

/// What one kind of fault did.
#[derive(Debug, Clone)]
pub struct Tally {
    pub fault: Fault,
    pub injections: usize,
    pub accepted: usize,
    pub passed: usize,
    pub lost: Vec<u64>,
    pub doubled: Vec<String>,
    /// Attempts run again because the worker running them was killed.
    pub rerun: usize,
    pub stuck: Vec<u64>,
    /// Pushes no answer was ever given to, after every retry.
    pub unanswered: Vec<String>,
    pub recoveries: Vec<Duration>,
}

impl Tally {
    /// Whether the rules held: nothing lost, doubled, stuck or unanswered.
    pub fn held(&self) -> bool {
        self.lost.is_empty()
            && self.doubled.is_empty()
            && self.stuck.is_empty()
            && self.unanswered.is_empty()
    }

    /// One line for the report.
    pub fn line(&self) -> String {
        let mut recoveries = self.recoveries.clone();
        format!(
            "{:<15} {:>4} injected {:>5} accepted {:>5} passed {:>3} lost {:>3} doubled {:>3} \
             rerun {:>3} stuck {:>3} unanswered   recovery p50 {:>6.2} s  p99 {:>6.2} s",
            self.fault.name(),
            self.injections,
            self.accepted,
            self.passed,
            self.lost.len(),
            self.doubled.len(),
            self.rerun,
            self.stuck.len(),
            self.unanswered.len(),
            percentile(&mut recoveries, 0.5).as_secs_f64(),
            percentile(&mut recoveries, 0.99).as_secs_f64(),
        )
    }
}

/// The pipeline: `a`, then `b` and `c`; each notes `<build> <task> <attempt> start <time>`
/// and `… done <time>` in `marks` (seconds since the epoch), with a short while between.
fn spec(marks: &Path) -> String {
    let marks = marks.display();
    let mut spec = String::from("steps:\n");
    for (step, needs) in [("a", ""), ("b", "a"), ("c", "a")] {
        spec.push_str(&format!("  {step}:\n    runner: shell\n"));
        if !needs.is_empty() {
            spec.push_str(&format!("    needs: [{needs}]\n"));
        }
        spec.push_str(&format!(
            "    run:\n      - echo \"$KILN_BUILD_ID $KILN_TASK $KILN_ATTEMPT start $(date +%s.%N)\" >> {marks}\n      \
             - sleep 0.4\n      - echo \"$KILN_BUILD_ID $KILN_TASK $KILN_ATTEMPT done $(date +%s.%N)\" >> {marks}\n"
        ));
    }
    spec
}

/// The services the installation runs on, which the faults stop.
struct Own {
    broker: TestBroker,
    redis: TestRedis,
}

/// Runs every kind of fault (`quick`: a few of each), and returns what each did.
pub async fn run(quick: bool, only: &[Fault]) -> Vec<Tally> {
    let mut own = Own {
        broker: TestBroker::start().await,
        redis: TestRedis::start().await,
    };
    let services = Services {
        amqp_url: own.broker.url(),
        redis_url: own.redis.url(),
    };
    let mut kiln = Installation::start_with(services, |share| spec(&share.join("marks"))).await;
    let marks = kiln.task_share().join("marks");
    let mut tallies = Vec::new();
    for fault in Fault::ALL
        .into_iter()
        .filter(|f| only.is_empty() || only.contains(f))
    {
        let tally = phase(&mut kiln, &mut own, fault, fault.count(quick), &marks).await;
        eprintln!("{}", tally.line());
        tallies.push(tally);
    }
    kiln.stop().await;
    tallies
}

/// Injects `fault` `count` times under load, then counts.
async fn phase(
    kiln: &mut Installation,
    own: &mut Own,
    fault: Fault,
    count: usize,
    marks: &Path,
) -> Tally {
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load(kiln.pusher(), fault.name(), stop.clone()));
    let prober = kiln.pusher();
    let (mut recoveries, mut probes, mut kills) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..count {
        tokio::time::sleep(SETTLE).await;
        let at = now();
        if fault == Fault::WorkerKill {
            kills.push(at);
        }
        let back = inject(kiln, own, fault, n).await;
        eprintln!("chaos: {} {n} at {at:.3}", fault.name());
        // Kiln is back when a push made now is built.
        let probe = prober
            .push_retrying(&format!("{}-probe-{n}", fault.name()), PUSH_TRIES)
            .await;
        if let Ok(answer) = &probe {
            let deadline = Instant::now() + STUCK_AFTER;
            while Instant::now() < deadline {
                if kiln.status(answer.build).await.as_deref() == Some("passed") {
                    recoveries.push(back.elapsed());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        probes.push(probe.map_err(|e| (format!("{}-probe-{n}", fault.name()), e)));
    }
    stop.store(true, Ordering::Relaxed);
    let mut results = load.await.expect("the load");
    results.extend(probes);
    let runs = Runs {
        marks,
        kills: &kills,
    };
    count_up(kiln, fault, count, results, recoveries, runs).await
}

/// Seconds since the epoch, as the tasks' `date +%s.%N` writes them.
fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// What the tasks noted, and when workers were killed.
struct Runs<'a> {
    marks: &'a Path,
    kills: &'a [f64],
}

impl Runs<'_> {
    /// Of the attempts of builds `ids` that ended more than once, how many were run again
    /// because a worker was killed between their runs' starts, and which were not
    /// (`<build> <task> <attempt>`).
    fn reruns_and_doubled(&self, ids: &[u64]) -> (usize, Vec<String>) {
        let text = std::fs::read_to_string(self.marks).unwrap_or_default();
        let mut attempts: HashMap<String, (Vec<f64>, usize)> = HashMap::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let [build, task, attempt, kind, at] = fields[..] else {
                continue;
            };
            if !build
                .parse()
                .is_ok_and(|b: u64| ids.binary_search(&b).is_ok())
            {
                continue;
            }
            let entry = attempts
                .entry(format!("{build} {task} {attempt}"))
                .or_default();
            match (kind, at.parse::<f64>()) {
                ("start", Ok(at)) => entry.0.push(at),
                ("done", _) => entry.1 += 1,
                _ => {}
            }
        }
        let (mut reruns, mut doubled) = (0, Vec::new());
        for (attempt, (mut starts, done)) in attempts {
            if done < 2 {
                continue;
            }
            starts.sort_by(f64::total_cmp);
            let killed_between = starts
                .windows(2)
                .all(|w| self.kills.iter().any(|k| w[0] <= *k && *k <= w[1]));
            if killed_between {
                reruns += 1;
            } else {
                doubled.push(attempt);
            }
        }
        doubled.sort();
        (reruns, doubled)
    }
}

/// Injects one fault; returns when what it stopped is back.
async fn inject(kiln: &mut Installation, own: &mut Own, fault: Fault, n: usize) -> Instant {
    let worker = n % kiln.workers.len();
    match fault {
        Fault::WorkerKill => {
            kiln.workers[worker].kill().await;
            kiln.restart_worker(worker).await;
        }
        Fault::WorkerFreeze => {
            kiln.workers[worker].freeze();
            tokio::time::sleep(FROZEN_FOR).await;
            kiln.workers[worker].thaw();
        }
        Fault::BotKill => {
            kiln.bot.kill().await;
            kiln.restart_bot().await;
        }
        Fault::BrokerRestart => {
            own.broker.stop_app().await;
            own.broker.start_app().await;
        }
        Fault::RedisRestart => {
            own.redis.stop().await;
            own.redis.run().await;
        }
        Fault::RedisKill => {
            own.redis.kill().await;
            own.redis.run().await;
        }
    }
    Instant::now()
}

/// Pushes every [`PUSH_EVERY`] until `stop` is set, each push (retried) in a task of its own.
async fn load(
    pusher: Pusher,
    name: &'static str,
    stop: Arc<AtomicBool>,
) -> Vec<Result<Answer, (String, String)>> {
    let mut pushes = Vec::new();
    let mut every = tokio::time::interval(PUSH_EVERY);
    while !stop.load(Ordering::Relaxed) {
        every.tick().await;
        let pusher = pusher.clone();
        let delivery = format!("{name}-{}", pushes.len());
        pushes.push(tokio::spawn(async move {
            let answer = pusher.push_retrying(&delivery, PUSH_TRIES).await;
            answer.map_err(|e| (delivery, e))
        }));
    }
    let mut answers = Vec::new();
    for push in pushes {
        answers.push(push.await.expect("a push panicked"));
    }
    answers
}

/// Waits for the phase's builds to end and counts what became of them.
async fn count_up(
    kiln: &Installation,
    fault: Fault,
    injections: usize,
    results: Vec<Result<Answer, (String, String)>>,
    recoveries: Vec<Duration>,
    runs: Runs<'_>,
) -> Tally {
    let mut unanswered = Vec::new();
    let mut ids = Vec::new();
    for result in results {
        match result {
            Ok(answer) => ids.push(answer.build),
            Err((delivery, why)) => unanswered.push(format!("{delivery}: {why}")),
        }
    }
    ids.sort_unstable();
    ids.dedup();
    let deadline = Instant::now() + STUCK_AFTER;
    let (mut passed, mut lost, mut stuck) = (0, Vec::new(), Vec::new());
    for id in &ids {
        let status = loop {
            let status = kiln.status(*id).await;
            let ended = status
                .as_deref()
                .is_some_and(|s| !matches!(s, "queued" | "running"));
            if ended || Instant::now() >= deadline {
                break status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        match status.as_deref() {
            Some("passed") => passed += 1,
            Some("queued" | "running") => stuck.push(*id),
            Some(_) => {}
            None => lost.push(*id),
        }
    }
    let (rerun, doubled) = runs.reruns_and_doubled(&ids);
    Tally {
        fault,
        injections,
        accepted: ids.len(),
        passed,
        lost,
        doubled,
        rerun,
        stuck,
        unanswered,
        recoveries,
    }
}

fn percentile(figures: &mut [Duration], p: f64) -> Duration {
    figures.sort_unstable();
    let at = ((figures.len() as f64 - 1.0) * p).round() as usize;
    figures.get(at).copied().unwrap_or_default()
}

//! Running a target: inputs made by the [`Mutator`] one after another, each under
//! `catch_unwind` (a panic is a crash: its input is saved) and a watchdog (an input still
//! running after the hang bound stops the run and says how to replay it). Allocations are
//! bounded by the binary's allocator (`cap`): an input that needs more aborts the process.
//!
//! A run is deterministic given its seed: the `index`-th input of a target is the same on
//! every run, so `--seed S --trace-from K` writes each input from the `K`-th on to a file
//! before running it, and a run that dies leaves its culprit there.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::mutate::Mutator;
use crate::targets::Target;

/// How much of a target to run.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    Inputs(u64),
    Time(Duration),
}

/// How a run is done.
#[derive(Debug, Clone)]
pub struct Settings {
    pub seed: u64,
    pub budget: Budget,
    /// An input running longer is a hang.
    pub hang: Duration,
    /// Where crashing inputs are written.
    pub crashes: PathBuf,
    /// From which input on each is written to `<crashes>/current-<target>` before it runs.
    pub trace_from: Option<u64>,
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct Report {
    pub target: &'static str,
    pub seed: u64,
    pub inputs: u64,
    /// Each crash: its input's file and the panic's message.
    pub crashes: Vec<(PathBuf, String)>,
    pub slowest: Duration,
}

impl Report {
    /// `name: N inputs, C crashes, slowest T ms (seed S)`.
    pub fn line(&self) -> String {
        format!(
            "{}: {} inputs, {} crashes, slowest {:.1} ms (seed {})",
            self.target,
            self.inputs,
            self.crashes.len(),
            self.slowest.as_secs_f64() * 1000.0,
            self.seed
        )
    }
}

/// The last panic's message, kept by the hook instead of printed.
static PANIC_MESSAGE: Mutex<String> = Mutex::new(String::new());

/// Panics are counted and reported by the run, not printed as they happen.
pub fn quiet_panics() {
    panic::set_hook(Box::new(|info| {
        let mut message = PANIC_MESSAGE.lock().unwrap_or_else(|e| e.into_inner());
        *message = info.to_string();
    }));
}

/// Panics are printed again as they happen (Rust's own hook).
pub fn loud_panics() {
    drop(panic::take_hook());
}

/// Runs `target` as `settings` say.
pub fn fuzz(target: &Target, settings: &Settings) -> Report {
    let mut mutator = Mutator::new(target.seeds, target.tokens, settings.seed);
    let watch = Watchdog::start(target.name, settings);
    let started = Instant::now();
    let mut report = Report {
        target: target.name,
        seed: settings.seed,
        inputs: 0,
        crashes: Vec::new(),
        slowest: Duration::ZERO,
    };
    let mut input = Vec::new();
    loop {
        let done = match settings.budget {
            Budget::Inputs(n) => report.inputs >= n,
            Budget::Time(limit) => report.inputs.is_multiple_of(64) && started.elapsed() >= limit,
        };
        if done {
            break;
        }
        mutator.next_into(&mut input);
        let index = report.inputs;
        if settings.trace_from.is_some_and(|from| index >= from) {
            let _ = std::fs::create_dir_all(&settings.crashes);
            let current = settings.crashes.join(format!("current-{}", target.name));
            let _ = std::fs::write(current, &input);
        }
        let began = watch.begin(index);
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| (target.run)(&input)));
        let took = began.elapsed();
        watch.end();
        report.slowest = report.slowest.max(took);
        report.inputs += 1;
        if outcome.is_err() {
            let message = PANIC_MESSAGE.lock().map(|m| m.clone()).unwrap_or_default();
            let path = save(&settings.crashes, target.name, index, &input);
            report.crashes.push((path, message));
        }
    }
    report
}

/// Writes a crashing input where it can be replayed from.
fn save(dir: &Path, target: &str, index: u64, input: &[u8]) -> PathBuf {
    let path = dir.join(format!("{target}-{index}"));
    let written = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, input));
    if let Err(error) = written {
        eprintln!("cannot keep the crashing input {}: {error}", path.display());
    }
    path
}

/// Stops the process when one input runs past the hang bound.
struct Watchdog {
    /// When the running input began, in µs since `epoch`, plus one; 0 when none runs.
    began: Arc<AtomicU64>,
    index: Arc<AtomicU64>,
    epoch: Instant,
    stop: Arc<AtomicBool>,
}

impl Watchdog {
    fn start(target: &'static str, settings: &Settings) -> Self {
        let watch = Self {
            began: Arc::default(),
            index: Arc::default(),
            epoch: Instant::now(),
            stop: Arc::default(),
        };
        let (began, index, stop) = (watch.began.clone(), watch.index.clone(), watch.stop.clone());
        let (epoch, hang, seed) = (watch.epoch, settings.hang, settings.seed);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                let at = began.load(Ordering::Relaxed);
                if at == 0 {
                    continue;
                }
                let running = epoch
                    .elapsed()
                    .saturating_sub(Duration::from_micros(at - 1));
                if running > hang {
                    let index = index.load(Ordering::Relaxed);
                    eprintln!(
                        "{target}: input #{index} has run for over {hang:?}: a hang. Replay it \
                         with `kiln-fuzz --only {target} --seed {seed} --inputs {} \
                         --trace-from {index}`",
                        index + 1
                    );
                    std::process::exit(2);
                }
            }
        });
        watch
    }

    fn begin(&self, index: u64) -> Instant {
        self.index.store(index, Ordering::Relaxed);
        let now = Instant::now();
        let micros = now.duration_since(self.epoch).as_micros() as u64;
        self.began.store(micros + 1, Ordering::Relaxed);
        now
    }

    fn end(&self) {
        self.began.store(0, Ordering::Relaxed);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchdog").finish_non_exhaustive()
    }
}

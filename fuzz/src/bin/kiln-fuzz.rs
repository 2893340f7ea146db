//! `kiln-fuzz [--minutes N | --inputs N] [--only spec,command,…] [--seed S]`: fuzzes every
//! target in turn and prints, for each, the inputs tried, the crashes and the slowest input;
//! exits 1 if any input crashed (their files are named), 2 on a hang. An input that needs more
//! than 256 MiB aborts the process (`memory allocation of … failed`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use cap::Cap;
use clap::Parser;
use kiln_fuzz::run::{self, Budget, Settings};
use kiln_fuzz::targets::{TARGETS, target};

#[global_allocator]
static ALLOCATOR: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

#[derive(Debug, Parser)]
#[command(about = "Fuzzes the parsers that read input from outside Kiln")]
struct Args {
    /// Minutes in all, shared equally between the targets.
    #[arg(long, conflicts_with = "inputs")]
    minutes: Option<f64>,
    /// Inputs per target.
    #[arg(long)]
    inputs: Option<u64>,
    /// Only these targets (comma-separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The seed of the inputs (random by default; printed, to replay a run).
    #[arg(long)]
    seed: Option<u64>,
    /// An input running longer than this many milliseconds is a hang.
    #[arg(long, default_value_t = 1000)]
    hang_ms: u64,
    /// Where crashing inputs are written.
    #[arg(long, default_value = "fuzz-crashes")]
    crashes: PathBuf,
    /// Writes each input from this one on to `<crashes>/current-<target>` before running it.
    #[arg(long)]
    trace_from: Option<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let chosen: Vec<_> = if args.only.is_empty() {
        TARGETS.iter().collect()
    } else {
        let mut chosen = Vec::new();
        for name in &args.only {
            match target(name) {
                Some(t) => chosen.push(t),
                None => {
                    let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
                    eprintln!("no target `{name}`; the targets: {}", names.join(", "));
                    return ExitCode::from(2);
                }
            }
        }
        chosen
    };
    let budget = match (args.minutes, args.inputs) {
        (Some(minutes), _) => Budget::Time(Duration::from_secs_f64(
            minutes * 60.0 / chosen.len() as f64,
        )),
        (None, Some(inputs)) => Budget::Inputs(inputs),
        (None, None) => Budget::Inputs(10_000),
    };
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    if ALLOCATOR
        .set_limit(ALLOCATOR.allocated() + kiln_fuzz::MEMORY_BOUND)
        .is_err()
    {
        eprintln!("cannot bound the memory");
        return ExitCode::from(2);
    }
    run::quiet_panics();
    let (mut inputs, mut crashes) = (0, 0);
    for target in chosen {
        let settings = Settings {
            seed,
            budget,
            hang: Duration::from_millis(args.hang_ms),
            crashes: args.crashes.clone(),
            trace_from: args.trace_from,
        };
        let report = run::fuzz(target, &settings);
        println!("{}", report.line());
        for (path, message) in &report.crashes {
            println!("  crash: {} ({message})", path.display());
        }
        inputs += report.inputs;
        crashes += report.crashes.len();
    }
    println!(
        "total: {inputs} inputs, {crashes} crashes, 0 hangs over {} ms, no allocation over {} MiB",
        args.hang_ms,
        kiln_fuzz::MEMORY_BOUND / (1024 * 1024)
    );
    if crashes > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

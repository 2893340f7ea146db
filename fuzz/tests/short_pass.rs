//! A short pass of every fuzz target, so the targets never rot and the easy crashes are found
//! on every run: a few thousand inputs each, from a seed printed for replay. Slower and
//! unoptimised, the test build is given a hang bound of 10 s instead of 1.

use std::time::Duration;

use cap::Cap;
use kiln_fuzz::run::{self, Budget, Settings};
use kiln_fuzz::targets::{TARGETS, Target};

#[global_allocator]
static ALLOCATOR: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

/// Inputs per target.
const INPUTS: u64 = 3_000;

/// A target with a bug: it panics on inputs with a `!` in them.
fn fragile(data: &[u8]) {
    assert!(!data.contains(&b'!'), "a `!`");
}

#[test]
fn every_target_survives_a_short_pass() {
    ALLOCATOR
        .set_limit(ALLOCATOR.allocated() + kiln_fuzz::MEMORY_BOUND)
        .expect("a bound above what is allocated");
    let crashes = tempfile::tempdir().expect("a directory for crashes");
    let seed = fastrand::u64(..);
    let settings = Settings {
        seed,
        budget: Budget::Inputs(INPUTS),
        hang: Duration::from_secs(10),
        crashes: crashes.path().to_owned(),
        trace_from: None,
    };
    run::quiet_panics();
    // The runner sees a crash, and keeps its input.
    let toy = Target {
        name: "fragile",
        seeds: &[b"fine"],
        tokens: &["!"],
        run: fragile,
    };
    let found = run::fuzz(&toy, &settings);
    let reports: Vec<_> = TARGETS.iter().map(|t| run::fuzz(t, &settings)).collect();
    run::loud_panics();

    assert!(!found.crashes.is_empty(), "{}", found.line());
    let (path, message) = &found.crashes[0];
    assert!(message.contains("a `!`"), "{message}");
    let input = std::fs::read(path).expect("the crashing input was kept");
    assert!(input.contains(&b'!'), "{input:?}");

    for report in &reports {
        println!("{}", report.line());
        assert_eq!(report.inputs, INPUTS, "{}", report.line());
        assert!(
            report.crashes.is_empty(),
            "{} — replay with `deploy/dev/fuzz --only {} --seed {seed} --inputs {INPUTS}`: {:?}",
            report.line(),
            report.target,
            report.crashes
        );
    }
}

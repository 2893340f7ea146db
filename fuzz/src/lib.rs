//! kiln-fuzz: fuzzing, on the stable toolchain, of every parser that reads input from
//! outside Kiln ([`targets`]): mutations of real inputs ([`mutate`]) run one by one with
//! panics caught, a hang bound and an allocation bound ([`run`]).
//!
//! `deploy/dev/fuzz --minutes N` runs every target; the test suite runs a short pass and
//! replays the inputs in `fuzz/regressions/`.

pub mod mutate;
pub mod run;
pub mod targets;

/// The most memory one input may take on top of what the process held when the run began.
pub const MEMORY_BOUND: usize = 256 * 1024 * 1024;

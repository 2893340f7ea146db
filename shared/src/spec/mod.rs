//! `.kiln.yml`: the pipeline a repository asks Kiln to run.
//!
//! ```yaml
//! stages: [acceptance, test]          # a stage starts when the one before it passed
//! steps:
//!   acceptance: { stage: acceptance, image: kiln/busybox, run: ./ci/smoke.sh, timeout: 2m }
//!   unit:
//!     stage: test
//!     image: { linux/amd64: kiln/busybox, linux/arm64: kiln/busybox-arm64 }
//!     platforms: [linux/amd64, linux/arm64]   # one task per platform × shard
//!     shards: 2                               # KILN_SHARD (1-based) and KILN_SHARDS
//!     services: { db: { image: kiln/redis } } # reachable as `db` from the task
//!     retry: { max: 1, exit_codes: [137] }
//!     run: [make test]
//!   windows: { stage: test, platforms: [windows/amd64], runner: shell, run: ci\test.cmd }
//!   docs: { needs: [acceptance], when: { changes: ["docs/**"] }, image: kiln/busybox, run: make docs }
//! ```
//!
//! The file is untrusted input read from the commit under test. Every way it can be wrong is a
//! [`SpecError`] carrying the line and column to show the person who wrote it; nothing here
//! panics on any input. [`json_schema`] describes the same format for editors.
//!
//! The module is split by concern: `model` is the public model the planner, bot and worker
//! read; `raw` is the file as YAML has it, every value with its place; `check` holds the
//! rules, one small function each; `error` is the error shown to the user.

mod check;
mod error;
#[cfg(test)]
mod field_tests;
mod model;
mod raw;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use error::SpecError;
pub use model::{
    Cache, Commands, Image, ImageSpec, Network, Patterns, Pull, Retry, Runner, Service, Spec, Step,
    Trigger, When,
};

/// The name of the pipeline file at the root of a repository.
pub const SPEC_FILE: &str = ".kiln.yml";

/// The largest `.kiln.yml` Kiln reads. A pipeline is a page of text; anything far larger is a
/// mistake or an attack, and refusing it early keeps a planner's memory bounded.
pub const MAX_SPEC_BYTES: usize = 256 * 1024;

/// How long a step may run when its spec gives no `timeout`.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// The longest a step may run. RabbitMQ's `consumer_timeout` must be longer: a job is
/// acknowledged when its task ends, and the broker takes back a job held longer than that.
pub const MAX_STEP_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// The most shards one step may ask for.
pub const MAX_SHARDS: u32 = 64;

/// The Linux capabilities a step may ask for, by the names Docker and `capabilities(7)` use
/// without their `CAP_` prefix.
pub const CAPABILITIES: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "SYSLOG",
    "WAKE_ALARM",
];

/// How many times an errored task (Kiln's fault, not the code's) is retried by default.
pub const DEFAULT_RETRIES: u32 = 2;

/// The most retries a step may ask for.
pub const MAX_RETRIES: u32 = 10;

/// The variables an image's build arguments may use.
pub const IMAGE_ARG_VARIABLES: [&str; 3] = ["repo", "branch", "branch_slug"];

/// The variables an `environment` may use.
pub const ENVIRONMENT_VARIABLES: [&str; 2] = ["branch", "branch_slug"];

/// The variables a cache key may use, besides `hash('path')`.
pub const CACHE_KEY_VARIABLES: [&str; 5] = ["repo", "branch", "branch_slug", "step", "platform"];

impl Spec {
    /// Parses and validates a `.kiln.yml`.
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        if text.len() > MAX_SPEC_BYTES {
            return Err(SpecError {
                line: 0,
                column: 0,
                message: format!(
                    "the file is {} bytes; the most Kiln reads is {MAX_SPEC_BYTES}",
                    text.len()
                ),
            });
        }
        // YAML 1.2 booleans only: `run: n` is a command, not `false` (YAML 1.1's "Norway").
        let options = serde_saphyr::options! { strict_booleans: true };
        let raw: raw::RawSpec = serde_saphyr::from_str_with_options(text, options)
            .map_err(|e| SpecError::from_yaml(&e))?;
        check::check(&raw)?;
        Ok(raw.into_spec())
    }
}

/// The JSON Schema of `.kiln.yml`, for editors; `schema/kiln.schema.json` is this, checked in.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Spec);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

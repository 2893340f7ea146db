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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, Spanned};

use crate::pattern::{any_path_matches, branch_glob, branch_matches, path_glob};
use crate::platform::Platform;
use crate::trigger::TriggerKind;

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

/// A parsed `.kiln.yml`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Kiln pipeline (.kiln.yml)")]
pub struct Spec {
    /// Stage names in order. A step belongs to one (the first when it names none); a stage
    /// starts when every task of the one before it passed.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub stages: Vec<Spanned<String>>,
    /// Images built from the repository itself, by name; a step's `image` may name one.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, ImageSpec>")]
    pub images: BTreeMap<String, Spanned<ImageSpec>>,
    /// The steps by name: letters, digits, `-` and `_`.
    #[schemars(with = "BTreeMap<String, Step>")]
    pub steps: BTreeMap<String, Spanned<Step>>,
}

/// An image built in-tree. Its tag is the hash of its context, Dockerfile, build arguments
/// and parent image, so an unchanged image is never built twice; a `VERSION` file in the
/// context is the way to force a rebuild. It is also tagged per branch, and the next build
/// of the branch (or of the default branch) uses that as its cache.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// The build context: a directory of the repository.
    pub context: String,
    /// The Dockerfile, relative to the context.
    #[serde(default = "dockerfile")]
    pub dockerfile: String,
    /// Build arguments; `{{ repo }}`, `{{ branch }}` and `{{ branch_slug }}` are replaced,
    /// e.g. `SOURCE_IMAGE: "kiln/{{ repo }}/base:{{ branch_slug }}"`.
    #[serde(default)]
    pub args: BTreeMap<String, String>,
    /// The stage of a multi-stage Dockerfile to build.
    #[serde(default)]
    pub target: Option<String>,
}

fn dockerfile() -> String {
    "Dockerfile".into()
}

/// Directories kept from one build to the next, e.g. `{ key: "{{ hash('Cargo.lock') }}",
/// paths: [target] }`: restored before the task when an entry with its key exists, saved
/// after it passed when none did.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cache {
    /// A template: `{{ hash('path') }}` is the SHA-256 of a file of the checkout;
    /// `{{ step }}`, `{{ platform }}` and `{{ branch_slug }}` are known too.
    pub key: String,
    /// Directories of the checkout to keep.
    pub paths: Vec<String>,
}

/// One named step of the pipeline; it becomes one task per platform and shard.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The stage the step belongs to; one of `stages`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub stage: Option<Spanned<String>>,
    /// The container image (Docker runner): one for every platform, or one per platform.
    /// It must exist on the worker.
    #[serde(default)]
    pub image: Option<Image>,
    /// The commands, run in order by the shell in the repository's checkout; the first that
    /// fails ends the task.
    pub run: Commands,
    /// Steps whose every task must pass before this step's tasks start.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub needs: Vec<Spanned<String>>,
    /// The platforms to run on, one task each; `[linux/amd64]` when absent.
    #[serde(default)]
    #[schemars(with = "Vec<Platform>")]
    pub platforms: Vec<Spanned<Platform>>,
    /// Splits the step into this many tasks per platform; each sees `KILN_SHARD` (1-based)
    /// and `KILN_SHARDS`.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    pub shards: u32,
    /// Sidecar containers on the task's private network, reachable by their names.
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    /// Environment variables set for the commands.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// How long a task may run before it is killed and fails, e.g. `90s`, `10m`.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
    /// When a task that did not pass is run again.
    #[serde(default)]
    pub retry: Retry,
    /// Conditions for the step to be part of a build at all.
    #[serde(default)]
    pub when: When,
    /// Where the commands run.
    #[serde(default)]
    pub runner: Runner,
    /// A failure of this step neither fails the build nor stops what comes after it.
    #[serde(default)]
    pub allow_failure: bool,
    /// Files the task leaves for the tasks that need it (glob patterns in the checkout,
    /// `**` across directories). They are stored by content: a file whose digest is stored
    /// already is not stored again.
    #[serde(default)]
    pub artifacts: Vec<String>,
    /// Directories kept between builds.
    #[serde(default)]
    pub cache: Option<Cache>,
    /// Names of secrets the commands get as environment variables. Their values are on the
    /// workers; Kiln's own configuration says which branches may use each, and their values
    /// are masked in logs.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// The environment the step deploys, e.g. `review/{{ branch_slug }}`: Kiln remembers it
    /// when the step passes, and stops it when the branch is deleted or its pull or merge
    /// request closed.
    #[serde(default)]
    pub environment: Option<String>,
    /// Pools (in the bot's configuration) a slot of each of which the step's tasks hold while
    /// they run, e.g. `[device-lab]`: a task waits for free slots rather than fail, and gets
    /// each slot's host as `KILN_RESOURCE_<POOL>` (`DEVICE_LAB`).
    #[serde(default)]
    pub resources: Vec<String>,
    /// The step that stops the environment: it runs in a build of its own, at the commit
    /// last deployed, when the branch goes; never in other builds.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub on_stop: Option<Spanned<String>>,
}

fn one() -> u32 {
    1
}

/// Where a step's commands run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Runner {
    /// In a fresh container of the step's image (Linux platforms).
    #[default]
    Docker,
    /// As plain processes on the worker, in a fresh work directory with a clean environment.
    Shell,
}

/// A sidecar container.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Its image; it must exist on the worker.
    pub image: String,
    /// Overrides the image's command: a list of arguments, or one line split into words as
    /// a shell would (quotes group words; no variables or globs).
    #[serde(default)]
    pub command: Option<Commands>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl Service {
    /// The command's words: a list as written, a line split as a shell would; `None` for a
    /// line with an unclosed quote.
    pub fn command_words(&self) -> Option<Vec<String>> {
        match self.command.as_ref().map(|c| c.0.as_slice()) {
            Some([line]) => shlex::split(line),
            Some(list) => Some(list.to_vec()),
            None => Some(Vec::new()),
        }
    }
}

/// `image: name` or `image: { linux/amd64: name, linux/arm64: other }`.
#[derive(Debug, Clone, PartialEq, Eq, JsonSchema)]
#[schemars(untagged)]
pub enum Image {
    /// The same image on every platform.
    Any(String),
    /// An image per platform.
    PerPlatform(BTreeMap<Platform, String>),
}

impl Image {
    /// The image to use on `platform`.
    pub fn on(&self, platform: Platform) -> Option<&str> {
        match self {
            Self::Any(name) => Some(name.as_str()),
            Self::PerPlatform(names) => names.get(&platform).map(String::as_str),
        }
        .filter(|name| !name.trim().is_empty())
    }
}

impl<'de> Deserialize<'de> for Image {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameOrMap;

        impl<'de> Visitor<'de> for NameOrMap {
            type Value = Image;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an image name or a map of platform to image name")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<Image, E> {
                Ok(Image::Any(name.to_owned()))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Image, A::Error> {
                let mut names = BTreeMap::new();
                while let Some((platform, name)) = map.next_entry::<Platform, String>()? {
                    names.insert(platform, name);
                }
                Ok(Image::PerPlatform(names))
            }
        }

        deserializer.deserialize_any(NameOrMap)
    }
}

/// The commands of a step: `run: make` or `run: [make, make test]`.
#[derive(Debug, Clone, PartialEq, Eq, JsonSchema)]
#[schemars(with = "OneOrMany")]
pub struct Commands(pub Vec<String>);

/// A string, or a list of strings.
#[derive(JsonSchema)]
#[schemars(untagged)]
#[allow(dead_code)] // describes the schema only
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for Commands {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(OneOrManyVisitor("a command or a list of commands"))
    }
}

struct OneOrManyVisitor(&'static str);

impl<'de> Visitor<'de> for OneOrManyVisitor {
    type Value = Commands;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_str<E: de::Error>(self, item: &str) -> Result<Commands, E> {
        Ok(Commands(vec![item.to_owned()]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Commands, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<String>()? {
            items.push(item);
        }
        Ok(Commands(items))
    }
}

/// Patterns: `branch: master` or `branch: [master, "release/*"]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, JsonSchema)]
#[schemars(with = "OneOrMany")]
pub struct Patterns(pub Vec<String>);

impl<'de> Deserialize<'de> for Patterns {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Commands(items) =
            deserializer.deserialize_any(OneOrManyVisitor("a pattern or a list of patterns"))?;
        Ok(Self(items))
    }
}

/// When a task that did not pass is run again: `retry: 1` or
/// `retry: { max: 1, exit_codes: [137] }`. Errored tasks (Kiln could not run them) are
/// always retried, [`DEFAULT_RETRIES`] times unless `max` says otherwise; failed ones only
/// when their exit code is listed. A timed-out task is not retried.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, JsonSchema)]
#[schemars(with = "RetrySchema")]
pub struct Retry {
    pub max: u32,
    pub exit_codes: Vec<i64>,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            max: DEFAULT_RETRIES,
            exit_codes: Vec::new(),
        }
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RetryFields {
    /// How many times a task may be run again.
    #[serde(default = "default_retries")]
    max: u32,
    /// Exit codes of failed tasks that are worth another run (flaky, killed).
    #[serde(default)]
    exit_codes: Vec<i64>,
}

fn default_retries() -> u32 {
    DEFAULT_RETRIES
}

#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)] // describes the schema only
enum RetrySchema {
    Max(u32),
    Fields(RetryFields),
}

impl<'de> Deserialize<'de> for Retry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountOrFields;

        impl<'de> Visitor<'de> for CountOrFields {
            type Value = Retry;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of retries or `{ max, exit_codes }`")
            }

            fn visit_u64<E: de::Error>(self, max: u64) -> Result<Retry, E> {
                let max = u32::try_from(max).map_err(|_| E::custom("too many retries"))?;
                Ok(Retry {
                    max,
                    exit_codes: Vec::new(),
                })
            }

            fn visit_i64<E: de::Error>(self, max: i64) -> Result<Retry, E> {
                let max =
                    u64::try_from(max).map_err(|_| E::custom("retries cannot be negative"))?;
                self.visit_u64(max)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Retry, A::Error> {
                let fields = RetryFields::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Retry {
                    max: fields.max,
                    exit_codes: fields.exit_codes,
                })
            }
        }

        deserializer.deserialize_any(CountOrFields)
    }
}

/// Conditions for a step to be part of a build. All given conditions must hold; a step left
/// out takes every step that needs it along.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// Branch name patterns (`*` matches anything, `/` included).
    #[serde(default)]
    pub branch: Option<Patterns>,
    /// What started the build.
    #[serde(default)]
    pub event: Option<Vec<TriggerKind>>,
    /// Path patterns (`*` within a directory, `**` across them): the step runs if the push
    /// changed a matching file, or if the forge did not say which files changed.
    #[serde(default)]
    pub changes: Option<Patterns>,
}

/// What a build is about, for [`When`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger<'a> {
    pub branch: &'a str,
    pub kind: TriggerKind,
    /// The files the push changed, if the forge said.
    pub changed_paths: Option<&'a [String]>,
}

impl When {
    /// Whether a step with these conditions is part of a build of `trigger`. The patterns
    /// were checked by [`Spec::parse`]; one that does not compile matches nothing.
    pub fn holds(&self, trigger: &Trigger) -> bool {
        let branch = self
            .branch
            .as_ref()
            .is_none_or(|patterns| patterns.0.iter().any(|p| branch_matches(p, trigger.branch)));
        let event = self
            .event
            .as_ref()
            .is_none_or(|kinds| kinds.contains(&trigger.kind));
        let changes = match (&self.changes, trigger.changed_paths) {
            (Some(patterns), Some(paths)) => patterns.0.iter().any(|p| any_path_matches(p, paths)),
            _ => true,
        };
        branch && event && changes
    }
}

/// Why a `.kiln.yml` cannot be used, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} line {line}, column {column}: {message}", SPEC_FILE)]
pub struct SpecError {
    /// 1-based line, or 0 when the problem is the file as a whole.
    pub line: u64,
    /// 1-based column, or 0 when the problem is the file as a whole.
    pub column: u64,
    /// What is wrong, in words for the person who wrote the file.
    pub message: String,
}

impl SpecError {
    pub(crate) fn at(location: Location, message: impl Into<String>) -> Self {
        Self {
            line: location.line(),
            column: location.column(),
            message: message.into(),
        }
    }
}

/// The JSON Schema of `.kiln.yml`, for editors; `schema/kiln.schema.json` is this, checked in.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Spec);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// A path inside the checkout: relative, with no `..`.
fn relative_path(path: &str) -> Result<(), String> {
    let path = std::path::Path::new(path);
    if path.as_os_str().is_empty() {
        Err("is empty".into())
    } else if path.is_absolute() || path.to_string_lossy().starts_with(['/', '\\']) {
        Err("must be relative to the repository".into())
    } else if path
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        Err("may not leave the repository (`..`)".into())
    } else {
        Ok(())
    }
}

/// Letters, digits, `-` and `_`: safe in Redis keys, container names and URLs.
fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

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
        let spec: Spec = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            SpecError {
                line,
                column,
                message: first_line(&e.to_string()),
            }
        })?;
        spec.validate()?;
        Ok(spec)
    }

    /// The steps that stop an environment (named by an `on_stop`): they run only when a
    /// branch goes.
    pub fn stop_steps(&self) -> BTreeSet<&str> {
        self.steps
            .values()
            .filter_map(|s| s.value.on_stop.as_ref())
            .map(|s| s.value.as_str())
            .collect()
    }

    /// The position of a step's stage in `stages`; 0 when there are none.
    pub fn stage_of(&self, step: &Step) -> usize {
        step.stage
            .as_ref()
            .and_then(|s| self.stages.iter().position(|t| t.value == s.value))
            .unwrap_or(0)
    }

    fn validate(&self) -> Result<(), SpecError> {
        if self.steps.is_empty() {
            return Err(SpecError {
                line: 1,
                column: 1,
                message: "`steps` is empty: there is nothing to run".into(),
            });
        }
        let mut stages = BTreeSet::new();
        for stage in &self.stages {
            if !is_name(&stage.value) {
                return Err(SpecError::at(
                    stage.referenced,
                    format!(
                        "stage name `{}` may only use letters, digits, `-` and `_`",
                        stage.value
                    ),
                ));
            }
            if !stages.insert(stage.value.as_str()) {
                return Err(SpecError::at(
                    stage.referenced,
                    format!("stage `{}` is listed twice", stage.value),
                ));
            }
        }
        for (name, image) in &self.images {
            let here = |message: String| Err(SpecError::at(image.referenced, message));
            if !is_name(name) || name.chars().any(|c| c.is_ascii_uppercase()) {
                return here(format!(
                    "image name `{name}` may only use lowercase letters, digits, `-` and `_`"
                ));
            }
            for (what, path) in [
                ("context", &image.value.context),
                ("dockerfile", &image.value.dockerfile),
            ] {
                if let Err(why) = relative_path(path) {
                    return here(format!("the {what} `{path}` of image `{name}` {why}"));
                }
            }
            for (arg, value) in &image.value.args {
                if let Err(why) = crate::template::check(value, &IMAGE_ARG_VARIABLES, false) {
                    return here(format!("build argument `{arg}` of image `{name}`: {why}"));
                }
            }
        }
        for (name, step) in &self.steps {
            self.validate_step(name, step)?;
            self.validate_environment(name, step)?;
        }
        Ok(())
    }

    /// `environment` and `on_stop`: a stop step is another step, one that needs nothing and
    /// that nothing needs (it runs alone, when the branch goes).
    fn validate_environment(&self, name: &str, spanned: &Spanned<Step>) -> Result<(), SpecError> {
        let step = &spanned.value;
        let here = |message: String| Err(SpecError::at(spanned.referenced, message));
        if let Some(environment) = &step.environment {
            if let Err(why) = crate::template::check(environment, &ENVIRONMENT_VARIABLES, false) {
                return here(format!("the environment of step `{name}`: {why}"));
            }
            if environment.trim().is_empty() {
                return here(format!("step `{name}` names an empty environment"));
            }
        }
        for (i, pool) in step.resources.iter().enumerate() {
            if !crate::command::is_name(pool) || step.resources[..i].contains(pool) {
                return here(format!(
                    "step `{name}`: resource `{pool}` must be a pool's name (letters, digits, \
                     `-`, `_`, `.`), listed once"
                ));
            }
        }
        let stops = self.stop_steps();
        if let Some(need) = step.needs.iter().find(|n| stops.contains(n.value.as_str())) {
            return Err(SpecError::at(
                need.referenced,
                format!(
                    "step `{name}` needs `{}`, which stops an environment and runs only when \
                     its branch goes",
                    need.value
                ),
            ));
        }
        let Some(on_stop) = &step.on_stop else {
            return Ok(());
        };
        let at = |message: String| Err(SpecError::at(on_stop.referenced, message));
        if step.environment.is_none() {
            return at(format!(
                "step `{name}` has an `on_stop` but no `environment` to stop"
            ));
        }
        let Some(stop) = self.steps.get(&on_stop.value) else {
            return at(format!(
                "the `on_stop` of step `{name}`, `{}`, is not a step",
                on_stop.value
            ));
        };
        if on_stop.value == name || stop.value.environment.is_some() {
            return at(format!(
                "the `on_stop` of step `{name}` must be another step, one with no `environment`"
            ));
        }
        if !stop.value.needs.is_empty() {
            return at(format!(
                "`{}` stops an environment and runs alone: it may not have `needs`",
                on_stop.value
            ));
        }
        Ok(())
    }

    fn validate_step(&self, name: &str, spanned: &Spanned<Step>) -> Result<(), SpecError> {
        let step = &spanned.value;
        let here = |message: String| Err(SpecError::at(spanned.referenced, message));
        if !is_name(name) {
            return here(format!(
                "step name `{name}` may only use letters, digits, `-` and `_`"
            ));
        }
        if step.run.0.is_empty() {
            return here(format!("step `{name}` has an empty `run`"));
        }
        if let Some(stage) = &step.stage
            && !self.stages.iter().any(|s| s.value == stage.value)
        {
            let message = if self.stages.is_empty() {
                format!(
                    "step `{name}` is in stage `{}`, but the file lists no `stages`",
                    stage.value
                )
            } else {
                format!(
                    "step `{name}` is in stage `{}`, which is not one of `stages`",
                    stage.value
                )
            };
            return Err(SpecError::at(stage.referenced, message));
        }
        for need in &step.needs {
            let Some(needed) = self.steps.get(&need.value) else {
                return Err(SpecError::at(
                    need.referenced,
                    format!("step `{name}` needs `{}`, which is not a step", need.value),
                ));
            };
            if need.value == name {
                return Err(SpecError::at(
                    need.referenced,
                    format!("step `{name}` needs itself"),
                ));
            }
            if self.stage_of(&needed.value) > self.stage_of(step) {
                return Err(SpecError::at(
                    need.referenced,
                    format!(
                        "step `{name}` needs `{}`, which is in a later stage",
                        need.value
                    ),
                ));
            }
        }
        let mut platforms = BTreeSet::new();
        for platform in &step.platforms {
            if !platforms.insert(platform.value) {
                return Err(SpecError::at(
                    platform.referenced,
                    format!("step `{name}` lists {} twice", platform.value),
                ));
            }
            if step.runner == Runner::Docker && !platform.value.has_containers() {
                return Err(SpecError::at(
                    platform.referenced,
                    format!(
                        "step `{name}` runs in Docker, which has Linux containers only; \
                         use `runner: shell` to run on {}",
                        platform.value
                    ),
                ));
            }
        }
        match (step.runner, &step.image) {
            (Runner::Docker, None) => {
                return here(format!("step `{name}` runs in Docker and needs an `image`"));
            }
            (Runner::Docker, Some(image)) => {
                if let Some(platform) = self.platforms(step).find(|p| image.on(*p).is_none()) {
                    return here(format!("step `{name}` has no `image` for {platform}"));
                }
                // With in-tree images declared, a bare name that is none of them is a typo
                // far more often than an image from Docker Hub.
                let bare = self
                    .platforms(step)
                    .filter_map(|p| image.on(p))
                    .filter(|_| !self.images.is_empty())
                    .find(|i| !i.contains(['/', ':', '@']) && !self.images.contains_key(*i));
                if let Some(unknown) = bare {
                    return here(format!(
                        "step `{name}` runs in image `{unknown}`, which is not one of `images`; \
                         name an image from elsewhere in full, e.g. `{unknown}:latest`"
                    ));
                }
            }
            (Runner::Shell, Some(_)) => {
                return here(format!(
                    "step `{name}` runs in the shell, where `image` means nothing; remove it"
                ));
            }
            (Runner::Shell, None) => {}
        }
        if step.runner == Runner::Shell && !step.services.is_empty() {
            return here(format!(
                "step `{name}` runs in the shell; `services` need the Docker runner"
            ));
        }
        for (i, secret) in step.secrets.iter().enumerate() {
            let env_name = secret.starts_with(|c: char| c.is_ascii_uppercase() || c == '_')
                && secret
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if !env_name || secret.starts_with("KILN_") {
                return here(format!(
                    "secret `{secret}` of step `{name}` must be an environment variable's name \
                     in capitals (A-Z, 0-9, _), not starting with KILN_"
                ));
            }
            if step.secrets[..i].contains(secret) || step.env.contains_key(secret) {
                return here(format!(
                    "step `{name}` sets `{secret}` twice (in `secrets` and `env`, or twice in \
                     `secrets`)"
                ));
            }
        }
        if !(1..=MAX_SHARDS).contains(&step.shards) {
            return here(format!(
                "step `{name}` asks for {} shards; it may have 1 to {MAX_SHARDS}",
                step.shards
            ));
        }
        if step.timeout() > MAX_STEP_TIMEOUT || step.timeout().is_zero() {
            return here(format!(
                "step `{name}` asks for a timeout of {}; it may be from 1s to 24h",
                humantime::format_duration(step.timeout())
            ));
        }
        if step.retry.max > MAX_RETRIES {
            return here(format!(
                "step `{name}` asks for {} retries; the most is {MAX_RETRIES}",
                step.retry.max
            ));
        }
        for (service, spec) in &step.services {
            let dns_label = !service.is_empty()
                && service.len() <= 63
                && service
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !service.starts_with('-');
            if !dns_label {
                return here(format!(
                    "service name `{service}` of step `{name}` must be a host name: \
                     lowercase letters, digits and `-`"
                ));
            }
            if spec.image.trim().is_empty() {
                return here(format!(
                    "service `{service}` of step `{name}` has no `image`"
                ));
            }
            if spec.command_words().is_none() {
                return here(format!(
                    "service `{service}` of step `{name}` has a `command` with an unclosed quote"
                ));
            }
        }
        for variable in step.env.keys() {
            if variable.is_empty() || variable.contains('=') || variable.contains('\0') {
                return here(format!(
                    "step `{name}` sets `{variable}`, which is not a variable name"
                ));
            }
            if variable.starts_with("KILN_") {
                return here(format!(
                    "step `{name}` sets `{variable}`; names starting with KILN_ are Kiln's"
                ));
            }
        }
        for pattern in &step.artifacts {
            if let Err(why) = relative_path(pattern).and_then(|()| {
                path_glob(pattern)
                    .map(drop)
                    .map_err(|e| format!("is not a pattern: {}", e.kind()))
            }) {
                return here(format!("artifact `{pattern}` of step `{name}` {why}"));
            }
        }
        if let Some(cache) = &step.cache {
            if cache.paths.is_empty() {
                return here(format!("the `cache` of step `{name}` has no `paths`"));
            }
            for path in &cache.paths {
                if let Err(why) = relative_path(path) {
                    return here(format!("cache path `{path}` of step `{name}` {why}"));
                }
            }
            if cache.key.trim().is_empty() {
                return here(format!("the `cache` of step `{name}` has an empty `key`"));
            }
            if let Err(why) = crate::template::check(&cache.key, &CACHE_KEY_VARIABLES, true) {
                return here(format!("the cache key of step `{name}`: {why}"));
            }
        }
        let patterns = step
            .when
            .branch
            .iter()
            .flat_map(|p| p.0.iter().map(|p| (p, branch_glob(p))))
            .chain(
                step.when
                    .changes
                    .iter()
                    .flat_map(|p| p.0.iter().map(|p| (p, path_glob(p)))),
            );
        for (pattern, compiled) in patterns {
            if let Err(error) = compiled {
                return here(format!(
                    "step `{name}` has a bad pattern `{pattern}` in `when`: {}",
                    error.kind()
                ));
            }
        }
        Ok(())
    }

    /// The platforms a step runs on.
    pub fn platforms<'a>(&self, step: &'a Step) -> impl Iterator<Item = Platform> + 'a {
        let default = step.platforms.is_empty().then_some(Platform::default());
        step.platforms.iter().map(|p| p.value).chain(default)
    }
}

impl Step {
    /// The step's timeout, or [`DEFAULT_STEP_TIMEOUT`].
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_STEP_TIMEOUT)
    }
}

/// serde-saphyr renders `error: line L column C: message` and a snippet of the file below it;
/// [`SpecError`] carries the place itself, so keep the message alone.
fn first_line(rendered: &str) -> String {
    let line = rendered.lines().next().unwrap_or(rendered).trim();
    let line = line.strip_prefix("error: ").unwrap_or(line);
    match line
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((_place, message)) => message.to_owned(),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::Platform;

    fn error(text: &str) -> SpecError {
        Spec::parse(text).expect_err("the spec should be refused")
    }

    #[test]
    fn environments_name_a_stop_step_that_runs_alone() {
        let refused = |steps: &str| error(&format!("steps:\n{steps}")).message;
        let ok = "  d: { image: i, run: x, environment: 'review/{{ branch }}', on_stop: s }\n  \
                  s: { image: i, run: y }\n";
        assert!(Spec::parse(&format!("steps:\n{ok}")).is_ok());
        assert!(
            refused("  d: { image: i, run: x, on_stop: s }\n  s: { image: i, run: y }\n")
                .contains("no `environment` to stop")
        );
        assert!(
            refused("  d: { image: i, run: x, environment: e, on_stop: nope }\n")
                .contains("`nope`, is not a step")
        );
        assert!(
            refused(&format!("{ok}  t: {{ image: i, run: z, needs: [s] }}\n"))
                .contains("runs only when its branch goes")
        );
        assert!(
            refused(
                "  d: { image: i, run: x, environment: e, on_stop: s }\n  \
                 s: { image: i, run: y, needs: [t] }\n  t: { image: i, run: z }\n"
            )
            .contains("may not have `needs`")
        );
        assert!(
            refused("  d: { image: i, run: x, environment: '{{ repo }}' }\n")
                .contains("the environment of step `d`")
        );
    }

    #[test]
    fn parses_a_full_step() {
        let spec = Spec::parse(
            "steps:\n  build:\n    image: kiln/busybox\n    run: make\n  test:\n    image: kiln/busybox\n    needs: [build]\n    env: { A: b }\n    timeout: 90s\n    run:\n      - make test\n      - make lint\n",
        )
        .expect("valid spec");
        let test = &spec.steps["test"].value;
        assert_eq!(
            test.run,
            Commands(vec!["make test".into(), "make lint".into()])
        );
        assert_eq!(test.needs[0].value, "build");
        assert_eq!(
            (
                test.needs[0].referenced.line(),
                test.needs[0].referenced.column()
            ),
            (7, 13)
        );
        assert_eq!(test.env["A"], "b");
        assert_eq!(test.timeout(), Duration::from_secs(90));
        assert_eq!(spec.steps["build"].value.timeout(), DEFAULT_STEP_TIMEOUT);
    }

    #[test]
    fn broken_inputs_name_line_and_column() {
        let check = |text: &str, line: u64, column: u64, needle: &str| {
            let e = error(text);
            assert_eq!((e.line, e.column), (line, column), "{e}");
            assert!(
                e.message.contains(needle),
                "`{}` should mention `{needle}`",
                e.message
            );
        };
        // A tab where YAML wants spaces.
        check("steps:\n  a:\n\timage: x\n", 3, 2, "tabs");
        // Unclosed flow sequence.
        check(
            "steps:\n  a:\n    image: x\n    run: [make\n",
            4,
            10,
            "unclosed bracket",
        );
        // A misspelt key is refused, not ignored.
        check(
            "steps:\n  a:\n    image: x\n    runs: make\n",
            4,
            5,
            "unknown field `runs`",
        );
        // A field of the wrong shape.
        check(
            "steps:\n  a:\n    image: x\n    run: { make: 1 }\n",
            4,
            10,
            "command",
        );
        check(
            "steps:\n  a:\n    image: x\n    run: make\n    timeout: soon\n",
            5,
            5,
            "duration",
        );
        check("steps:\n  a:\n    run: make\n", 3, 5, "image");
        check("steps: {}\n", 1, 1, "empty");
        // YAML 1.1's `yes` is not a boolean here, and `n` is a plain word.
        check(
            "steps:\n  a:\n    image: x\n    run: n\n    allow_failure: yes\n",
            5,
            20,
            "boolean",
        );
        check("steps:\n  a b:\n    image: x\n    run: make\n", 3, 5, "a b");
        check(
            "steps:\n  a:\n    image: x\n    run: []\n",
            3,
            5,
            "empty `run`",
        );
    }

    #[test]
    fn parses_the_whole_format() {
        let spec = Spec::parse(
            "stages: [acceptance, test]
steps:
  smoke: { stage: acceptance, image: i, run: s }
  unit:
    stage: test
    image: { linux/amd64: i, linux/arm64: i-arm }
    platforms: [linux/amd64, linux/arm64]
    shards: 2
    services: { db: { image: redis, command: [redis-server, --port, '7000'] } }
    retry: { max: 1, exit_codes: [137] }
    when: { branch: [master, 'release/*'], event: [push, command], changes: 'src/**' }
    allow_failure: true
    run: make test
  win: { stage: test, platforms: [windows/amd64], runner: shell, retry: 0, run: 'ci\\test.cmd' }
",
        )
        .expect("valid spec");
        let unit = &spec.steps["unit"].value;
        assert_eq!(spec.stage_of(unit), 1);
        assert_eq!(spec.stage_of(&spec.steps["smoke"].value), 0);
        assert_eq!(
            unit.image.as_ref().and_then(|i| i.on(Platform::LinuxArm64)),
            Some("i-arm")
        );
        assert_eq!(unit.shards, 2);
        assert_eq!(
            unit.services["db"].command,
            Some(Commands(vec![
                "redis-server".into(),
                "--port".into(),
                "7000".into()
            ]))
        );
        assert_eq!(
            unit.retry,
            Retry {
                max: 1,
                exit_codes: vec![137]
            }
        );
        assert!(unit.allow_failure);
        let win = &spec.steps["win"].value;
        assert_eq!(win.runner, Runner::Shell);
        assert_eq!(win.retry.max, 0);
        assert_eq!(spec.steps["smoke"].value.retry, Retry::default());
        assert_eq!(
            spec.platforms(win).collect::<Vec<_>>(),
            [Platform::WindowsAmd64]
        );
        assert_eq!(
            spec.platforms(&spec.steps["smoke"].value)
                .collect::<Vec<_>>(),
            [Platform::LinuxAmd64]
        );
    }

    #[test]
    fn when_decides_by_branch_event_and_changed_paths() {
        let spec = Spec::parse(
            "steps:\n  s:\n    image: i\n    run: x\n    when: { branch: [master, 'release/*'], event: [push], changes: ['src/**', '*.toml'] }\n",
        )
        .expect("valid spec");
        let when = &spec.steps["s"].value.when;
        let changed = |paths: &[&str]| paths.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>();
        let cases: &[(&str, TriggerKind, Option<Vec<String>>, bool)] = &[
            ("master", TriggerKind::Push, None, true),
            ("release/1.2", TriggerKind::Push, None, true),
            ("feature", TriggerKind::Push, None, false),
            ("master", TriggerKind::Command, None, false),
            (
                "master",
                TriggerKind::Push,
                Some(changed(&["src/a/b.rs"])),
                true,
            ),
            (
                "master",
                TriggerKind::Push,
                Some(changed(&["Cargo.toml"])),
                true,
            ),
            (
                "master",
                TriggerKind::Push,
                Some(changed(&["docs/Cargo.toml", "README.md"])),
                false,
            ),
            ("master", TriggerKind::Push, Some(Vec::new()), false),
        ];
        for (branch, kind, paths, expect) in cases {
            let trigger = Trigger {
                branch,
                kind: *kind,
                changed_paths: paths.as_deref(),
            };
            assert_eq!(when.holds(&trigger), *expect, "{trigger:?}");
        }
        assert!(When::default().holds(&Trigger {
            branch: "x",
            kind: TriggerKind::Tag,
            changed_paths: Some(&[])
        }));
    }

    #[test]
    fn refuses_impossible_steps_with_a_place() {
        let check = |text: &str, line: u64, column: u64, needle: &str| {
            let e = error(text);
            assert_eq!((e.line, e.column), (line, column), "{e}");
            assert!(
                e.message.contains(needle),
                "`{}` should mention `{needle}`",
                e.message
            );
        };
        let table: &[(&str, u64, u64, &str)] = &[
            (
                "steps:\n  a: { image: i, run: x, platforms: [linux/riscv] }\n",
                2,
                38,
                "unknown platform `linux/riscv`",
            ),
            (
                "steps:\n  a: { image: i, run: x, platforms: [windows/amd64] }\n",
                2,
                38,
                "use `runner: shell`",
            ),
            (
                "steps:\n  a: { image: i, run: x, platforms: [linux/amd64, linux/amd64] }\n",
                2,
                51,
                "twice",
            ),
            (
                "steps:\n  a: { image: { linux/amd64: i }, run: x, platforms: [linux/arm64] }\n",
                2,
                6,
                "no `image` for linux/arm64",
            ),
            (
                "steps:\n  a: { runner: shell, image: i, run: x }\n",
                2,
                6,
                "remove it",
            ),
            (
                "steps:\n  a: { runner: shell, run: x, services: { db: { image: r } } }\n",
                2,
                6,
                "Docker runner",
            ),
            (
                "steps:\n  a: { runner: podman, run: x }\n",
                2,
                16,
                "unknown variant `podman`",
            ),
            (
                "steps:\n  a: { image: i, run: x, shards: 0 }\n",
                2,
                6,
                "1 to 64",
            ),
            (
                "steps:\n  a: { image: i, run: x, shards: 65 }\n",
                2,
                6,
                "1 to 64",
            ),
            (
                "steps:\n  a: { image: i, run: x, retry: 11 }\n",
                2,
                6,
                "the most is 10",
            ),
            (
                "steps:\n  a: { image: i, run: x, retry: { times: 1 } }\n",
                2,
                35,
                "unknown field `times`",
            ),
            (
                "steps:\n  a: { image: i, run: x, services: { Db_1: { image: r } } }\n",
                2,
                6,
                "host name",
            ),
            (
                "steps:\n  a: { image: i, run: x, env: { KILN_TASK: x } }\n",
                2,
                6,
                "Kiln's",
            ),
            (
                "steps:\n  a: { image: i, run: x, when: { branch: 'a[' } }\n",
                2,
                6,
                "bad pattern `a[`",
            ),
            (
                "steps:\n  a: { image: i, run: x, when: { event: [pull] } }\n",
                2,
                42,
                "unknown variant `pull`",
            ),
            (
                "steps:\n  a: { image: i, run: x, stage: test }\n",
                2,
                33,
                "lists no `stages`",
            ),
            (
                "stages: [build]\nsteps:\n  a: { image: i, run: x, stage: test }\n",
                3,
                33,
                "not one of `stages`",
            ),
            (
                "stages: [build, build]\nsteps:\n  a: { image: i, run: x }\n",
                1,
                17,
                "listed twice",
            ),
            (
                "stages: [a, b]\nsteps:\n  x: { image: i, run: x, stage: a, needs: [y] }\n  y: { image: i, run: x, stage: b }\n",
                3,
                44,
                "later stage",
            ),
            (
                "steps:\n  a: { image: i, run: x, needs: [nope] }\n",
                2,
                34,
                "needs `nope`, which is not a step",
            ),
            (
                "steps:\n  a: { image: i, run: x, needs: [a] }\n",
                2,
                34,
                "needs itself",
            ),
        ];
        let images: &[(&str, u64, u64, &str)] = &[
            (
                "images:\n  b: { context: ../x }\nsteps:\n  a: { image: b, run: x }\n",
                2,
                6,
                "may not leave the repository",
            ),
            (
                "images:\n  B: { context: x }\nsteps:\n  a: { image: i:1, run: x }\n",
                2,
                6,
                "lowercase",
            ),
            (
                "images:\n  b: { context: x, args: { A: '{{ nope }}' } }\nsteps:\n  a: { image: b, run: x }\n",
                2,
                6,
                "unknown `{{ nope }}`",
            ),
            (
                "images:\n  build: { context: x }\nsteps:\n  a: { image: biuld, run: x }\n",
                4,
                6,
                "`biuld`, which is not one of `images`",
            ),
            (
                "steps:\n  a: { image: i, run: x, artifacts: [/etc/passwd] }\n",
                2,
                6,
                "must be relative",
            ),
            (
                "steps:\n  a: { image: i, run: x, artifacts: ['dist/[x'] }\n",
                2,
                6,
                "is not a pattern",
            ),
            (
                "steps:\n  a: { image: i, run: x, cache: { key: k, paths: [] } }\n",
                2,
                6,
                "no `paths`",
            ),
            (
                "steps:\n  a: { image: i, run: x, cache: { key: '{{ hash(Cargo.lock) }}', paths: [t] } }\n",
                2,
                6,
                "quoted path",
            ),
            (
                "steps:\n  a: { image: i, run: x, services: { db: { image: r, command: \"sh -c 'x\" } } }\n",
                2,
                6,
                "unclosed quote",
            ),
            (
                "steps:\n  a: { image: i, run: x, timeout: 2d }\n",
                2,
                6,
                "from 1s to 24h",
            ),
            (
                "steps:\n  a: { image: i, run: x, secrets: [deploy_token] }\n",
                2,
                6,
                "in capitals",
            ),
            (
                "steps:\n  a: { image: i, run: x, secrets: [KILN_TOKEN] }\n",
                2,
                6,
                "not starting with KILN_",
            ),
            (
                "steps:\n  a: { image: i, run: x, secrets: [TOKEN], env: { TOKEN: x } }\n",
                2,
                6,
                "sets `TOKEN` twice",
            ),
        ];
        for (text, line, column, needle) in table.iter().chain(images) {
            check(text, *line, *column, needle);
        }
    }

    #[test]
    fn the_checked_in_schema_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema/kiln.schema.json");
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        if checked_in != json_schema() {
            if std::env::var_os("KILN_UPDATE_SCHEMA").is_some() {
                std::fs::write(path, json_schema()).expect("write the schema");
            } else {
                panic!(
                    "schema/kiln.schema.json is out of date: run `KILN_UPDATE_SCHEMA=1 cargo test -p kiln-shared`"
                );
            }
        }
        let schema: serde_json::Value = serde_json::from_str(&json_schema()).expect("json");
        let step = &schema["$defs"]["Step"]["properties"];
        for field in [
            "stage",
            "image",
            "run",
            "needs",
            "platforms",
            "shards",
            "services",
            "env",
            "timeout",
            "retry",
            "when",
            "runner",
            "allow_failure",
        ] {
            assert!(step.get(field).is_some(), "the schema has no `{field}`");
        }
    }

    #[test]
    fn refuses_oversized_files() {
        let e = error(&"#".repeat(MAX_SPEC_BYTES + 1));
        assert!(e.message.contains("most Kiln reads"), "{e}");
    }

    #[test]
    fn error_text_names_the_file() {
        let e = SpecError {
            line: 4,
            column: 2,
            message: "bad".into(),
        };
        assert_eq!(e.to_string(), ".kiln.yml line 4, column 2: bad");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,200}") {
            let _ = Spec::parse(&text);
        }

        #[test]
        fn never_panics_on_yamlish_input(text in "(steps|image|run|needs|[:\\-\\[\\]{} \n]|a|b){0,60}") {
            let _ = Spec::parse(&text);
        }
    }
}

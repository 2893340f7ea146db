//! The public model of a `.kiln.yml`: what the planner, the bot and the worker read once the
//! file has been parsed ([`super::raw`]) and checked ([`super::check`]).
//!
//! The `#[serde(...)]` attributes here describe the format to [`super::json_schema`]; the file
//! itself is read through the raw shapes, which keep every field's place for error messages.
//! The types that travel in jobs and plans ([`ImageSpec`], [`Cache`], [`Retry`], [`Runner`])
//! also (de)serialise for the wire.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_saphyr::Spanned;

use super::{DEFAULT_RETRIES, DEFAULT_STEP_TIMEOUT};
use crate::pattern::{any_path_matches, branch_matches};
use crate::platform::Platform;
use crate::trigger::TriggerKind;

/// A parsed `.kiln.yml`.
#[derive(Debug, Clone, JsonSchema)]
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
    /// Builds started by the clock, by name (letters, digits, `-` and `_`), as event
    /// `schedule`. Only the default branch's file is read for them, as often as Kiln's
    /// configuration says; a schedule of the same name there is Kiln's own, and wins.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Schedule>")]
    pub schedules: BTreeMap<String, Spanned<Schedule>>,
}

/// A build of the default branch's head started by the clock (a file names no other branch:
/// whoever writes it could otherwise start another branch's builds, with its secrets).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// When: a cron expression of five fields (minute to day of week), or six with seconds
    /// first, e.g. `0 2 * * *`.
    pub cron: String,
    /// Variables its builds' tasks see, as `build … KEY=VALUE` gives them.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// The time zone `cron` is read in (an IANA name, `Europe/Berlin`); UTC when absent.
    #[serde(default)]
    pub timezone: Option<String>,
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

/// The Dockerfile an image without `dockerfile` is built from.
pub(super) fn dockerfile() -> String {
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
#[derive(Debug, Clone, JsonSchema)]
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
    #[serde(default)]
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
    /// When the step's image (and its services') is pulled from its registry.
    #[serde(default)]
    pub pull: Pull,
    /// What the step's container may reach over the network.
    #[serde(default)]
    pub network: Network,
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
    /// A concurrency group of the repository, e.g. `deploy-production`: its tasks, of every
    /// build, run one at a time; the others wait, queued, and take turns.
    #[serde(default)]
    pub concurrency: Option<String>,
    /// The step that stops the environment: it runs in a build of its own, at the commit
    /// last deployed, when the branch goes; never in other builds.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub on_stop: Option<Spanned<String>>,
    /// Linux capabilities the step's container gets (Docker runner), e.g. `[CHOWN, SETUID,
    /// SETGID]`, each one Kiln's configuration allows for the repository. A container gets
    /// none otherwise, and no process in it gains privileges through set-user-ID programs.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The container's root file system is read-only (Docker runner); `/workspace` and a
    /// fresh `/tmp` stay writable.
    #[serde(default)]
    pub read_only: bool,
}

/// One shard when a step asks for none; the schema shows it as the default.
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

/// When a worker pulls an image from its registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Pull {
    /// Only when the worker's engine lacks it.
    #[default]
    IfNotPresent,
    /// Before every task, so a moving tag (`:latest`, `:20`) is current.
    Always,
}

/// What a step's container may reach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// Nothing but its own services: a build reaches no other machine.
    #[default]
    None,
    /// Out, through the worker host's network (package registries, a deploy target),
    /// on a network of its own with its services.
    Egress,
}

/// A sidecar container.
#[derive(Debug, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Its image; pulled from its registry when the worker lacks it.
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

/// Patterns: `branch: master` or `branch: [master, "release/*"]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, JsonSchema)]
#[schemars(with = "OneOrMany")]
pub struct Patterns(pub Vec<String>);

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

/// [`DEFAULT_RETRIES`], as serde's default for `max`.
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

/// A planned task carries its [`Retry`] in the stored plan; this reads it back (and accepts
/// the count form too, as `.kiln.yml` does).
impl<'de> Deserialize<'de> for Retry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountOrFields;

        impl<'de> Visitor<'de> for CountOrFields {
            type Value = Retry;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
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
#[derive(Debug, Clone, Default, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// Branch name patterns (`*` matches anything, `/` included); a tag's build has no
    /// branch, so it holds for none.
    #[serde(default)]
    pub branch: Option<Patterns>,
    /// Tag name patterns, as for branches: the step is part of a tag's build (`event: tag`)
    /// whose tag matches, and of no other build.
    #[serde(default)]
    pub tag: Option<Patterns>,
    /// What started the build.
    #[serde(default)]
    pub event: Option<Vec<TriggerKind>>,
    /// Path patterns (`*` within a directory, `**` across them): the step runs if the push
    /// changed a matching file, or if the forge did not say which files changed.
    #[serde(default)]
    pub changes: Option<Patterns>,
    /// The build's variables (`build … KEY=VALUE`) and patterns of their values, as for
    /// branches: each named variable is set and matches one of its patterns.
    #[serde(default)]
    pub vars: Option<BTreeMap<String, Patterns>>,
    /// Run by hand only: the step is planned but not run (nor is what needs it) until
    /// someone runs it (`run <build> <step>`, the card's Run button), in a new build.
    #[serde(default)]
    pub manual: bool,
}

/// What a build is about, for [`When`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger<'a> {
    /// The branch built; for a tag's build (`kind` tag), the tag.
    pub branch: &'a str,
    pub kind: TriggerKind,
    /// The files the push changed, if the forge said.
    pub changed_paths: Option<&'a [String]>,
    /// The build's variables.
    pub vars: &'a BTreeMap<String, String>,
}

impl When {
    /// Whether a step with these conditions is part of a build of `trigger`. The patterns
    /// were checked by [`Spec::parse`]; one that does not compile matches nothing.
    pub fn holds(&self, trigger: &Trigger) -> bool {
        let tagged = trigger.kind == TriggerKind::Tag;
        let matches =
            |patterns: &Patterns| patterns.0.iter().any(|p| branch_matches(p, trigger.branch));
        let branch = self
            .branch
            .as_ref()
            .is_none_or(|patterns| !tagged && matches(patterns));
        let tag = self
            .tag
            .as_ref()
            .is_none_or(|patterns| tagged && matches(patterns));
        let event = self
            .event
            .as_ref()
            .is_none_or(|kinds| kinds.contains(&trigger.kind));
        let changes = match (&self.changes, trigger.changed_paths) {
            (Some(patterns), Some(paths)) => patterns.0.iter().any(|p| any_path_matches(p, paths)),
            _ => true,
        };
        let vars = self.vars.as_ref().is_none_or(|wanted| {
            wanted.iter().all(|(name, patterns)| {
                trigger
                    .vars
                    .get(name)
                    .is_some_and(|value| patterns.0.iter().any(|p| branch_matches(p, value)))
            })
        });
        branch && tag && event && changes && vars
    }
}

impl Spec {
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

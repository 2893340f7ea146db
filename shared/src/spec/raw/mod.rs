//! The raw shapes of `.kiln.yml`, as YAML has them: every value the user wrote is a
//! [`Spanned`], and maps keep their keys' places too ([`Entries`]), so that
//! [`super::check`] can put each error at the field that is wrong. `into_model` turns
//! a checked file into the public `Spec`.
//!
//! Types are refused here (serde-saphyr gives the place); ranges, names and references are
//! refused by the checks, which have the place from the span.

mod into_model;
mod values;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::model::{Commands, Network, Patterns, Pull, Runner};
use crate::platform::Platform;
use crate::trigger::TriggerKind;
pub(super) use values::{Entries, RawImage, RawRetry, Strings, Timeout, Whole};

/// A `.kiln.yml` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSpec {
    #[serde(default)]
    pub stages: Vec<Spanned<String>>,
    #[serde(default)]
    pub images: Entries<RawImageSpec>,
    pub steps: Spanned<Entries<RawStep>>,
    #[serde(default)]
    pub schedules: Entries<RawSchedule>,
}

/// An entry of `schedules` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    pub cron: Spanned<String>,
    #[serde(default)]
    pub vars: Option<Spanned<Entries<String>>>,
    #[serde(default)]
    pub timezone: Option<Spanned<String>>,
}

/// An entry of `images` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawImageSpec {
    pub context: Spanned<String>,
    #[serde(default)]
    pub dockerfile: Option<Spanned<String>>,
    #[serde(default)]
    pub args: Entries<String>,
    #[serde(default)]
    pub target: Option<String>,
}

/// A step as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    #[serde(default)]
    pub stage: Option<Spanned<String>>,
    #[serde(default)]
    pub image: Option<Spanned<RawImage>>,
    pub run: Strings<Commands>,
    #[serde(default)]
    pub needs: Vec<Spanned<String>>,
    #[serde(default)]
    pub platforms: Vec<Spanned<Platform>>,
    #[serde(default)]
    pub shards: Option<Spanned<Whole>>,
    #[serde(default)]
    pub services: Option<Spanned<Entries<RawService>>>,
    #[serde(default)]
    pub env: Entries<String>,
    #[serde(default)]
    pub timeout: Option<Spanned<Timeout>>,
    #[serde(default)]
    pub retry: Option<Spanned<RawRetry>>,
    #[serde(default)]
    pub when: RawWhen,
    #[serde(default)]
    pub runner: Option<Spanned<Runner>>,
    #[serde(default)]
    pub pull: Option<Spanned<Pull>>,
    #[serde(default)]
    pub network: Option<Spanned<Network>>,
    #[serde(default)]
    pub allow_failure: bool,
    #[serde(default)]
    pub artifacts: Vec<Spanned<String>>,
    #[serde(default)]
    pub cache: Option<RawCache>,
    #[serde(default)]
    pub secrets: Vec<Spanned<String>>,
    #[serde(default)]
    pub environment: Option<Spanned<String>>,
    #[serde(default)]
    pub resources: Vec<Spanned<String>>,
    #[serde(default)]
    pub concurrency: Option<Spanned<String>>,
    #[serde(default)]
    pub on_stop: Option<Spanned<String>>,
    #[serde(default)]
    pub capabilities: Vec<Spanned<String>>,
    #[serde(default)]
    pub read_only: Option<Spanned<bool>>,
}

impl RawStep {
    /// Where the step's commands run; Docker unless it says otherwise.
    pub fn runner(&self) -> Runner {
        self.runner.as_ref().map(|r| r.value).unwrap_or_default()
    }

    /// The sidecars, none when the step lists none.
    pub fn services(&self) -> &[(Spanned<String>, Spanned<RawService>)] {
        self.services.as_ref().map_or(&[], |s| &s.value.0)
    }

    /// The platforms the step runs on: `[linux/amd64]` when it names none.
    pub fn platforms(&self) -> impl Iterator<Item = Platform> + '_ {
        let default = self.platforms.is_empty().then_some(Platform::default());
        self.platforms.iter().map(|p| p.value).chain(default)
    }
}

/// A sidecar as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub image: Spanned<String>,
    #[serde(default)]
    pub command: Option<Strings<Commands>>,
    #[serde(default)]
    pub env: Entries<String>,
}

/// `cache` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    pub key: Spanned<String>,
    pub paths: Spanned<Vec<Spanned<String>>>,
}

/// `when` as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWhen {
    #[serde(default)]
    pub branch: Option<Strings<Patterns>>,
    #[serde(default)]
    pub tag: Option<Strings<Patterns>>,
    #[serde(default)]
    pub event: Option<Vec<TriggerKind>>,
    #[serde(default)]
    pub changes: Option<Strings<Patterns>>,
    #[serde(default)]
    pub vars: Option<Entries<Strings<Patterns>>>,
    #[serde(default)]
    pub manual: bool,
}

/// Written variables as a plain map, for their checks.
pub(super) fn plain_vars(entries: &Entries<String>) -> std::collections::BTreeMap<String, String> {
    entries
        .0
        .iter()
        .map(|(key, value)| (key.value.clone(), value.value.clone()))
        .collect()
}

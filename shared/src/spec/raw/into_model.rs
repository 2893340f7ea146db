//! A checked file's raw shapes turned into the public [`Spec`]: places dropped except where
//! the model keeps them (`stages`, `needs`, `platforms`, `on_stop`, and each step and image).

use std::collections::BTreeMap;

use serde_saphyr::Spanned;

use super::{Entries, RawImage, RawImageSpec, RawRetry, RawService, RawSpec, RawStep, RawWhen};
use crate::spec::model::{
    Cache, Commands, Image, ImageSpec, Patterns, Retry, Schedule, Service, Spec, Step, When,
    dockerfile,
};
use crate::spec::{DEFAULT_RETRIES, MAX_SHARDS};

/// Places dropped, maps keyed by their values: the public form of a checked file.
impl RawSpec {
    pub fn into_spec(self) -> Spec {
        Spec {
            stages: self.stages,
            images: spanned_map(self.images, RawImageSpec::into_image_spec),
            steps: spanned_map(self.steps.value, RawStep::into_step),
            schedules: spanned_map(self.schedules, |s| Schedule {
                cron: s.cron.value,
                vars: s.vars.map(|v| plain_map(v.value)).unwrap_or_default(),
                timezone: s.timezone.map(|t| t.value),
            }),
        }
    }
}

/// An [`Entries`] as a map by key, each value converted and keeping its place.
fn spanned_map<V, T>(entries: Entries<V>, f: impl Fn(V) -> T) -> BTreeMap<String, Spanned<T>> {
    entries
        .0
        .into_iter()
        .map(|(key, v)| {
            let value = Spanned::new(f(v.value), v.referenced, v.defined);
            (key.value, value)
        })
        .collect()
}

/// An [`Entries`] of strings as a plain map.
fn plain_map(entries: Entries<String>) -> BTreeMap<String, String> {
    entries
        .0
        .into_iter()
        .map(|(key, value)| (key.value, value.value))
        .collect()
}

/// The values of a list, places dropped.
fn values(items: Vec<Spanned<String>>) -> Vec<String> {
    items.into_iter().map(|s| s.value).collect()
}

impl RawImageSpec {
    fn into_image_spec(self) -> ImageSpec {
        ImageSpec {
            context: self.context.value,
            dockerfile: self.dockerfile.map_or_else(dockerfile, |d| d.value),
            args: plain_map(self.args),
            target: self.target,
        }
    }
}

impl RawStep {
    fn into_step(self) -> Step {
        let runner = self.runner();
        // The checks refused shards and retries out of range.
        let shards = self
            .shards
            .map_or(1, |s| s.value.0.clamp(1, MAX_SHARDS.into()));
        let retry = self.retry.map(|retry| {
            let (max, _) = RawRetry::max(&retry);
            let exit_codes = match retry.value {
                RawRetry::Count(_) => Vec::new(),
                RawRetry::Fields(fields) => fields.exit_codes.iter().map(|c| c.0).collect(),
            };
            let max = u32::try_from(max).unwrap_or(DEFAULT_RETRIES);
            Retry { max, exit_codes }
        });
        Step {
            stage: self.stage,
            image: self.image.map(|i| i.value.into_image()),
            run: Commands(self.run.values()),
            needs: self.needs,
            platforms: self.platforms,
            shards: u32::try_from(shards).unwrap_or(1),
            services: self
                .services
                .map(|s| s.value.0)
                .unwrap_or_default()
                .into_iter()
                .map(|(name, service)| (name.value, service.value.into_service()))
                .collect(),
            env: plain_map(self.env),
            timeout: self.timeout.map(|t| t.value.0),
            retry: retry.unwrap_or_default(),
            when: self.when.into_when(),
            runner,
            pull: self.pull.map(|p| p.value).unwrap_or_default(),
            network: self.network.map(|n| n.value).unwrap_or_default(),
            allow_failure: self.allow_failure,
            artifacts: values(self.artifacts),
            cache: self.cache.map(|c| Cache {
                key: c.key.value,
                paths: values(c.paths.value),
            }),
            secrets: values(self.secrets),
            environment: self.environment.map(|e| e.value),
            resources: values(self.resources),
            concurrency: self.concurrency.map(|c| c.value),
            on_stop: self.on_stop,
            capabilities: values(self.capabilities),
            read_only: self.read_only.is_some_and(|r| r.value),
        }
    }
}

impl RawService {
    fn into_service(self) -> Service {
        Service {
            image: self.image.value,
            command: self.command.map(|c| Commands(c.values())),
            env: plain_map(self.env),
        }
    }
}

impl RawWhen {
    fn into_when(self) -> When {
        When {
            branch: self.branch.map(|b| Patterns(b.values())),
            tag: self.tag.map(|t| Patterns(t.values())),
            event: self.event,
            changes: self.changes.map(|c| Patterns(c.values())),
            vars: self.vars.map(|vars| {
                vars.0
                    .into_iter()
                    .map(|(name, values)| (name.value, Patterns(values.value.values())))
                    .collect()
            }),
            manual: self.manual,
        }
    }
}

impl RawImage {
    /// The public form: a map by platform.
    fn into_image(self) -> Image {
        match self {
            Self::Any(name) => Image::Any(name),
            Self::PerPlatform(names) => Image::PerPlatform(
                names
                    .into_iter()
                    .map(|(platform, name)| (platform.value, name.value))
                    .collect(),
            ),
        }
    }
}

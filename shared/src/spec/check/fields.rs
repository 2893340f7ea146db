//! The checks of a step's own fields: each looks at one field (or one group that only makes
//! sense together, like `runner` and `image`) and blames that field's value.

use std::collections::BTreeSet;

use serde_saphyr::{Location, Spanned};

use super::{StepAt, is_name, refuse, relative_path};
use crate::pattern::{branch_glob, path_glob};
use crate::platform::Platform;
use crate::spec::error::SpecError;
use crate::spec::raw::{RawImage, RawRetry, RawService};
use crate::spec::{
    CACHE_KEY_VARIABLES, CAPABILITIES, ENVIRONMENT_VARIABLES, MAX_RETRIES, MAX_SHARDS,
    MAX_STEP_TIMEOUT, Runner,
};

/// Step names are names: they end up in Redis keys, container names and URLs.
pub(super) fn name(s: &StepAt) -> Result<(), SpecError> {
    if !is_name(s.name()) {
        return refuse(
            s.name.referenced,
            format!(
                "step name `{}` may only use letters, digits, `-` and `_`",
                s.name()
            ),
        );
    }
    Ok(())
}

/// A step runs something.
pub(super) fn run(s: &StepAt) -> Result<(), SpecError> {
    if s.step.run.items.is_empty() {
        return refuse(
            s.step.run.at,
            format!("step `{}` has an empty `run`", s.name()),
        );
    }
    Ok(())
}

/// Each platform once, and only platforms the runner can run.
pub(super) fn platforms(s: &StepAt) -> Result<(), SpecError> {
    let name = s.name();
    let mut seen = BTreeSet::new();
    for platform in &s.step.platforms {
        if !seen.insert(platform.value) {
            return refuse(
                platform.referenced,
                format!("step `{name}` lists {} twice", platform.value),
            );
        }
        if s.step.runner() == Runner::Docker && !platform.value.has_containers() {
            return refuse(
                platform.referenced,
                format!(
                    "step `{name}` runs in Docker, which has Linux containers only; \
                     use `runner: shell` to run on {}",
                    platform.value
                ),
            );
        }
    }
    Ok(())
}

/// Docker needs an image for every platform; the shell has no use for one.
pub(super) fn image(s: &StepAt) -> Result<(), SpecError> {
    let name = s.name();
    let Some(image) = &s.step.image else {
        if s.step.runner() == Runner::Docker {
            return refuse(
                s.at,
                format!("step `{name}` runs in Docker and needs an `image`"),
            );
        }
        return Ok(());
    };
    if s.step.runner() == Runner::Shell {
        return refuse(
            image.referenced,
            format!("step `{name}` runs in the shell, where `image` means nothing; remove it"),
        );
    }
    let missing = s.step.platforms().find(|p| image_on(image, *p).is_none());
    if let Some(platform) = missing {
        return refuse(
            image.referenced,
            format!("step `{name}` has no `image` for {platform}"),
        );
    }
    Ok(())
}

/// With in-tree images declared, a bare image name that is none of them is a typo far more
/// often than an image from Docker Hub.
pub(super) fn image_is_declared(s: &StepAt) -> Result<(), SpecError> {
    let images = &s.file.spec.images.0;
    let Some(image) = &s.step.image else {
        return Ok(());
    };
    if images.is_empty() || s.step.runner() != Runner::Docker {
        return Ok(());
    }
    let bare = s
        .step
        .platforms()
        .filter_map(|p| image_on(image, p))
        .find(|(i, _)| !i.contains(['/', ':', '@']) && !images.iter().any(|(k, _)| k.value == *i));
    if let Some((unknown, at)) = bare {
        return refuse(
            at,
            format!(
                "step `{}` runs in image `{unknown}`, which is not one of `images`; \
                 name an image from elsewhere in full, e.g. `{unknown}:latest`",
                s.name()
            ),
        );
    }
    Ok(())
}

/// The image a step names for `platform`, and where it is written; none when it names none
/// or a blank one.
fn image_on(image: &Spanned<RawImage>, platform: Platform) -> Option<(&str, Location)> {
    let named = match &image.value {
        RawImage::Any(i) => Some((i.as_str(), image.referenced)),
        RawImage::PerPlatform(names) => names
            .iter()
            .find(|(p, _)| p.value == platform)
            .map(|(_, i)| (i.value.as_str(), i.referenced)),
    };
    named.filter(|(i, _)| !i.trim().is_empty())
}

/// `pull` and `network` are about containers.
pub(super) fn container_fields_need_docker(s: &StepAt) -> Result<(), SpecError> {
    if s.step.runner() == Runner::Docker {
        return Ok(());
    }
    let fields = [
        ("pull", s.step.pull.as_ref().map(|p| p.referenced)),
        ("network", s.step.network.as_ref().map(|n| n.referenced)),
    ];
    for (field, at) in fields {
        if let Some(at) = at {
            return refuse(
                at,
                format!(
                    "step `{}` runs in the shell, where `{field}` means nothing; remove it",
                    s.name()
                ),
            );
        }
    }
    Ok(())
}

/// Sidecars live on a Docker network.
pub(super) fn services_need_docker(s: &StepAt) -> Result<(), SpecError> {
    if let Some(services) = &s.step.services
        && s.step.runner() == Runner::Shell
        && !services.value.0.is_empty()
    {
        return refuse(
            services.referenced,
            format!(
                "step `{}` runs in the shell; `services` need the Docker runner",
                s.name()
            ),
        );
    }
    Ok(())
}

/// A secret becomes an environment variable: a capitalised name, not Kiln's, not also in
/// `env`, listed once.
pub(super) fn secrets(s: &StepAt) -> Result<(), SpecError> {
    let name = s.name();
    let secrets = &s.step.secrets;
    for (i, secret) in secrets.iter().enumerate() {
        let (at, secret) = (secret.referenced, secret.value.as_str());
        let env_name = secret.starts_with(|c: char| c.is_ascii_uppercase() || c == '_')
            && secret
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !env_name || secret.starts_with("KILN_") {
            return refuse(
                at,
                format!(
                    "secret `{secret}` of step `{name}` must be an environment variable's name \
                     in capitals (A-Z, 0-9, _), not starting with KILN_"
                ),
            );
        }
        let in_env = s.step.env.0.iter().any(|(k, _)| k.value == secret);
        if secrets[..i].iter().any(|t| t.value == secret) || in_env {
            return refuse(
                at,
                format!(
                    "step `{name}` sets `{secret}` twice (in `secrets` and `env`, or twice in \
                     `secrets`)"
                ),
            );
        }
    }
    Ok(())
}

/// 1 to [`MAX_SHARDS`].
pub(super) fn shards(s: &StepAt) -> Result<(), SpecError> {
    if let Some(shards) = &s.step.shards
        && !(1..=i64::from(MAX_SHARDS)).contains(&shards.value.0)
    {
        return refuse(
            shards.referenced,
            format!(
                "step `{}` asks for {} shards; it may have 1 to {MAX_SHARDS}",
                s.name(),
                shards.value.0
            ),
        );
    }
    Ok(())
}

/// From a second to [`MAX_STEP_TIMEOUT`].
pub(super) fn timeout(s: &StepAt) -> Result<(), SpecError> {
    let Some(timeout) = &s.step.timeout else {
        return Ok(());
    };
    let asked = timeout.value.0;
    if asked > MAX_STEP_TIMEOUT || asked.is_zero() {
        return refuse(
            timeout.referenced,
            format!(
                "step `{}` asks for a timeout of {}; it may be from 1s to 24h",
                s.name(),
                humantime::format_duration(asked)
            ),
        );
    }
    Ok(())
}

/// 0 to [`MAX_RETRIES`].
pub(super) fn retry(s: &StepAt) -> Result<(), SpecError> {
    let Some(retry) = &s.step.retry else {
        return Ok(());
    };
    let (max, at) = RawRetry::max(retry);
    let name = s.name();
    if max < 0 {
        return refuse(
            at,
            format!("step `{name}` asks for {max} retries; retries cannot be negative"),
        );
    }
    if max > i64::from(MAX_RETRIES) {
        return refuse(
            at,
            format!("step `{name}` asks for {max} retries; the most is {MAX_RETRIES}"),
        );
    }
    Ok(())
}

/// Each sidecar: a host name, an image, a command that splits into words.
pub(super) fn services(s: &StepAt) -> Result<(), SpecError> {
    let step = s.name();
    for (key, service) in s.step.services() {
        let name = key.value.as_str();
        let dns_label = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.starts_with('-');
        if !dns_label {
            return refuse(
                key.referenced,
                format!(
                    "service name `{name}` of step `{step}` must be a host name: \
                     lowercase letters, digits and `-`"
                ),
            );
        }
        service_fields(step, name, &service.value)?;
    }
    Ok(())
}

/// A sidecar's `image` and `command`.
fn service_fields(step: &str, name: &str, service: &RawService) -> Result<(), SpecError> {
    if service.image.value.trim().is_empty() {
        return refuse(
            service.image.referenced,
            format!("service `{name}` of step `{step}` has no `image`"),
        );
    }
    if let Some(command) = &service.command
        && let [line] = command.items.as_slice()
        && shlex::split(&line.value).is_none()
    {
        return refuse(
            line.referenced,
            format!("service `{name}` of step `{step}` has a `command` with an unclosed quote"),
        );
    }
    Ok(())
}

/// Variable names a process can have, none of them Kiln's.
pub(super) fn env(s: &StepAt) -> Result<(), SpecError> {
    let name = s.name();
    for (variable, _) in &s.step.env.0 {
        let (at, variable) = (variable.referenced, variable.value.as_str());
        if variable.is_empty() || variable.contains('=') || variable.contains('\0') {
            return refuse(
                at,
                format!("step `{name}` sets `{variable}`, which is not a variable name"),
            );
        }
        if variable.starts_with("KILN_") {
            return refuse(
                at,
                format!("step `{name}` sets `{variable}`; names starting with KILN_ are Kiln's"),
            );
        }
    }
    Ok(())
}

/// Artifact patterns: relative, inside the checkout, and patterns.
pub(super) fn artifacts(s: &StepAt) -> Result<(), SpecError> {
    for pattern in &s.step.artifacts {
        let text = pattern.value.as_str();
        if let Err(why) = relative_path(text).and_then(|()| {
            path_glob(text)
                .map(drop)
                .map_err(|e| format!("is not a pattern: {}", e.kind()))
        }) {
            return refuse(
                pattern.referenced,
                format!("artifact `{text}` of step `{}` {why}", s.name()),
            );
        }
    }
    Ok(())
}

/// `cache`: some relative `paths` and a `key` template.
pub(super) fn cache(s: &StepAt) -> Result<(), SpecError> {
    let Some(cache) = &s.step.cache else {
        return Ok(());
    };
    let name = s.name();
    if cache.paths.value.is_empty() {
        return refuse(
            cache.paths.referenced,
            format!("the `cache` of step `{name}` has no `paths`"),
        );
    }
    for path in &cache.paths.value {
        if let Err(why) = relative_path(&path.value) {
            let text = &path.value;
            return refuse(
                path.referenced,
                format!("cache path `{text}` of step `{name}` {why}"),
            );
        }
    }
    let key = &cache.key;
    if key.value.trim().is_empty() {
        return refuse(
            key.referenced,
            format!("the `cache` of step `{name}` has an empty `key`"),
        );
    }
    if let Err(why) = crate::template::check(&key.value, &CACHE_KEY_VARIABLES, true) {
        return refuse(
            key.referenced,
            format!("the cache key of step `{name}`: {why}"),
        );
    }
    Ok(())
}

/// `when`'s variables are named as variables may be, and its branch, tag, variable and path
/// patterns compile.
pub(super) fn when(s: &StepAt) -> Result<(), SpecError> {
    let when = &s.step.when;
    let vars = when.vars.iter().flat_map(|v| &v.0);
    for (name, _) in vars.clone() {
        if let Err(why) = crate::vars::check_name(&name.value) {
            return refuse(
                name.referenced,
                format!("step `{}` tests a variable in `when`: {why}", s.name()),
            );
        }
    }
    let refs = when.branch.iter().chain(&when.tag);
    let values = vars.map(|(_, patterns)| &patterns.value);
    let branches = refs.chain(values).flat_map(|p| &p.items);
    let paths = when.changes.iter().flat_map(|p| &p.items);
    let compiled = branches
        .map(|p| (p, branch_glob(&p.value)))
        .chain(paths.map(|p| (p, path_glob(&p.value))));
    for (pattern, compiled) in compiled {
        if let Err(error) = compiled {
            return refuse(
                pattern.referenced,
                format!(
                    "step `{}` has a bad pattern `{}` in `when`: {}",
                    s.name(),
                    pattern.value,
                    error.kind()
                ),
            );
        }
    }
    Ok(())
}

/// `environment`: a template of known variables that is not blank.
pub(super) fn environment(s: &StepAt) -> Result<(), SpecError> {
    let Some(environment) = &s.step.environment else {
        return Ok(());
    };
    let (at, text) = (environment.referenced, environment.value.as_str());
    if let Err(why) = crate::template::check(text, &ENVIRONMENT_VARIABLES, false) {
        return refuse(at, format!("the environment of step `{}`: {why}", s.name()));
    }
    if text.trim().is_empty() {
        return refuse(
            at,
            format!("step `{}` names an empty environment", s.name()),
        );
    }
    Ok(())
}

/// `resources`: pool names, each once.
pub(super) fn resources(s: &StepAt) -> Result<(), SpecError> {
    let resources = &s.step.resources;
    for (i, pool) in resources.iter().enumerate() {
        let twice = resources[..i].iter().any(|p| p.value == pool.value);
        if !crate::command::is_name(&pool.value) || twice {
            return refuse(
                pool.referenced,
                format!(
                    "step `{}`: resource `{}` must be a pool's name (letters, digits, \
                     `-`, `_`, `.`), listed once",
                    s.name(),
                    pool.value
                ),
            );
        }
    }
    Ok(())
}

/// `concurrency`: a group's name.
pub(super) fn concurrency(s: &StepAt) -> Result<(), SpecError> {
    match &s.step.concurrency {
        Some(group) if !crate::command::is_name(&group.value) => refuse(
            group.referenced,
            format!(
                "step `{}`: concurrency group `{}` must be a name (letters, digits, `-`, `_`, `.`)",
                s.name(),
                group.value
            ),
        ),
        _ => Ok(()),
    }
}

/// Capabilities are Linux's, by name, each once, for a container.
pub(super) fn capabilities(s: &StepAt) -> Result<(), SpecError> {
    let name = s.name();
    let capabilities = &s.step.capabilities;
    let docker_only = capabilities
        .first()
        .map(|c| (c.referenced, "capabilities"))
        .or_else(|| {
            s.step
                .read_only
                .as_ref()
                .map(|r| (r.referenced, "read_only"))
        });
    if let Some((at, field)) = docker_only
        && s.step.runner() == Runner::Shell
    {
        return refuse(
            at,
            format!("step `{name}` runs in the shell, where `{field}` means nothing; remove it"),
        );
    }
    for (i, capability) in capabilities.iter().enumerate() {
        let value = capability.value.as_str();
        if !CAPABILITIES.contains(&value) {
            return refuse(
                capability.referenced,
                format!(
                    "step `{name}`: `{value}` is not a Linux capability; name one without its \
                     `CAP_` prefix, e.g. `CHOWN` or `NET_BIND_SERVICE`"
                ),
            );
        }
        if capabilities[..i].iter().any(|c| c.value == value) {
            return refuse(
                capability.referenced,
                format!("step `{name}` lists the capability `{value}` twice"),
            );
        }
    }
    Ok(())
}

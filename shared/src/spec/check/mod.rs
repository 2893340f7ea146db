//! The rules a `.kiln.yml` must follow beyond its shape, one small function per rule or per
//! field group, each blaming the place of the value that breaks it. The checks run in the
//! order of [`STEP_CHECKS`], and the first broken rule is the error.
//!
//! - this module: the file as a whole (`steps`, `stages`, `images`) and shared predicates;
//! - [`fields`]: a step's own fields;
//! - [`links`]: what refers to other parts of the file (`stage`, `needs`, `on_stop`).

mod fields;
mod links;

use std::collections::{BTreeMap, BTreeSet};

use serde_saphyr::{Location, Spanned};

use super::IMAGE_ARG_VARIABLES;
use super::error::SpecError;
use super::raw::{RawImageSpec, RawSchedule, RawSpec, RawStep};

/// A refusal at `at`.
fn refuse(at: Location, message: String) -> Result<(), SpecError> {
    Err(SpecError::at(at, message))
}

/// The file, with its steps indexed by name for the checks that follow references.
struct File<'a> {
    spec: &'a RawSpec,
    steps: BTreeMap<&'a str, &'a RawStep>,
    /// The steps named by an `on_stop`.
    stops: BTreeSet<&'a str>,
}

impl File<'_> {
    /// The position of a step's stage in `stages`; 0 when it names none or an unknown one.
    fn stage_of(&self, step: &RawStep) -> usize {
        step.stage
            .as_ref()
            .and_then(|s| self.spec.stages.iter().position(|t| t.value == s.value))
            .unwrap_or(0)
    }
}

/// One step under check: its name and place, and the file it is in.
struct StepAt<'a> {
    file: &'a File<'a>,
    name: &'a Spanned<String>,
    step: &'a RawStep,
    /// Where the step's fields start: the place for a field that is missing.
    at: Location,
}

impl StepAt<'_> {
    fn name(&self) -> &str {
        &self.name.value
    }
}

/// A check of one step.
type StepCheck = fn(&StepAt) -> Result<(), SpecError>;

/// Every check of a step, in the order their errors take precedence.
const STEP_CHECKS: &[StepCheck] = &[
    fields::name,
    fields::run,
    links::stage,
    links::needs,
    fields::platforms,
    fields::image,
    fields::image_is_declared,
    fields::services_need_docker,
    fields::container_fields_need_docker,
    fields::secrets,
    fields::shards,
    fields::timeout,
    fields::retry,
    fields::services,
    fields::env,
    fields::artifacts,
    fields::cache,
    fields::when,
    fields::environment,
    fields::resources,
    fields::concurrency,
    fields::capabilities,
    links::needs_no_stop_step,
    links::on_stop,
];

/// Every rule of the file, in order; the first broken one is the error.
pub(super) fn check(spec: &RawSpec) -> Result<(), SpecError> {
    steps_not_empty(spec)?;
    stages(spec)?;
    for (name, image) in &spec.images.0 {
        image_spec(name, image)?;
    }
    for (name, schedule) in &spec.schedules.0 {
        schedule_spec(name, &schedule.value)?;
    }
    let entries = &spec.steps.value.0;
    let file = File {
        spec,
        steps: entries
            .iter()
            .map(|(name, step)| (name.value.as_str(), &step.value))
            .collect(),
        stops: entries
            .iter()
            .filter_map(|(_, step)| step.value.on_stop.as_ref())
            .map(|s| s.value.as_str())
            .collect(),
    };
    for (name, step) in entries {
        let at = StepAt {
            file: &file,
            name,
            step: &step.value,
            at: step.referenced,
        };
        STEP_CHECKS.iter().try_for_each(|check| check(&at))?;
    }
    Ok(())
}

/// A schedule's name is a name, its cron expression has five or six fields and its
/// variables are variables. Whether the expression and the time zone
/// are times is for the bot, which reads them.
fn schedule_spec(key: &Spanned<String>, schedule: &RawSchedule) -> Result<(), SpecError> {
    let name = &key.value;
    if !is_name(name) {
        return refuse(
            key.referenced,
            format!("schedule name `{name}` may only use letters, digits, `-` and `_`"),
        );
    }
    let cron = &schedule.cron;
    if !(5..=6).contains(&cron.value.split_whitespace().count()) {
        return refuse(
            cron.referenced,
            format!(
                "the cron expression `{}` of schedule `{name}` needs five fields (minute to \
                 day of week), or six with seconds first",
                cron.value
            ),
        );
    }
    if let Some(vars) = &schedule.vars
        && let Err(why) = crate::vars::check(&crate::spec::raw::plain_vars(&vars.value))
    {
        return refuse(vars.referenced, format!("schedule `{name}`: {why}"));
    }
    Ok(())
}

/// A file with no steps has nothing to run.
fn steps_not_empty(spec: &RawSpec) -> Result<(), SpecError> {
    if spec.steps.value.0.is_empty() {
        return refuse(
            spec.steps.referenced,
            "`steps` is empty: there is nothing to run".into(),
        );
    }
    Ok(())
}

/// Stage names are names, each listed once.
fn stages(spec: &RawSpec) -> Result<(), SpecError> {
    let mut seen = BTreeSet::new();
    for stage in &spec.stages {
        if !is_name(&stage.value) {
            return refuse(
                stage.referenced,
                format!(
                    "stage name `{}` may only use letters, digits, `-` and `_`",
                    stage.value
                ),
            );
        }
        if !seen.insert(stage.value.as_str()) {
            return refuse(
                stage.referenced,
                format!("stage `{}` is listed twice", stage.value),
            );
        }
    }
    Ok(())
}

/// An in-tree image: a lowercase name, paths inside the repository, build arguments that use
/// only known variables.
fn image_spec(key: &Spanned<String>, image: &Spanned<RawImageSpec>) -> Result<(), SpecError> {
    let (name, image) = (&key.value, &image.value);
    if !is_name(name) || name.chars().any(|c| c.is_ascii_uppercase()) {
        return refuse(
            key.referenced,
            format!("image name `{name}` may only use lowercase letters, digits, `-` and `_`"),
        );
    }
    for (what, path) in [
        ("context", Some(&image.context)),
        ("dockerfile", image.dockerfile.as_ref()),
    ] {
        if let Some(path) = path
            && let Err(why) = relative_path(&path.value)
        {
            let path_text = &path.value;
            return refuse(
                path.referenced,
                format!("the {what} `{path_text}` of image `{name}` {why}"),
            );
        }
    }
    for (arg, value) in &image.args.0 {
        if let Err(why) = crate::template::check(&value.value, &IMAGE_ARG_VARIABLES, false) {
            return refuse(
                value.referenced,
                format!("build argument `{}` of image `{name}`: {why}", arg.value),
            );
        }
    }
    Ok(())
}

/// Letters, digits, `-` and `_`: safe in Redis keys, container names and URLs.
fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
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

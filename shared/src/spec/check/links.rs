//! The checks of what a step names elsewhere in the file: its `stage`, the steps it `needs`,
//! and the step that stops its environment (`on_stop`). Each blames the name as written.

use super::{StepAt, refuse};
use crate::spec::error::SpecError;

/// `stage` is one of `stages`.
pub(super) fn stage(s: &StepAt) -> Result<(), SpecError> {
    let Some(stage) = &s.step.stage else {
        return Ok(());
    };
    let stages = &s.file.spec.stages;
    if stages.iter().any(|t| t.value == stage.value) {
        return Ok(());
    }
    let (name, value) = (s.name(), &stage.value);
    let message = if stages.is_empty() {
        format!("step `{name}` is in stage `{value}`, but the file lists no `stages`")
    } else {
        format!("step `{name}` is in stage `{value}`, which is not one of `stages`")
    };
    refuse(stage.referenced, message)
}

/// Each of `needs` is another step, in this stage or an earlier one.
pub(super) fn needs(s: &StepAt) -> Result<(), SpecError> {
    let name = s.name();
    for need in &s.step.needs {
        let (at, needed_name) = (need.referenced, need.value.as_str());
        let Some(needed) = s.file.steps.get(needed_name) else {
            return refuse(
                at,
                format!("step `{name}` needs `{needed_name}`, which is not a step"),
            );
        };
        if needed_name == name {
            return refuse(at, format!("step `{name}` needs itself"));
        }
        if s.file.stage_of(needed) > s.file.stage_of(s.step) {
            return refuse(
                at,
                format!("step `{name}` needs `{needed_name}`, which is in a later stage"),
            );
        }
    }
    Ok(())
}

/// A step that stops an environment runs alone, when its branch goes: nothing can need it.
pub(super) fn needs_no_stop_step(s: &StepAt) -> Result<(), SpecError> {
    let stop = s
        .step
        .needs
        .iter()
        .find(|n| s.file.stops.contains(n.value.as_str()));
    if let Some(need) = stop {
        return refuse(
            need.referenced,
            format!(
                "step `{}` needs `{}`, which stops an environment and runs only when \
                 its branch goes",
                s.name(),
                need.value
            ),
        );
    }
    Ok(())
}

/// `on_stop` names another step, one with no `environment` of its own and no `needs`, and
/// only a step with an `environment` has one.
pub(super) fn on_stop(s: &StepAt) -> Result<(), SpecError> {
    let Some(on_stop) = &s.step.on_stop else {
        return Ok(());
    };
    let (name, stop_name, at) = (s.name(), on_stop.value.as_str(), on_stop.referenced);
    if s.step.environment.is_none() {
        return refuse(
            at,
            format!("step `{name}` has an `on_stop` but no `environment` to stop"),
        );
    }
    let Some(stop) = s.file.steps.get(stop_name) else {
        return refuse(
            at,
            format!("the `on_stop` of step `{name}`, `{stop_name}`, is not a step"),
        );
    };
    if stop_name == name || stop.environment.is_some() {
        return refuse(
            at,
            format!(
                "the `on_stop` of step `{name}` must be another step, one with no `environment`"
            ),
        );
    }
    if !stop.needs.is_empty() {
        return refuse(
            at,
            format!("`{stop_name}` stops an environment and runs alone: it may not have `needs`"),
        );
    }
    Ok(())
}

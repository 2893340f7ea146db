//! The planner: a [`Spec`] becomes a [`Plan`], the task graph of one build.
//!
//! The plan is computed once, when the build is accepted, and stored with the build; the
//! scheduler then only walks it. Unknown `needs` and cycles are refused here, with the place
//! in `.kiln.yml` to fix.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::spec::{Spec, SpecError};

/// The platform label a task runs on when its step names none.
pub const DEFAULT_PLATFORM: &str = "linux-amd64";

/// One task of a build: what a worker needs to run it, and where it sits in the graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedTask {
    /// The step's name; unique in the build.
    pub name: String,
    /// The platform label whose queue the task goes to.
    pub platform: String,
    /// The container image.
    pub image: String,
    /// Shell commands, run in order; the first failure ends the task.
    pub commands: Vec<String>,
    /// Environment variables for the commands.
    pub env: BTreeMap<String, String>,
    /// Seconds the task may run before it is killed.
    pub timeout_secs: u64,
    /// Tasks that must pass before this one starts.
    pub needs: Vec<String>,
}

/// A build's task graph, its tasks in an order where every task comes after those it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub tasks: Vec<PlannedTask>,
}

impl Plan {
    /// Expands a spec into its task graph.
    pub fn from_spec(spec: &Spec) -> Result<Self, SpecError> {
        for (name, step) in &spec.steps {
            for need in &step.value.needs {
                if !spec.steps.contains_key(&need.value) {
                    return Err(SpecError::at(
                        need.referenced,
                        format!("step `{name}` needs `{}`, which is not a step", need.value),
                    ));
                }
                if need.value == *name {
                    return Err(SpecError::at(
                        need.referenced,
                        format!("step `{name}` needs itself"),
                    ));
                }
            }
        }

        // Kahn's algorithm; BTreeMap order keeps the plan stable for the same file.
        let mut remaining: BTreeMap<&str, usize> = spec
            .steps
            .iter()
            .map(|(name, step)| (name.as_str(), step.value.needs.len()))
            .collect();
        let mut tasks = Vec::with_capacity(spec.steps.len());
        while let Some(name) = remaining
            .iter()
            .find(|(_, pending)| **pending == 0)
            .map(|(name, _)| *name)
        {
            remaining.remove(name);
            let step = &spec.steps[name].value;
            for (other, pending) in remaining.iter_mut() {
                let needs = &spec.steps[*other].value.needs;
                *pending -= needs.iter().filter(|n| n.value == name).count();
            }
            tasks.push(PlannedTask {
                name: name.to_owned(),
                platform: DEFAULT_PLATFORM.to_owned(),
                image: step.image.clone(),
                commands: step.run.0.clone(),
                env: step.env.clone(),
                timeout_secs: step.timeout().as_secs().max(1),
                needs: step.needs.iter().map(|n| n.value.clone()).collect(),
            });
        }
        if let Some((name, _)) = remaining.first_key_value() {
            let step = &spec.steps[*name];
            let cycle: Vec<&str> = remaining.keys().copied().collect();
            return Err(SpecError::at(
                step.referenced,
                format!(
                    "the `needs` of these steps form a cycle: {}",
                    cycle.join(", ")
                ),
            ));
        }
        Ok(Self { tasks })
    }

    /// Parses a `.kiln.yml` and plans it.
    pub fn from_spec_text(text: &str) -> Result<Self, SpecError> {
        Self::from_spec(&Spec::parse(text)?)
    }

    /// The task called `name`.
    pub fn task(&self, name: &str) -> Option<&PlannedTask> {
        self.tasks.iter().find(|t| t.name == name)
    }

    /// Tasks that need nothing: they start as soon as the build is accepted.
    pub fn roots(&self) -> impl Iterator<Item = &PlannedTask> {
        self.tasks.iter().filter(|t| t.needs.is_empty())
    }

    /// Tasks that name `name` in their `needs`.
    pub fn dependents<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a PlannedTask> {
        self.tasks
            .iter()
            .filter(move |t| t.needs.iter().any(|n| n == name))
    }

    /// Every task that cannot run if `name` does not pass: its dependents, theirs, and so on.
    pub fn downstream_of<'a>(&'a self, name: &'a str) -> BTreeSet<&'a str> {
        let mut found = BTreeSet::new();
        let mut frontier = vec![name];
        while let Some(current) = frontier.pop() {
            for dependent in self.dependents(current) {
                if found.insert(dependent.name.as_str()) {
                    frontier.push(&dependent.name);
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(plan: &Plan) -> Vec<&str> {
        plan.tasks.iter().map(|t| t.name.as_str()).collect()
    }

    const DIAMOND: &str = "steps:
  test: { image: i, run: t, needs: [build] }
  lint: { image: i, run: l, needs: [build] }
  build: { image: i, run: b }
  ship: { image: i, run: s, needs: [test, lint] }
";

    #[test]
    fn orders_tasks_after_what_they_need() {
        let plan = Plan::from_spec_text(DIAMOND).expect("valid");
        assert_eq!(names(&plan), ["build", "lint", "test", "ship"]);
        assert_eq!(
            plan.roots().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["build"]
        );
        let ship = plan.task("ship").expect("ship");
        assert_eq!(ship.needs, ["test", "lint"]);
        assert_eq!(ship.platform, DEFAULT_PLATFORM);
        assert_eq!(
            plan.dependents("build")
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["lint", "test"]
        );
        assert_eq!(
            plan.downstream_of("build").into_iter().collect::<Vec<_>>(),
            ["lint", "ship", "test"]
        );
        assert!(plan.downstream_of("ship").is_empty());
    }

    #[test]
    fn refuses_bad_graphs_with_a_place() {
        let check = |text: &str, line: u64, column: u64, needle: &str| {
            let e = Plan::from_spec_text(text).expect_err("should be refused");
            assert_eq!((e.line, e.column), (line, column), "{e}");
            assert!(
                e.message.contains(needle),
                "`{}` should mention `{needle}`",
                e.message
            );
        };
        check(
            "steps:\n  a: { image: i, run: x, needs: [nope] }\n",
            2,
            34,
            "needs `nope`, which is not a step",
        );
        check(
            "steps:\n  a: { image: i, run: x, needs: [a] }\n",
            2,
            34,
            "needs itself",
        );
        check(
            "steps:\n  a: { image: i, run: x, needs: [b] }\n  b: { image: i, run: x, needs: [a] }\n  c: { image: i, run: x }\n",
            2,
            6,
            "cycle: a, b",
        );
    }
}

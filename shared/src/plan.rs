//! The planner: a [`Spec`] and what the build is about become a [`Plan`], the task graph of
//! one build.
//!
//! Each step becomes one task per platform and shard. A task needs every task of the steps
//! its step `needs`, and every task of the stage before its own: stages are edges like any
//! other, so the scheduler only ever walks a graph. The plan is computed once, when the build
//! is accepted, and stored with the build.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::build::TaskOutcome;
use crate::ident::CommitId;
use crate::platform::Platform;
use crate::spec::{Cache, ImageSpec, Network, Pull, Retry, Runner, Spec, SpecError, Step, Trigger};
use crate::trigger::TriggerKind;

/// A sidecar container of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedService {
    /// Its host name on the task's network.
    pub name: String,
    pub image: String,
    /// Replaces the image's command when not empty.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// An image the worker builds from the checkout before running the task in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedImage {
    /// Its name in `images:`.
    pub name: String,
    #[serde(flatten)]
    pub spec: ImageSpec,
}

/// One task of a build: what a worker needs to run it, and where it sits in the graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedTask {
    /// Unique in the build: the step's name, then `.platform` when the step runs on several
    /// and `.shard` when it has several, e.g. `unit.linux-arm64.2`.
    pub name: String,
    /// The step the task comes from.
    #[serde(default)]
    pub step: String,
    /// The platform whose queue the task goes to.
    #[serde(default)]
    pub platform: Platform,
    #[serde(default)]
    pub runner: Runner,
    /// The container image (Docker runner), when it comes from elsewhere.
    #[serde(default)]
    pub image: Option<String>,
    /// The image to build in-tree and run in (Docker runner).
    #[serde(default)]
    pub build_image: Option<PlannedImage>,
    /// When its images are pulled (Docker runner).
    #[serde(default)]
    pub pull: Pull,
    /// What its container may reach (Docker runner).
    #[serde(default)]
    pub network: Network,
    /// Shell commands, run in order; the first failure ends the task.
    pub commands: Vec<String>,
    /// Environment variables for the commands, `KILN_SHARD` and `KILN_SHARDS` included.
    pub env: BTreeMap<String, String>,
    /// Seconds the task may run before it is killed.
    pub timeout_secs: u64,
    /// Tasks that must pass before this one starts.
    pub needs: Vec<String>,
    #[serde(default)]
    pub services: Vec<PlannedService>,
    #[serde(default)]
    pub retry: Retry,
    #[serde(default)]
    pub allow_failure: bool,
    /// Patterns of the files kept for the tasks that need this one.
    #[serde(default)]
    pub artifacts: Vec<String>,
    #[serde(default)]
    pub cache: Option<Cache>,
    /// Names of the secrets its commands get.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// The environment it deploys, its name rendered for the build's branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The step that stops that environment when the branch goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_stop: Option<String>,
    /// Pools a slot of each of which the task holds while it runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// The concurrency group whose one slot the task holds while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<String>,
    /// Run by hand only: not run in this build, nor is anything that needs it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manual: bool,
    /// Linux capabilities its container gets (none by default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// Its container's root file system is read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// The pool a concurrency group is: one slot, named apart from the configuration's pools and
/// from other repositories' groups.
pub fn group_pool(repo: &str, group: &str) -> String {
    format!("{GROUP_POOL}{}:{group}", repo.to_ascii_lowercase())
}

/// Whether pool `name` is a concurrency group's ([`group_pool`]).
pub fn is_group_pool(name: &str) -> bool {
    name.starts_with(GROUP_POOL)
}

/// How a concurrency group's pool is named first: no configured pool's name has a `:`.
const GROUP_POOL: &str = "group:";

impl PlannedTask {
    /// The pools a slot of each of which the task holds while it runs, in `repo`: its
    /// resources' and its concurrency group's ([`group_pool`]).
    pub fn pools(&self, repo: &str) -> Vec<String> {
        let group = self.concurrency.iter().map(|g| group_pool(repo, g));
        self.resources.iter().cloned().chain(group).collect()
    }

    /// Whether `name` names it: its own name, or its step's (all the step's tasks).
    pub fn is_named(&self, name: &str) -> bool {
        self.name == name || self.step == name
    }

    /// Whether the task holds any slot while it runs.
    pub fn holds_slots(&self) -> bool {
        !self.resources.is_empty() || self.concurrency.is_some()
    }

    /// Whether attempt `attempt`, which ended with `outcome`, earns another attempt.
    pub fn retries(&self, outcome: &TaskOutcome, attempt: u32) -> bool {
        let worth_it = match outcome {
            TaskOutcome::Errored { .. } => true,
            TaskOutcome::Failed { exit_code } => self.retry.exit_codes.contains(exit_code),
            TaskOutcome::Passed | TaskOutcome::TimedOut { .. } | TaskOutcome::Unrunnable { .. } => {
                false
            }
        };
        worth_it && attempt <= self.retry.max
    }

    /// Whether the tasks that need this one may run after it ended with `outcome`.
    pub fn unblocks(&self, outcome: &TaskOutcome) -> bool {
        *outcome == TaskOutcome::Passed || self.allow_failure
    }
}

/// A build's task graph, its tasks in an order where every task comes after those it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub tasks: Vec<PlannedTask>,
    /// For a request built as its merge result: the target branch's commit its head is
    /// merged with, as it was when the build was planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_with: Option<CommitId>,
}

impl Plan {
    /// Expands a spec into the task graph of a build of `trigger`.
    pub fn from_spec(spec: &Spec, trigger: &Trigger) -> Result<Self, SpecError> {
        let included = included_steps(spec, trigger);
        let steps = step_order(spec, &included)?;

        let mut tasks: Vec<PlannedTask> = Vec::new();
        let mut tasks_of: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut stage_tasks: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for name in steps {
            let step = &spec.steps[name].value;
            let stage = spec.stage_of(step);
            let mut needs: Vec<String> = step
                .needs
                .iter()
                .filter_map(|n| tasks_of.get(n.value.as_str()))
                .flatten()
                .cloned()
                .collect();
            if let Some((_, before)) = stage_tasks.range(..stage).next_back() {
                for task in before {
                    if !needs.contains(task) {
                        needs.push(task.clone());
                    }
                }
            }
            let expanded = expand(spec, name, step, &needs, trigger.branch);
            let names: Vec<String> = expanded.iter().map(|t| t.name.clone()).collect();
            stage_tasks.entry(stage).or_default().extend(names.clone());
            tasks_of.insert(name, names);
            tasks.extend(expanded);
        }
        Ok(Self {
            tasks,
            merged_with: None,
        })
    }

    /// Parses a `.kiln.yml` and plans it for `trigger`.
    pub fn from_spec_text(text: &str, trigger: &Trigger) -> Result<Self, SpecError> {
        Self::from_spec(&Spec::parse(text)?, trigger)
    }

    /// The task called `name`.
    pub fn task(&self, name: &str) -> Option<&PlannedTask> {
        self.tasks.iter().find(|t| t.name == name)
    }

    /// The tasks in columns, as a graph of them is drawn: a task's column is one past the
    /// furthest of those it needs, so each needs only tasks of columns before its own.
    /// Tasks are in the plan's order in each column (a plan lists a task after what it needs).
    pub fn columns(&self) -> Vec<Vec<&PlannedTask>> {
        let mut column_of: BTreeMap<&str, usize> = BTreeMap::new();
        let mut columns: Vec<Vec<&PlannedTask>> = Vec::new();
        for task in &self.tasks {
            let column = task
                .needs
                .iter()
                .filter_map(|n| column_of.get(n.as_str()))
                .map(|c| c + 1)
                .max()
                .unwrap_or(0);
            column_of.insert(&task.name, column);
            if columns.len() <= column {
                columns.resize_with(column + 1, Vec::new);
            }
            columns[column].push(task);
        }
        columns
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

    /// The tasks this build does not run: those run by hand, and what needs them.
    pub fn held(&self) -> BTreeSet<&str> {
        let mut held = BTreeSet::new();
        for task in self.tasks.iter().filter(|t| t.manual) {
            held.insert(task.name.as_str());
            held.extend(self.downstream_of(&task.name));
        }
        held
    }

    /// Runs the tasks named `name` (a task's name, or a step's: all its tasks) though they
    /// are run by hand: the build was asked to run them.
    pub fn run_by_hand(&mut self, name: &str) {
        for task in self
            .tasks
            .iter_mut()
            .filter(|t| t.name == name || t.step == name)
        {
            task.manual = false;
        }
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

/// The steps whose `when` holds for `trigger` and whose needs are all included too.
fn included_steps<'a>(spec: &'a Spec, trigger: &Trigger) -> BTreeSet<&'a str> {
    let stops = spec.stop_steps();
    let stopping = trigger.kind == TriggerKind::Stop;
    let mut included: BTreeSet<&str> = spec
        .steps
        .iter()
        .filter(|(name, step)| {
            stops.contains(name.as_str()) == stopping && step.value.when.holds(trigger)
        })
        .map(|(name, _)| name.as_str())
        .collect();
    loop {
        let left_out: Vec<&str> = included
            .iter()
            .copied()
            .filter(|name| {
                spec.steps[*name]
                    .value
                    .needs
                    .iter()
                    .any(|n| !included.contains(n.value.as_str()))
            })
            .collect();
        if left_out.is_empty() {
            return included;
        }
        for name in left_out {
            included.remove(name);
        }
    }
}

/// Included steps, stage by stage, each after the steps it needs (Kahn's algorithm; name
/// order breaks ties, so the same file always gives the same plan).
fn step_order<'a>(spec: &'a Spec, included: &BTreeSet<&'a str>) -> Result<Vec<&'a str>, SpecError> {
    let mut remaining: BTreeMap<(usize, &str), usize> = included
        .iter()
        .map(|name| {
            let step = &spec.steps[*name].value;
            ((spec.stage_of(step), *name), step.needs.len())
        })
        .collect();
    let mut order = Vec::with_capacity(remaining.len());
    while let Some(key) = remaining
        .iter()
        .find(|(_, pending)| **pending == 0)
        .map(|(key, _)| *key)
    {
        remaining.remove(&key);
        order.push(key.1);
        for ((_, other), pending) in remaining.iter_mut() {
            let needs = &spec.steps[*other].value.needs;
            *pending -= needs.iter().filter(|n| n.value == key.1).count();
        }
    }
    match remaining.keys().next() {
        None => Ok(order),
        Some((_, first)) => {
            let cycle: Vec<&str> = remaining.keys().map(|(_, name)| *name).collect();
            Err(SpecError::at(
                spec.steps[*first].referenced,
                format!(
                    "the `needs` of these steps form a cycle: {}",
                    cycle.join(", ")
                ),
            ))
        }
    }
}

/// One step's tasks: one per platform and shard.
fn expand(
    spec: &Spec,
    name: &str,
    step: &Step,
    needs: &[String],
    branch: &str,
) -> Vec<PlannedTask> {
    let platforms: Vec<Platform> = spec.platforms(step).collect();
    let services: Vec<PlannedService> = step
        .services
        .iter()
        .map(|(service, s)| PlannedService {
            name: service.clone(),
            image: s.image.clone(),
            // Checked when the spec was read.
            command: s.command_words().unwrap_or_default(),
            env: s.env.clone(),
        })
        .collect();
    let environment = step.environment.as_deref().map(|text| {
        let vars = BTreeMap::from([
            ("branch", branch.to_owned()),
            ("branch_slug", crate::template::branch_slug(branch)),
        ]);
        // Checked when the spec was read: only these variables, no hashes.
        crate::template::render(text, &vars, &mut |_| Err(String::new()))
            .unwrap_or_else(|_| text.to_owned())
    });
    let mut tasks = Vec::with_capacity(platforms.len() * step.shards as usize);
    for platform in &platforms {
        for shard in 1..=step.shards {
            let mut task_name = name.to_owned();
            if platforms.len() > 1 {
                task_name.push('.');
                task_name.push_str(platform.label());
            }
            if step.shards > 1 {
                task_name.push_str(&format!(".{shard}"));
            }
            let mut env = step.env.clone();
            env.insert("KILN_SHARD".into(), shard.to_string());
            env.insert("KILN_SHARDS".into(), step.shards.to_string());
            env.insert("KILN_PLATFORM".into(), platform.as_str().into());
            let image = step.image.as_ref().and_then(|i| i.on(*platform));
            let in_tree = image.and_then(|i| spec.images.get_key_value(i));
            tasks.push(PlannedTask {
                name: task_name,
                step: name.to_owned(),
                platform: *platform,
                runner: step.runner,
                image: image.filter(|_| in_tree.is_none()).map(str::to_owned),
                build_image: in_tree.map(|(name, image)| PlannedImage {
                    name: name.clone(),
                    spec: image.value.clone(),
                }),
                pull: step.pull,
                network: step.network,
                commands: step.run.0.clone(),
                env,
                timeout_secs: step.timeout().as_secs().max(1),
                needs: needs.to_vec(),
                services: services.clone(),
                retry: step.retry.clone(),
                allow_failure: step.allow_failure,
                artifacts: step.artifacts.clone(),
                cache: step.cache.clone(),
                secrets: step.secrets.clone(),
                environment: environment.clone(),
                on_stop: step.on_stop.as_ref().map(|s| s.value.clone()),
                resources: step.resources.clone(),
                concurrency: step.concurrency.clone(),
                manual: step.when.manual,
                capabilities: step.capabilities.clone(),
                read_only: step.read_only,
            });
        }
    }
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trigger::TriggerKind;
    use crate::walk::Walk;

    fn push(branch: &str) -> Trigger<'_> {
        Trigger {
            branch,
            kind: TriggerKind::Push,
            changed_paths: None,
            vars: &crate::vars::NONE,
        }
    }

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
    fn columns_put_each_task_after_what_it_needs() {
        let plan = Plan::from_spec_text(DIAMOND, &push("master")).expect("valid");
        let columns: Vec<Vec<&str>> = plan
            .columns()
            .iter()
            .map(|c| c.iter().map(|t| t.name.as_str()).collect())
            .collect();
        assert_eq!(columns, [vec!["build"], vec!["lint", "test"], vec!["ship"]]);
    }

    #[test]
    fn stop_steps_run_only_when_the_branch_goes() {
        let text = "steps:
  deploy: { image: i, run: d, environment: 'review/{{ branch_slug }}', on_stop: teardown }
  test: { image: i, run: t }
  teardown: { image: i, run: s }
";
        let plan = Plan::from_spec_text(text, &push("feature/x")).expect("valid");
        assert_eq!(names(&plan), ["deploy", "test"]);
        assert_eq!(
            plan.task("deploy").and_then(|t| t.environment.as_deref()),
            Some(format!("review/{}", crate::template::branch_slug("feature/x")).as_str())
        );
        assert_eq!(
            plan.task("deploy").and_then(|t| t.on_stop.as_deref()),
            Some("teardown")
        );
        assert_eq!(
            plan.task("test").and_then(|t| t.environment.as_deref()),
            None
        );
        let stop = Trigger {
            kind: TriggerKind::Stop,
            ..push("feature/x")
        };
        let plan = Plan::from_spec_text(text, &stop).expect("valid");
        assert_eq!(names(&plan), ["teardown"]);
    }

    #[test]
    fn the_readme_example_plans() {
        let readme = include_str!("../../README.md");
        let section = &readme[readme
            .find("## The pipeline")
            .expect("the pipeline section")..];
        let start = section.find("```yaml\n").expect("a yaml example") + "```yaml\n".len();
        let example = &section[start..start + section[start..].find("```").expect("its end")];
        let plan = Plan::from_spec_text(example, &push("master")).expect("the example is valid");
        assert!(
            names(&plan).contains(&"unit.linux-arm64.2"),
            "{:?}",
            names(&plan)
        );
        let install = plan.task("install-test").expect("install-test");
        assert_eq!(
            install.capabilities,
            ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID"]
        );
        assert!(plan.task("lint").expect("lint").read_only);
        let package = plan.task("package").expect("package");
        assert!(package.image.is_none(), "in-tree: built by the worker");
        assert_eq!(
            package.build_image.as_ref().map(|i| i.name.as_str()),
            Some("build")
        );
    }

    #[test]
    fn orders_tasks_after_what_they_need() {
        let plan = Plan::from_spec_text(DIAMOND, &push("master")).expect("valid");
        assert_eq!(names(&plan), ["build", "lint", "test", "ship"]);
        assert_eq!(
            plan.roots().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["build"]
        );
        let ship = plan.task("ship").expect("ship");
        assert_eq!(ship.needs, ["test", "lint"]);
        assert_eq!(ship.platform, Platform::LinuxAmd64);
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
            let e = Plan::from_spec_text(text, &push("master")).expect_err("should be refused");
            assert_eq!((e.line, e.column), (line, column), "{e}");
            assert!(
                e.message.contains(needle),
                "`{}` should mention `{needle}`",
                e.message
            );
        };
        check(
            "steps:\n  a: { image: i, run: x, needs: [b] }\n  b: { image: i, run: x, needs: [a] }\n  c: { image: i, run: x }\n",
            2,
            6,
            "cycle: a, b",
        );
    }

    const PIPELINE: &str = "stages: [acceptance, test, package]
steps:
  smoke: { stage: acceptance, image: i, run: s }
  lint: { stage: acceptance, image: i, run: l, allow_failure: true }
  unit:
    stage: test
    image: { linux/amd64: i, linux/arm64: i-arm }
    platforms: [linux/amd64, linux/arm64]
    shards: 2
    services: { db: { image: r, command: \"sh -c 'echo up; serve --port 7000'\" } }
    env: { MODE: fast }
    run: t
  win: { stage: test, platforms: [windows/amd64], runner: shell, run: w }
  package: { stage: package, image: i, run: p, needs: [unit], retry: { max: 1, exit_codes: [75] } }
  release: { stage: package, image: i, run: r, when: { branch: master } }
  notes: { stage: package, image: i, run: n, needs: [release] }
";

    #[test]
    fn expands_stages_matrix_and_shards() {
        let plan = Plan::from_spec_text(PIPELINE, &push("master")).expect("valid");
        assert_eq!(
            names(&plan),
            [
                "lint",
                "smoke",
                "unit.linux-amd64.1",
                "unit.linux-amd64.2",
                "unit.linux-arm64.1",
                "unit.linux-arm64.2",
                "win",
                "package",
                "release",
                "notes",
            ]
        );
        let unit = plan.task("unit.linux-arm64.2").expect("unit");
        assert_eq!(unit.step, "unit");
        assert_eq!(unit.platform, Platform::LinuxArm64);
        assert_eq!(unit.image.as_deref(), Some("i-arm"));
        assert_eq!(
            unit.needs,
            ["lint", "smoke"],
            "a stage waits for the one before"
        );
        assert_eq!(unit.env["KILN_SHARD"], "2");
        assert_eq!(unit.env["KILN_SHARDS"], "2");
        assert_eq!(unit.env["KILN_PLATFORM"], "linux/arm64");
        assert_eq!(unit.env["MODE"], "fast");
        assert_eq!(unit.services[0].name, "db");
        assert_eq!(
            unit.services[0].command,
            ["sh", "-c", "echo up; serve --port 7000"],
            "a line is split as a shell would"
        );
        let win = plan.task("win").expect("win");
        assert_eq!((win.runner, win.image.as_deref()), (Runner::Shell, None));
        let package = plan.task("package").expect("package");
        assert_eq!(
            package.needs,
            [
                "unit.linux-amd64.1",
                "unit.linux-amd64.2",
                "unit.linux-arm64.1",
                "unit.linux-arm64.2",
                "win"
            ]
        );
        assert_eq!(plan.task("notes").expect("notes").needs[0], "release");
        assert!(plan.downstream_of("smoke").contains("notes"));
    }

    #[test]
    fn in_tree_images_artifacts_and_caches_reach_the_tasks() {
        let plan = Plan::from_spec_text(
            "images:\n  build: { context: ci, args: { A: b } }\nsteps:\n  a:\n    image: build\n    artifacts: [dist/*]\n    cache: { key: k, paths: [target] }\n    run: x\n  b: { image: kiln/busybox:latest, needs: [a], run: y }\n",
            &push("master"),
        )
        .expect("valid");
        let a = plan.task("a").expect("a");
        assert_eq!(a.image, None);
        let image = a.build_image.as_ref().expect("built in-tree");
        assert_eq!(
            (image.name.as_str(), image.spec.context.as_str()),
            ("build", "ci")
        );
        assert_eq!(image.spec.dockerfile, "Dockerfile");
        assert_eq!(a.artifacts, ["dist/*"]);
        assert_eq!(
            a.cache.as_ref().map(|c| c.paths.clone()),
            Some(vec!["target".to_owned()])
        );
        let b = plan.task("b").expect("b");
        assert_eq!(
            (b.image.as_deref(), b.build_image.is_none()),
            (Some("kiln/busybox:latest"), true)
        );
    }

    #[test]
    fn when_leaves_out_steps_and_what_needs_them() {
        let plan = Plan::from_spec_text(PIPELINE, &push("feature/x")).expect("valid");
        assert!(plan.task("release").is_none());
        assert!(
            plan.task("notes").is_none(),
            "needs a step that was left out"
        );
        assert!(plan.task("package").is_some());
    }

    #[test]
    fn a_step_run_by_hand_is_held_with_what_needs_it_until_it_is_asked_for() {
        let text = "steps:\n  unit: { image: i, run: x }\n  \
                    deploy: { image: i, run: x, needs: [unit], when: { manual: true } }\n  \
                    smoke: { image: i, run: x, needs: [deploy] }\n  \
                    lint: { image: i, run: x }\n";
        let mut plan = Plan::from_spec_text(text, &push("master")).expect("valid");
        assert_eq!(names(&plan), ["lint", "unit", "deploy", "smoke"]);
        let held: Vec<&str> = plan.held().into_iter().collect();
        assert_eq!(held, ["deploy", "smoke"]);
        plan.run_by_hand("deploy");
        assert!(plan.held().is_empty());
    }

    #[test]
    fn retry_and_allow_failure_rules() {
        let plan = Plan::from_spec_text(PIPELINE, &push("master")).expect("valid");
        let package = plan.task("package").expect("package");
        let errored = TaskOutcome::Errored {
            reason: "docker".into(),
        };
        assert!(package.retries(&errored, 1));
        assert!(!package.retries(&errored, 2), "max 1 retry");
        assert!(package.retries(&TaskOutcome::Failed { exit_code: 75 }, 1));
        assert!(!package.retries(&TaskOutcome::Failed { exit_code: 1 }, 1));
        assert!(!package.retries(&TaskOutcome::TimedOut { after_secs: 1 }, 1));
        assert!(!package.retries(&TaskOutcome::Passed, 1));
        let missing = TaskOutcome::Unrunnable {
            reason: "no such image".into(),
        };
        assert!(!package.retries(&missing, 1), "it would fail alike");
        let smoke = plan.task("smoke").expect("smoke");
        assert!(
            smoke.retries(&errored, 2) && !smoke.retries(&errored, 3),
            "default: 2 retries"
        );
        let lint = plan.task("lint").expect("lint");
        assert!(lint.unblocks(&TaskOutcome::Failed { exit_code: 1 }));
        assert!(!smoke.unblocks(&TaskOutcome::Failed { exit_code: 1 }));
    }

    #[test]
    fn a_failure_stops_its_dependents_and_later_stages_but_not_its_neighbours() {
        let plan = Plan::from_spec_text(PIPELINE, &push("master")).expect("valid");
        let mut walk = Walk::new(&plan);
        let lint = walk.finish("lint", true);
        assert!(lint.ready.is_empty(), "smoke has not ended yet");
        let smoke = walk.finish("smoke", true);
        assert_eq!(smoke.ready.len(), 5, "all of stage test");
        assert_eq!(
            walk.finish("smoke", true),
            Default::default(),
            "counted once"
        );
        let failed = walk.finish("unit.linux-amd64.1", false);
        let skipped: Vec<&str> = failed.skipped.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(skipped, ["notes", "package", "release"]);
        for other in [
            "unit.linux-amd64.2",
            "unit.linux-arm64.1",
            "unit.linux-arm64.2",
        ] {
            assert!(!walk.is_done());
            assert!(walk.finish(other, true).ready.is_empty());
        }
        assert!(walk.finish("win", true).ready.is_empty());
        assert!(walk.is_done());
    }

    proptest::proptest! {
        /// Any acyclic spec plans into a graph where every task comes after what it needs,
        /// and a walk that passes every task reaches them all.
        #[test]
        fn plans_are_ordered_and_walkable(
            edges in proptest::collection::vec(proptest::collection::vec(proptest::bool::ANY, 8), 8),
            stages in proptest::collection::vec(0usize..3, 8),
            shards in proptest::collection::vec(1u32..3, 8),
        ) {
            let mut text = String::from("stages: [s0, s1, s2]\nsteps:\n");
            for i in 0..8 {
                let needs: Vec<String> = (0..i)
                    .filter(|j| edges[i][*j] && stages[*j] <= stages[i])
                    .map(|j| format!("t{j}"))
                    .collect();
                text.push_str(&format!(
                    "  t{i}: {{ image: i, run: x, stage: s{}, shards: {}, needs: [{}] }}\n",
                    stages[i], shards[i], needs.join(", ")
                ));
            }
            let plan = Plan::from_spec_text(&text, &push("master")).expect("valid");
            let mut seen = BTreeSet::new();
            for task in &plan.tasks {
                for need in &task.needs {
                    proptest::prop_assert!(seen.contains(need.as_str()), "{} before {}", need, task.name);
                }
                seen.insert(task.name.as_str());
            }
            let mut walk = Walk::new(&plan);
            let mut ready: Vec<&PlannedTask> = plan.roots().collect();
            let mut ran = 0;
            while let Some(task) = ready.pop() {
                ran += 1;
                ready.extend(walk.finish(&task.name, true).ready);
            }
            proptest::prop_assert_eq!(ran, plan.tasks.len());
            proptest::prop_assert!(walk.is_done());
        }
    }
}

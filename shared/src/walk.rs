//! A walk through a plan's graph in memory: which tasks may start, and which will never run.
//!
//! The bot keeps the same bookkeeping in Redis (so that it survives restarts and is shared by
//! several bots); `kiln-worker run` walks a plan on one machine with this. Both follow the
//! rule of [`PlannedTask::unblocks`]: a task's dependents run if it passed or may fail.

use std::collections::{BTreeMap, BTreeSet};

use crate::plan::{Plan, PlannedTask};

/// What one task's end changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advance<'a> {
    /// Tasks whose needs have now all been met.
    pub ready: Vec<&'a PlannedTask>,
    /// Tasks that will never run, because something they need did not pass.
    pub skipped: Vec<&'a PlannedTask>,
}

/// Where a walk through a plan stands.
#[derive(Debug, Clone)]
pub struct Walk<'a> {
    plan: &'a Plan,
    /// For each task not yet started, how many of its needs have not been met.
    pending: BTreeMap<&'a str, usize>,
    /// Tasks accounted for: ended or skipped.
    settled: BTreeSet<&'a str>,
}

impl<'a> Walk<'a> {
    /// A walk at the start; [`Plan::roots`] are ready.
    pub fn new(plan: &'a Plan) -> Self {
        Self {
            plan,
            pending: plan
                .tasks
                .iter()
                .map(|t| (t.name.as_str(), t.needs.len()))
                .collect(),
            settled: BTreeSet::new(),
        }
    }

    /// Accounts for the end of `task`, once; `unblocks` says whether its dependents may run.
    pub fn finish(&mut self, task: &str, unblocks: bool) -> Advance<'a> {
        let plan = self.plan;
        let mut advance = Advance::default();
        let Some(task) = plan.task(task) else {
            return advance;
        };
        if !self.settled.insert(&task.name) {
            return advance;
        }
        if unblocks {
            for dependent in plan.dependents(&task.name) {
                let pending = self.pending.entry(&dependent.name).or_default();
                *pending = pending.saturating_sub(1);
                if *pending == 0 && !self.settled.contains(dependent.name.as_str()) {
                    advance.ready.push(dependent);
                }
            }
        } else {
            for name in plan.downstream_of(&task.name) {
                if self.settled.insert(name)
                    && let Some(skipped) = plan.task(name)
                {
                    advance.skipped.push(skipped);
                }
            }
        }
        advance
    }

    /// Whether every task is accounted for.
    pub fn is_done(&self) -> bool {
        self.settled.len() == self.plan.tasks.len()
    }
}

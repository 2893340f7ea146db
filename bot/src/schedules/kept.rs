//! The schedules read from each repository's `.kiln.yml` on its default branch, kept for
//! the parts of the bot that show or run them.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use kiln_shared::ident::RepoName;

use crate::config::Schedule;

/// Each repository's schedules as its file last read says, by repository.
#[derive(Debug, Clone, Default)]
pub struct FileSchedules(Arc<RwLock<BTreeMap<RepoName, Vec<Schedule>>>>);

impl FileSchedules {
    /// `repo`'s, as last read; none before the first read.
    pub fn of(&self, repo: &RepoName) -> Vec<Schedule> {
        let kept = self.0.read().expect("not poisoned");
        kept.get(repo).cloned().unwrap_or_default()
    }

    /// Keeps what `repo`'s file says now.
    pub fn set(&self, repo: &RepoName, schedules: Vec<Schedule>) {
        let mut kept = self.0.write().expect("not poisoned");
        kept.insert(repo.clone(), schedules);
    }
}

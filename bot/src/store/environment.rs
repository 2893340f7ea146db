//! What review environments keep: for each branch, the environments its builds deployed and
//! what deployed them, taken away at once when the branch goes.

use std::collections::HashMap;

use kiln_shared::build::BuildId;
use kiln_shared::ident::{BranchName, CommitId, RepoName};
use redis::{AsyncCommands, RedisResult};
use serde::{Deserialize, Serialize};

use super::Store;

/// How long a branch's going is remembered: longer than any build of it runs.
const GONE_MEMORY: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 60 * 60);

/// What deployed an environment last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployed {
    pub commit: CommitId,
    pub clone_url: String,
    pub build: BuildId,
}

impl Store {
    /// Notes that `repo`'s `branch` went when `newest` was the newest build.
    pub async fn branch_gone(
        &self,
        repo: &RepoName,
        branch: &BranchName,
        newest: BuildId,
    ) -> RedisResult<()> {
        self.conn
            .clone()
            .set_ex(
                self.keys.branch_gone(repo, branch),
                newest.0,
                GONE_MEMORY.as_secs(),
            )
            .await
    }

    /// Whether `build` of `repo`'s `branch` started before the branch last went.
    pub async fn built_before_gone(
        &self,
        repo: &RepoName,
        branch: &BranchName,
        build: BuildId,
    ) -> RedisResult<bool> {
        let newest: Option<u64> = self
            .conn
            .clone()
            .get(self.keys.branch_gone(repo, branch))
            .await?;
        Ok(newest.is_some_and(|newest| build.0 <= newest))
    }

    /// Records that `build` deployed `environment` from `repo`'s `branch`.
    pub async fn deployed(
        &self,
        repo: &RepoName,
        branch: &BranchName,
        environment: &str,
        deployed: &Deployed,
    ) -> RedisResult<()> {
        let json = serde_json::to_string(deployed).unwrap_or_default();
        let _: usize = self
            .conn
            .clone()
            .hset(self.keys.environments(repo, branch), environment, json)
            .await?;
        Ok(())
    }

    /// Takes away the environments `repo`'s `branch` deployed, all at once: a second caller
    /// (a redelivered webhook) finds none.
    pub async fn take_environments(
        &self,
        repo: &RepoName,
        branch: &BranchName,
    ) -> RedisResult<Vec<(String, Deployed)>> {
        let key = self.keys.environments(repo, branch);
        let (all, _): (HashMap<String, String>, usize) = redis::pipe()
            .atomic()
            .hgetall(&key)
            .del(&key)
            .query_async(&mut self.conn.clone())
            .await?;
        let mut taken: Vec<(String, Deployed)> = all
            .into_iter()
            .filter_map(|(name, json)| Some((name, serde_json::from_str(&json).ok()?)))
            .collect();
        taken.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(taken)
    }

    /// Puts back environments taken by [`Store::take_environments`] whose stop could not
    /// start.
    pub async fn restore_environments(
        &self,
        repo: &RepoName,
        branch: &BranchName,
        environments: &[(String, Deployed)],
    ) -> RedisResult<()> {
        for (name, deployed) in environments {
            self.deployed(repo, branch, name, deployed).await?;
        }
        Ok(())
    }
}

//! What review environments keep: for each branch, the environments its builds deployed and
//! what deployed them, taken away at once when the branch goes.

use std::collections::HashMap;

use kiln_shared::build::BuildId;
use redis::{AsyncCommands, RedisResult};
use serde::{Deserialize, Serialize};

use super::Store;

/// What deployed an environment last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployed {
    pub commit: String,
    pub clone_url: String,
    pub build: BuildId,
}

impl Store {
    /// Records that `build` deployed `environment` from `repo`'s `branch`.
    pub async fn deployed(
        &self,
        repo: &str,
        branch: &str,
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
        repo: &str,
        branch: &str,
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
        repo: &str,
        branch: &str,
        environments: &[(String, Deployed)],
    ) -> RedisResult<()> {
        for (name, deployed) in environments {
            self.deployed(repo, branch, name, deployed).await?;
        }
        Ok(())
    }
}

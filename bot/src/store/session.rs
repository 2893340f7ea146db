//! Signed-in readers of the web pages: each session a record that expires by itself, and the
//! key every bot of the installation signs their cookies with.

use std::collections::BTreeSet;
use std::time::Duration;

use redis::{AsyncCommands, RedisResult};
use serde::{Deserialize, Serialize};

use super::{Store, secret};

/// Someone signed in to the web pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Who they are, as pages name them.
    pub name: String,
    /// What permissions know them as: `operator:<name>`, or `github:<user id>` and
    /// `gitlab:<user id>` (the forge's number for them, which a rename does not change).
    pub id: String,
    /// An operator, who reads and may do everything.
    pub operator: bool,
    /// For an operator, their token's mark (signed with the cookie key): the session holds
    /// only while a configured operator still has that token.
    #[serde(default)]
    pub token_mark: Option<String>,
    /// The repositories (`owner/name`, lower case) their forge lets them read.
    #[serde(default)]
    pub repos: BTreeSet<String>,
}

impl Store {
    /// The installation's key for signing cookies: made at random by the first bot that asks,
    /// the same for every bot after; read once.
    pub async fn web_key(&self) -> RedisResult<Vec<u8>> {
        self.web_key
            .get_or_try_init(|| self.shared_web_key())
            .await
            .cloned()
    }

    async fn shared_web_key(&self) -> RedisResult<Vec<u8>> {
        const WHAT: &str = "the cookie key";
        let key = self.keys().web_key();
        let mut conn = self.conn.clone();
        let _: bool = conn.set_nx(&key, secret::fresh(WHAT)?).await?;
        let kept: String = conn.get(&key).await?;
        secret::decode(&kept, WHAT)
    }

    /// Keeps `session` under `id` for `lasts`.
    pub async fn open_session(
        &self,
        id: &str,
        session: &Session,
        lasts: Duration,
    ) -> RedisResult<()> {
        let json = serde_json::to_string(session).expect("a session serializes");
        self.conn
            .clone()
            .set_ex(self.keys().web_session(id), json, lasts.as_secs().max(1))
            .await
    }

    /// The session `id`, unless it expired, was closed, or does not decode.
    pub async fn session(&self, id: &str) -> RedisResult<Option<Session>> {
        let json: Option<String> = self.conn.clone().get(self.keys().web_session(id)).await?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// Ends the session `id`.
    pub async fn close_session(&self, id: &str) -> RedisResult<()> {
        self.conn.clone().del(self.keys().web_session(id)).await
    }
}

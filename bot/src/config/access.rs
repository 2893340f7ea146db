//! `[access]`: who may read Kiln's web pages, logs, artifacts and build records.
//!
//! Public (the default), everyone who reaches the bot reads everything. Not public, a reader
//! signs in: an operator with their token, or anyone with a GitHub or GitLab account through
//! the forge's OAuth, who then reads the repositories the forge lets them read.

use secrecy::SecretString;
use serde::Deserialize;

use super::secret;

/// The installation's rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    /// Whether pages, logs and artifacts are readable without signing in.
    #[serde(default = "public_by_default")]
    pub public: bool,
    /// Sign-in with GitHub (an OAuth app of the organisation).
    #[serde(default)]
    pub github: Option<OAuthApp>,
    /// Sign-in with GitLab (an OAuth application with the `read_api` scope).
    #[serde(default)]
    pub gitlab: Option<OAuthApp>,
    /// How long a sign-in lasts.
    #[serde(default = "default_session", with = "humantime_serde")]
    pub session: std::time::Duration,
}

impl Default for Access {
    fn default() -> Self {
        Self {
            public: true,
            github: None,
            gitlab: None,
            session: default_session(),
        }
    }
}

fn public_by_default() -> bool {
    true
}

fn default_session() -> std::time::Duration {
    std::time::Duration::from_secs(12 * 3600)
}

/// An OAuth application registered on a forge; its callback is
/// `<public_url>/login/<forge>/callback`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthApp {
    pub client_id: String,
    #[serde(deserialize_with = "secret::secret")]
    pub client_secret: SecretString,
    /// Where people sign in: `https://github.com`, `https://gitlab.com`, an instance of
    /// their own.
    #[serde(default)]
    pub url: Option<String>,
    /// The forge's API, when it is not where `url` says (`https://api.github.com`).
    #[serde(default)]
    pub api_url: Option<String>,
}

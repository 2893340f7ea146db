//! Container registries: the credentials Kiln has for each (read from a Docker
//! `config.json`), and the installation's registry as the store of artifacts and caches
//! ([`oci`]). Credentials are never logged: their `Debug` names the user only.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

pub mod catalog;
pub mod oci;

/// A user and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Docker's `config.json`, the part Kiln reads.
#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The credentials of the Docker `config.json` at `path`, by registry host (`host[:port]`;
/// `https://index.docker.io/v1/` is `index.docker.io`).
pub fn load(path: &Path) -> Result<BTreeMap<String, Credentials>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read registry credentials {}: {e}", path.display()))?;
    parse(&text).map_err(|e| {
        format!(
            "registry credentials {} are not a Docker config.json: {e}",
            path.display()
        )
    })
}

/// The credentials of a Docker `config.json`'s text, by registry host.
pub fn parse(text: &str) -> Result<BTreeMap<String, Credentials>, String> {
    let config: DockerConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut credentials = BTreeMap::new();
    for (server, entry) in config.auths {
        let pair = match (entry.username, entry.password, entry.auth) {
            (Some(username), Some(password), _) => Credentials { username, password },
            (_, _, Some(auth)) => {
                let decoded = STANDARD
                    .decode(auth.trim())
                    .ok()
                    .and_then(|d| String::from_utf8(d).ok())
                    .ok_or_else(|| {
                        format!("the `auth` of {server} is not base64 of user:password")
                    })?;
                let (username, password) = decoded
                    .split_once(':')
                    .ok_or_else(|| format!("the `auth` of {server} is not user:password"))?;
                Credentials {
                    username: username.to_owned(),
                    password: password.to_owned(),
                }
            }
            _ => {
                return Err(format!(
                    "{server} has neither `auth` nor a user and password"
                ));
            }
        };
        credentials.insert(host_of_server(&server).to_owned(), pair);
    }
    Ok(credentials)
}

/// `https://index.docker.io/v1/` → `index.docker.io`; `127.0.0.1:5000` stays.
fn host_of_server(server: &str) -> &str {
    let rest = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))
        .unwrap_or(server);
    rest.split('/').next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_a_docker_config_by_host() {
        let auth = STANDARD.encode("kiln:s3cret:with-colon");
        let text = format!(
            r#"{{"auths": {{
                "127.0.0.1:5000": {{"auth": "{auth}"}},
                "https://index.docker.io/v1/": {{"username": "hub", "password": "pw"}}
            }}, "credsStore": "ignored"}}"#
        );
        let found = parse(&text).expect("parsed");
        let local = &found["127.0.0.1:5000"];
        assert_eq!(
            (local.username.as_str(), local.password.as_str()),
            ("kiln", "s3cret:with-colon")
        );
        assert_eq!(found["index.docker.io"].username, "hub");
        let shown = format!("{found:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("\"pw\""),
            "{shown}"
        );
    }

    #[test]
    fn a_broken_config_is_refused_with_the_reason() {
        assert!(parse("{").is_err());
        let error = parse(r#"{"auths": {"r:1": {"auth": "bm9jb2xvbg=="}}}"#).expect_err("no colon");
        assert!(error.contains("r:1"), "{error}");
    }
}

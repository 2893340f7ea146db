//! Registries: where step images come from, where in-tree images go so every worker of an
//! installation can use them, and the credentials for each.
//!
//! Credentials are read from a Docker `config.json` (`{"auths": {"<host>": {"auth":
//! "<base64 user:password>"}}}`) and given to the engine with each pull, push and registry
//! query; they never appear in a log line, an event or Redis (this type's `Debug` names the
//! hosts only).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bollard::auth::DockerCredentials;
use serde::Deserialize;

/// The registry an image reference with no host is pulled from.
pub const DOCKER_HUB: &str = "docker.io";

/// The installation's registry and the credentials of every registry the worker may use.
#[derive(Clone, Default)]
pub struct Registries {
    /// `host[:port]` of the registry in-tree images are pushed to; none keeps them on the
    /// worker's own engine (one host, or `kiln-worker run`).
    home: Option<String>,
    /// By registry host.
    credentials: BTreeMap<String, Credentials>,
}

#[derive(Clone)]
struct Credentials {
    username: String,
    password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Registries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registries")
            .field("home", &self.home)
            .field(
                "credentials_for",
                &self.credentials.keys().collect::<Vec<_>>(),
            )
            .finish()
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

impl Registries {
    /// `home` as the installation's registry, with the credentials in the Docker
    /// `config.json` at `auth_file`, if one is named.
    pub fn load(home: Option<String>, auth_file: Option<&Path>) -> Result<Self, String> {
        let mut registries = Self {
            home: home.filter(|h| !h.is_empty()),
            credentials: BTreeMap::new(),
        };
        if let Some(path) = auth_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read registry credentials {}: {e}", path.display()))?;
            registries.credentials = parse(&text).map_err(|e| {
                format!(
                    "registry credentials {} are not a Docker config.json: {e}",
                    path.display()
                )
            })?;
        }
        Ok(registries)
    }

    /// The registry in-tree images are pushed to, if the installation has one.
    pub fn home(&self) -> Option<&str> {
        self.home.as_deref()
    }

    /// The user and password the worker has for `registry` (`host[:port]`), if any.
    pub fn basic(&self, registry: &str) -> Option<(String, String)> {
        let found = self.credentials.get(registry)?;
        Some((found.username.clone(), found.password.clone()))
    }

    /// The credentials for the registry of `image`, if the worker has some.
    pub fn credentials(&self, image: &str) -> Option<DockerCredentials> {
        let host = registry_of(image);
        let found = self.credentials.get(host).or_else(|| {
            (host == DOCKER_HUB)
                .then(|| self.credentials.get("index.docker.io"))
                .flatten()
        })?;
        Some(DockerCredentials {
            username: Some(found.username.clone()),
            password: Some(found.password.clone()),
            serveraddress: Some(host.to_owned()),
            ..Default::default()
        })
    }
}

fn parse(text: &str) -> Result<BTreeMap<String, Credentials>, String> {
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

/// The registry an image reference names: its first path component when that looks like a
/// host (has a `.` or a `:`, or is `localhost`), Docker Hub otherwise.
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => DOCKER_HUB,
    }
}

/// Why a registry would not give an image, in a word people act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The registry has no such image or tag: the pipeline names something that is not there.
    NotFound,
    /// The registry wants credentials the worker lacks, or refuses those it has.
    Unauthorised,
    /// The registry could not be reached, or failed: another try may do better.
    Unreachable,
}

impl Refused {
    /// What the engine's message says happened.
    pub fn of(message: &str) -> Self {
        let text = message.to_ascii_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
        if has(&[
            "unauthorized",
            "authentication required",
            "no basic auth credentials",
            "access denied",
            "denied:",
        ]) {
            Self::Unauthorised
        } else if has(&[
            "manifest unknown",
            "not found",
            "repository does not exist",
            "name unknown",
        ]) {
            Self::NotFound
        } else {
            Self::Unreachable
        }
    }

    /// Whether another attempt could change the answer.
    pub fn may_pass_later(self) -> bool {
        self == Self::Unreachable
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotFound => "not found",
            Self::Unauthorised => "unauthorised",
            Self::Unreachable => "unreachable",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_name_their_registry() {
        assert_eq!(registry_of("busybox"), DOCKER_HUB);
        assert_eq!(registry_of("library/node:20"), DOCKER_HUB);
        assert_eq!(registry_of("127.0.0.1:5000/kiln/x:1"), "127.0.0.1:5000");
        assert_eq!(
            registry_of("registry.example.com/a/b"),
            "registry.example.com"
        );
        assert_eq!(registry_of("localhost/a"), "localhost");
    }

    #[test]
    fn credentials_come_from_a_docker_config_by_host() {
        let auth = STANDARD.encode("kiln:s3cret:with-colon");
        let text = format!(
            r#"{{"auths": {{
                "127.0.0.1:5000": {{"auth": "{auth}"}},
                "https://index.docker.io/v1/": {{"username": "hub", "password": "pw"}}
            }}, "credsStore": "ignored"}}"#
        );
        let registries = Registries {
            home: None,
            credentials: parse(&text).expect("parsed"),
        };
        let local = registries
            .credentials("127.0.0.1:5000/kiln/x:1")
            .expect("local");
        assert_eq!(local.username.as_deref(), Some("kiln"));
        assert_eq!(local.password.as_deref(), Some("s3cret:with-colon"));
        let hub = registries.credentials("node:20").expect("hub");
        assert_eq!(hub.username.as_deref(), Some("hub"));
        assert!(registries.credentials("other.example.com/x").is_none());
        let shown = format!("{registries:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("pw\""),
            "{shown}"
        );
    }

    #[test]
    fn a_broken_config_is_refused_with_the_reason() {
        assert!(parse("{").is_err());
        let error = parse(r#"{"auths": {"r:1": {"auth": "bm9jb2xvbg=="}}}"#).expect_err("no colon");
        assert!(error.contains("r:1"), "{error}");
    }

    #[test]
    fn engine_messages_say_why_an_image_was_refused() {
        let cases = [
            (
                "manifest for 127.0.0.1:5117/p/b:nope not found: manifest unknown: manifest unknown",
                Refused::NotFound,
            ),
            (
                "pull access denied for nope, repository does not exist or may require 'docker login'",
                Refused::Unauthorised,
            ),
            (
                "unauthorized: authentication required",
                Refused::Unauthorised,
            ),
            (
                "Head \"http://127.0.0.1:5117/v2/p/b/manifests/1\": no basic auth credentials",
                Refused::Unauthorised,
            ),
            (
                "Get \"http://127.0.0.1:5999/v2/\": dial tcp 127.0.0.1:5999: connect: connection refused",
                Refused::Unreachable,
            ),
        ];
        for (message, expect) in cases {
            assert_eq!(Refused::of(message), expect, "{message}");
        }
    }
}

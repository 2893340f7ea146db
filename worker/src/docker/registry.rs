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

use bollard::auth::DockerCredentials;
use kiln_io::registry::oci::Oci;
use kiln_io::registry::{self, Credentials};

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

impl Registries {
    /// `home` as the installation's registry, with the credentials in the Docker
    /// `config.json` at `auth_file`, if one is named.
    pub fn load(home: Option<String>, auth_file: Option<&Path>) -> Result<Self, String> {
        Ok(Self {
            home: home.filter(|h| !h.is_empty()),
            credentials: match auth_file {
                Some(path) => registry::load(path)?,
                None => BTreeMap::new(),
            },
        })
    }

    /// The registry in-tree images are pushed to, if the installation has one.
    pub fn home(&self) -> Option<&str> {
        self.home.as_deref()
    }

    /// The installation's registry as a store of artifacts and caches, if it has one.
    pub fn store(&self) -> Option<Oci> {
        let home = self.home()?;
        Some(Oci::new(home, self.basic(home)))
    }

    /// The credentials the worker has for `registry` (`host[:port]`), if any.
    pub fn basic(&self, registry: &str) -> Option<&Credentials> {
        self.credentials.get(registry)
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
    fn docker_hub_credentials_serve_images_with_no_host() {
        let text = r#"{"auths": {"https://index.docker.io/v1/": {"username": "hub", "password": "pw"},
            "127.0.0.1:5000": {"username": "kiln", "password": "s3cret"}}}"#;
        let registries = Registries {
            home: None,
            credentials: registry::parse(text).expect("parsed"),
        };
        let hub = registries.credentials("node:20").expect("hub");
        assert_eq!(hub.username.as_deref(), Some("hub"));
        let local = registries
            .credentials("127.0.0.1:5000/kiln/x:1")
            .expect("local");
        assert_eq!(local.password.as_deref(), Some("s3cret"));
        assert!(registries.credentials("other.example.com/x").is_none());
        let shown = format!("{registries:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
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

//! Secrets in the configuration file: in clear (`token = "…"`), or read when the file is
//! read from a file (`token = { file = "/run/secrets/github-token" }`, as Swarm and
//! Kubernetes mount secrets; a trailing newline is dropped) or from the environment
//! (`token = { env = "KILN_GITHUB_TOKEN" }`).

use std::path::PathBuf;

use secrecy::SecretString;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// How a secret is given.
#[derive(Deserialize)]
#[serde(untagged, deny_unknown_fields)]
enum Given {
    Clear(String),
    File { file: PathBuf },
    Env { env: String },
}

impl Given {
    fn read(self) -> Result<SecretString, String> {
        match self {
            Self::Clear(value) => Ok(value.into()),
            Self::File { file } => std::fs::read_to_string(&file)
                .map(|text| text.trim_end_matches(['\n', '\r']).to_owned().into())
                .map_err(|e| format!("cannot read the secret file {}: {e}", file.display())),
            Self::Env { env } => std::env::var(&env)
                .map(SecretString::from)
                .map_err(|_| format!("the environment has no {env} for a secret")),
        }
    }
}

/// A secret, given in one of the three ways.
pub fn secret<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SecretString, D::Error> {
    Given::deserialize(deserializer)
        .map_err(|_| D::Error::custom("a secret is a string, { file = \"…\" } or { env = \"…\" }"))?
        .read()
        .map_err(D::Error::custom)
}

/// An optional secret (with `#[serde(default)]`).
pub fn optional<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SecretString>, D::Error> {
    secret(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        #[serde(deserialize_with = "secret")]
        token: SecretString,
    }

    fn token(toml_text: &str) -> Result<String, String> {
        toml::from_str::<Holder>(toml_text)
            .map(|h| h.token.expose_secret().to_owned())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_secret_is_given_in_clear_in_a_file_or_in_the_environment() {
        assert_eq!(token("token = \"abc\"").as_deref(), Ok("abc"));

        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("token");
        std::fs::write(&file, "from-a-file\n").expect("write");
        let given = format!("token = {{ file = \"{}\" }}", file.display());
        assert_eq!(token(&given).as_deref(), Ok("from-a-file"));

        let path = std::env::var("PATH").expect("PATH is set");
        assert_eq!(token("token = { env = \"PATH\" }"), Ok(path));

        let missing =
            token("token = { env = \"KILN_NO_SUCH_VARIABLE_AT_ALL\" }").expect_err("missing");
        assert!(
            missing.contains("KILN_NO_SUCH_VARIABLE_AT_ALL"),
            "{missing}"
        );
        let unreadable =
            token("token = { file = \"/nonexistent/token\" }").expect_err("unreadable");
        assert!(unreadable.contains("/nonexistent/token"), "{unreadable}");
        let wrong = token("token = { path = \"x\" }").expect_err("wrong");
        assert!(wrong.contains("{ file = "), "{wrong}");
    }
}

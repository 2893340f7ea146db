//! The registry `deploy/dev/services` runs on loopback, with authentication, for the tests of
//! images pulled and pushed by workers.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::TEST_IMAGE;
use crate::services::START_THEM;

/// The registry workers are given: its address and a Docker `config.json` with credentials.
#[derive(Debug, Clone)]
pub struct TestRegistry {
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// A Docker `config.json` whose `auths` name the registry.
    pub auth: PathBuf,
}

impl TestRegistry {
    /// The registry from `KILN_TEST_REGISTRY` and `KILN_TEST_REGISTRY_AUTH`, checked: a
    /// missing one fails the test, it never skips it.
    pub fn require() -> Self {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: {START_THEM}"))
        };
        let registry = Self {
            addr: var("KILN_TEST_REGISTRY"),
            auth: var("KILN_TEST_REGISTRY_AUTH").into(),
        };
        assert!(
            registry.auth.is_file(),
            "{} is missing: {START_THEM}",
            registry.auth.display()
        );
        let answer = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
            ])
            .arg(format!("http://{}/v2/", registry.addr))
            .output()
            .expect("curl runs");
        assert_eq!(
            String::from_utf8_lossy(&answer.stdout),
            "401",
            "the registry at {} does not answer as one with authentication: {START_THEM}",
            registry.addr
        );
        registry
    }

    /// The same registry with a wrong password, in a `config.json` written under `dir`;
    /// returns the file and the password, which must never be shown anywhere.
    pub fn with_wrong_password(&self, dir: &Path) -> (Self, String) {
        let password = format!("wrong-{}", crate::services::unique_prefix());
        let auth = STANDARD.encode(format!("kiln:{password}"));
        let file = dir.join("wrong-config.json");
        let text = format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, self.addr);
        std::fs::write(&file, text).expect("write the config");
        let registry = Self {
            addr: self.addr.clone(),
            auth: file,
        };
        (registry, password)
    }

    /// Puts the test image into the registry as `<registry>/<path>` and leaves this engine
    /// without that name, so only a pull can get it; returns the name.
    pub fn push_test_image(&self, path: &str) -> String {
        let name = format!("{}/{path}", self.addr);
        docker(&["tag", TEST_IMAGE, &name], None);
        docker(&["push", "--quiet", &name], Some(&self.auth));
        docker(&["rmi", &name], None);
        name
    }
}

/// Runs the docker CLI, with the credentials of `auth` (a `config.json`) if given.
pub fn docker(args: &[&str], auth: Option<&Path>) {
    let mut command = Command::new("docker");
    if let Some(config) = auth.and_then(Path::parent) {
        command.arg("--config").arg(config);
    }
    let output = command.args(args).output().expect("docker runs");
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

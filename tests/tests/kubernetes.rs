//! The Kubernetes manifests (`deploy/kubernetes/`), checked offline: no cluster can run
//! here. Every resource validates against Kubernetes' schemas and the operators' CRDs
//! (`deploy/kubernetes/validate`), a wrong one is refused, and the manifests agree with Kiln
//! itself: the queue KEDA watches is the one workers consume, the worker is given time to
//! drain, and the bot's configuration is one `kiln-bot --check-config` accepts.

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_shared::platform::Platform;
use kiln_shared::routing::Topology;
use kiln_tests::processes;
use serde_json::Value;

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// Runs the validator on `dir`: whether it passed, and what it printed.
fn validate(dir: &Path) -> (bool, String) {
    let python = std::env::var("KILN_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("KILN_TEST_PYTHON is not set: start the services with `deploy/dev/services`")
    });
    let output = Command::new(python)
        .arg(manifests().join("validate"))
        .arg(dir)
        .output()
        .expect("the validator runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

/// The resources of one manifest file.
fn resources(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(manifests().join(file)).expect("manifest");
    text.split("\n---\n")
        .map(|doc| serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("{file}: {e}")))
        .collect()
}

/// The resource of `kind` in `file`.
fn resource(file: &str, kind: &str) -> Value {
    resources(file)
        .into_iter()
        .find(|r| r["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {file}"))
}

/// The value of environment variable `name` of `container`.
fn env<'a>(container: &'a Value, name: &str) -> &'a str {
    container["env"]
        .as_array()
        .and_then(|env| env.iter().find(|e| e["name"] == name))
        .and_then(|e| e["value"].as_str())
        .unwrap_or_else(|| panic!("no {name} in {container}"))
}

#[test]
fn every_manifest_validates() {
    let (passed, printed) = validate(&manifests());
    assert!(passed, "{printed}");
    assert!(printed.contains(" 0 failed"), "{printed}");
    for kind in [
        "Deployment/kiln-bot",
        "RabbitmqCluster/kiln-rabbitmq",
        "ScaledObject/",
    ] {
        assert!(printed.contains(kind), "{kind} was not checked: {printed}");
    }
}

#[test]
fn a_wrong_manifest_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(manifests()).expect("manifests") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&path, dir.path().join(path.file_name().expect("name"))).expect("copy");
        }
    }
    let edit = |file: &str, from: &str, to: &str| {
        let path = dir.path().join(file);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains(from), "{file} has no {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
    };
    // A wrong type in a built-in resource, and a misspelt field in an operator's.
    edit("bot-deployment.yaml", "replicas: 2", "replicas: two");
    edit(
        "worker-scaledobject.yaml",
        "minReplicaCount: 1",
        "minReplicas: 1",
    );
    let (passed, printed) = validate(dir.path());
    assert!(!passed, "{printed}");
    assert!(
        printed.contains("Deployment/kiln-bot: spec.replicas"),
        "{printed}"
    );
    assert!(
        printed.contains("ScaledObject/kiln-worker-linux-amd64") && printed.contains("minReplicas"),
        "{printed}"
    );
    assert!(printed.contains(" 2 failed"), "{printed}");
}

#[test]
fn the_autoscaler_watches_the_workers_queue_and_waits_out_their_drain() {
    let scaled = resource("worker-scaledobject.yaml", "ScaledObject");
    // Both of the platform's job queues, each read alone.
    let triggers = scaled["spec"]["triggers"].as_array().expect("triggers");
    assert!(
        triggers.iter().all(|t| t["type"] == "rabbitmq"),
        "{triggers:?}"
    );
    let mut watched: Vec<&str> = triggers
        .iter()
        .filter_map(|t| t["metadata"]["queueName"].as_str())
        .collect();
    watched.sort_unstable();
    let queues = Topology::new("kiln").jobs_queues(Platform::LinuxAmd64);
    let mut queues: Vec<&str> = queues.iter().map(|(_, q)| q.as_str()).collect();
    queues.sort_unstable();
    assert_eq!(watched, queues);

    let deployment = resource("worker-deployment.yaml", "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let worker = &pod["containers"][0];
    assert_eq!(env(worker, "KILN_PLATFORM"), "linux/amd64");
    let drain = humantime::parse_duration(env(worker, "KILN_DRAIN_TIMEOUT"))
        .expect("a duration")
        .as_secs();
    // Drained, the worker exits within 20 s.
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("a grace");
    assert!(grace >= drain + 20, "grace {grace} s, drain {drain} s");
    let cooldown = scaled["spec"]["cooldownPeriod"]
        .as_u64()
        .expect("a cool-down");
    assert!(cooldown > drain, "cool-down {cooldown} s, drain {drain} s");
    // One replica per worker's slots of waiting jobs.
    for trigger in triggers {
        assert_eq!(trigger["metadata"]["value"], env(worker, "KILN_SLOTS"));
    }
}

#[test]
fn the_bots_configuration_is_one_kiln_accepts() {
    let config = resource("bot-config.yaml", "ConfigMap");
    let toml = config["data"]["kiln-bot.toml"]
        .as_str()
        .expect("kiln-bot.toml");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("kiln-bot.toml");
    std::fs::write(&path, toml).expect("write");
    // The secrets it reads from the environment, as the Deployment gives them.
    let deployment = resource("bot-deployment.yaml", "Deployment");
    let bot = &deployment["spec"]["template"]["spec"]["containers"][0];
    let from_secrets: Vec<&str> = bot["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter(|e| e["valueFrom"]["secretKeyRef"]["name"] == "kiln-bot")
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(!from_secrets.is_empty());
    let output = Command::new(processes::binary("kiln-bot"))
        .arg("--check-config")
        .arg(&path)
        .envs(
            from_secrets
                .iter()
                .map(|name| (*name, "a-secret-value-as-long-as-a-token")),
        )
        .output()
        .expect("kiln-bot runs");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(printed.contains("acme/api"), "{printed}");
    assert_eq!(env(bot, "KILN_CONFIG"), "/etc/kiln/kiln-bot.toml");
}

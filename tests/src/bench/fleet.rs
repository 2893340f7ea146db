//! The fleet's figures: how long a second host takes to get an in-tree image another host
//! pushed, beside a plain pull of the same image from the same registry; and artifact
//! upload and download through the registry, beside the registry's raw blob transfer.

use std::process::Command;
use std::time::Instant;

use bollard::Docker;
use bollard::query_parameters::{CreateImageOptionsBuilder, RemoveImageOptionsBuilder};
use futures_util::StreamExt;
use kiln_io::registry::oci::{ARTIFACTS, Oci};
use kiln_worker::docker::{DockerRunner, Registries};

use super::{Figure, Options, Target, millis};
use crate::TEST_IMAGE;
use crate::registry::{TestRegistry, docker};

/// The bytes of the image layer and of the artifact moved: enough to time a transfer.
const PAYLOAD_BYTES: usize = 16 * 1024 * 1024;

/// The second engine, from `KILN_TEST_DOCKER2_HOST`.
fn second_engine() -> String {
    std::env::var("KILN_TEST_DOCKER2_HOST")
        .expect("KILN_TEST_DOCKER2_HOST: start the services with deploy/dev/services")
}

/// A file of `PAYLOAD_BYTES` no registry has seen, in `dir`.
fn payload(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut bytes = vec![0u8; PAYLOAD_BYTES];
    let seed = crate::services::unique_prefix();
    for (i, byte) in bytes.iter_mut().enumerate() {
        // Unique per run (the seed, and the salt at its start): no registry has it yet.
        *byte = (i as u8).wrapping_mul(31) ^ seed.as_bytes()[i % seed.len()];
    }
    let salt = format!("{seed}-{name}");
    bytes[..salt.len()].copy_from_slice(salt.as_bytes());
    std::fs::write(&path, bytes).expect("write the payload");
    path
}

/// `registry_image_pull` (Kiln on the second engine getting an in-tree image the first one
/// pushed) beside `floor_registry_pull` (a plain pull of it), in milliseconds.
pub async fn image_pull(options: Options) -> [Figure; 2] {
    let registry = TestRegistry::require();
    let engine = second_engine();
    let second = Docker::connect_with_host(&engine).expect("the second engine");
    let registries =
        Registries::load(Some(registry.addr.clone()), Some(&registry.auth)).expect("credentials");
    let runner = DockerRunner::connect("kiln-bench", registries.clone(), Some(&engine))
        .await
        .expect("the second engine answers");
    let credentials = registries
        .basic(&registry.addr)
        .map(|c| bollard::auth::DockerCredentials {
            username: Some(c.username.clone()),
            password: Some(c.password.clone()),
            serveraddress: Some(registry.addr.clone()),
            ..Default::default()
        });
    let (mut kiln, mut floor) = (Vec::new(), Vec::new());
    for run in 0..options.count(3, 1) {
        // An in-tree image built and pushed by the first engine, as a worker there would.
        let dir = tempfile::tempdir().expect("temp dir");
        payload(dir.path(), "layer");
        std::fs::write(
            dir.path().join("Dockerfile"),
            format!("FROM {TEST_IMAGE}\nCOPY layer /layer\n"),
        )
        .expect("Dockerfile");
        let local = format!(
            "kiln/bench/fleet/image:{}-{run}",
            crate::services::unique_prefix()
        );
        let shared = format!("{}/{local}", registry.addr);
        let context = dir.path().to_str().expect("utf-8");
        build(&local, context);
        docker(&["tag", &local, &shared], None);
        docker(&["push", "--quiet", &shared], Some(&registry.auth));

        // The floor: a plain pull of the same image into the second engine.
        let begun = Instant::now();
        let pull = CreateImageOptionsBuilder::new().from_image(&shared).build();
        let mut stream = second.create_image(Some(pull), None, credentials.clone());
        while let Some(step) = stream.next().await {
            step.expect("the plain pull");
        }
        floor.push(millis(begun.elapsed()));
        remove(&second, &shared).await;

        // Kiln: what a worker on the second engine does for an image it lacks.
        let begun = Instant::now();
        let here = runner.have_in_tree(&local).await.expect("Kiln's pull");
        kiln.push(millis(begun.elapsed()));
        assert!(here, "the registry has the image");

        for name in [&local, &shared] {
            remove(&second, name).await;
        }
        docker(&["rmi", &local, &shared], None);
    }
    let floor = Figure::new("floor_registry_pull", "ms", floor);
    let pulled = Figure::new("registry_image_pull", "ms", kiln);
    let pulled = pulled.against(&floor, Some(Target::AtMostTimes(1.2)));
    [floor, pulled]
}

/// Artifact upload and download through the registry (Kiln's store), and the registry's raw
/// blob upload and download of files the same size (curl), in MiB per second.
pub async fn artifact_transfer(options: Options) -> [Figure; 4] {
    let registry = TestRegistry::require();
    let registries =
        Registries::load(Some(registry.addr.clone()), Some(&registry.auth)).expect("credentials");
    let credentials = registries
        .basic(&registry.addr)
        .expect("credentials for the registry");
    let oci = Oci::new(&registry.addr, Some(credentials));
    let user = format!("{}:{}", credentials.username, credentials.password);
    let repo = "bench/fleet";
    let path = kiln_shared::template::registry_path(repo, ARTIFACTS);
    let mib = PAYLOAD_BYTES as f64 / (1024.0 * 1024.0);
    let rate = |ms: f64| mib / (ms / 1000.0);
    let (mut up, mut down, mut raw_up, mut raw_down) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..options.count(3, 1) {
        let dir = tempfile::tempdir().expect("temp dir");

        // The floor: POST an upload, PUT the bytes with their digest, GET them back.
        let file = payload(dir.path(), "raw");
        let (digest, _) = kiln_io::digest::sha256_file(&file).expect("digest");
        let begun = Instant::now();
        let location = curl(
            &user,
            &[
                "-X",
                "POST",
                "-D",
                "-",
                "-o",
                "/dev/null",
                &format!("http://{}/v2/{path}/blobs/uploads/", registry.addr),
            ],
        );
        let location = location
            .lines()
            .find_map(|l| {
                l.strip_prefix("Location: ")
                    .or_else(|| l.strip_prefix("location: "))
            })
            .expect("an upload location")
            .trim()
            .to_owned();
        let separator = if location.contains('?') { '&' } else { '?' };
        let file_arg = file.to_str().expect("utf-8");
        curl(
            &user,
            &[
                "-X",
                "PUT",
                "-T",
                file_arg,
                "-o",
                "/dev/null",
                &format!("{location}{separator}digest={digest}"),
            ],
        );
        raw_up.push(rate(millis(begun.elapsed())));
        let begun = Instant::now();
        curl(
            &user,
            &[
                "-L",
                "-o",
                "/dev/null",
                &format!("http://{}/v2/{path}/blobs/{digest}", registry.addr),
            ],
        );
        raw_down.push(rate(millis(begun.elapsed())));

        // Kiln: the worker's upload (a HEAD, then the blob) and download (checked).
        let file = payload(dir.path(), "artifact");
        let begun = Instant::now();
        let stored = oci.put_file(repo, ARTIFACTS, &file).await.expect("upload");
        up.push(rate(millis(begun.elapsed())));
        assert!(stored.uploaded, "a new blob is uploaded");
        let again = oci.put_file(repo, ARTIFACTS, &file).await.expect("upload");
        assert!(!again.uploaded, "no blob is uploaded twice");
        let out = dir.path().join("out");
        let begun = Instant::now();
        oci.get_file(repo, ARTIFACTS, &stored.digest, stored.size, &out)
            .await
            .expect("download");
        down.push(rate(millis(begun.elapsed())));
    }
    let raw_up = Figure::new("floor_registry_blob_upload", "MiB/s", raw_up);
    let raw_down = Figure::new("floor_registry_blob_download", "MiB/s", raw_down);
    let up = Figure::new("artifact_upload", "MiB/s", up);
    let up = up.against(&raw_up, Some(Target::AtLeastTimes(0.83)));
    let down = Figure::new("artifact_download", "MiB/s", down);
    let down = down.against(&raw_down, Some(Target::AtLeastTimes(0.83)));
    [raw_up, raw_down, up, down]
}

/// Runs curl with `user`'s basic credentials; its standard output.
fn curl(user: &str, args: &[&str]) -> String {
    let output = Command::new("curl")
        .args(["-sS", "--fail", "-u", user])
        .args(args)
        .output()
        .expect("curl runs");
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Builds `tag` from `context` with the classic builder, on the first engine.
fn build(tag: &str, context: &str) {
    let status = Command::new("docker")
        .args(["build", "-q", "-t", tag, context])
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("docker build");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
}

async fn remove(docker: &Docker, name: &str) {
    let options = RemoveImageOptionsBuilder::new().force(true).build();
    let _ = docker.remove_image(name, Some(options), None).await;
}

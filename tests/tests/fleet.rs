//! Two worker hosts on one machine, sharing nothing but the broker, Redis and the registry:
//! one worker on the first Docker engine, one on the second (`deploy/dev/services` starts
//! it), no store directory of their own in common for images. An in-tree image built on one
//! host is pushed; the other pulls it instead of building it, and builds an image `FROM` it.
//! A rebuild of the same commit pushes nothing to the registry. An artifact made on one host
//! reaches the task that needs it on the other, and a cache saved on one is restored there.

use bollard::Docker;
use bollard::query_parameters::RemoveImageOptionsBuilder;
use kiln_shared::platform::Platform;
use kiln_shared::wire::{Event, ImageUse, TaskFinished};
use kiln_tests::events::{next_event, subscribe};
use kiln_tests::forge::TestRepo;
use kiln_tests::registry::TestRegistry;
use kiln_tests::services::images_of_branches;
use kiln_tests::{Kiln, REPO, TEST_IMAGE, TEST_IMAGE_ARM64};
use kiln_worker::artifacts::ArtifactStore;
use kiln_worker::docker::{DockerRunner, Registries};

/// The second engine, from `KILN_TEST_DOCKER2_HOST`; a missing one fails the test.
fn second_engine() -> String {
    std::env::var("KILN_TEST_DOCKER2_HOST").unwrap_or_else(|_| {
        panic!("KILN_TEST_DOCKER2_HOST is not set: start the services with `deploy/dev/services`")
    })
}

/// The first commit's pipeline: the `base` image and a step that runs in it.
const BASE_SPEC: &str = r#"images:
  base: { context: ci/base }
steps:
  base: { image: base, run: cat /salt }
"#;

/// The next commit's: also an image built `FROM` the branch's `base`, and a step in it.
const LAYERED_SPEC: &str = r#"images:
  base: { context: ci/base }
  layered:
    context: ci/layered
    args: { SOURCE_IMAGE: "kiln/{{ repo }}/base:{{ branch_slug }}" }
stages: [base, use]
steps:
  base: { stage: base, image: base, run: cat /salt }
  layered: { stage: use, image: layered, run: cat /salt /layer }
"#;

/// A commit whose `base` image is this test's own (`salt` in its context); with `layered`,
/// also the image built on it and the step that runs in it.
fn commit(repo: &TestRepo, branch: &str, salt: &str, layered: bool) -> String {
    let spec = if layered { LAYERED_SPEC } else { BASE_SPEC };
    let base_dockerfile = format!("FROM {TEST_IMAGE}\nCOPY salt /salt\n");
    let mut files = vec![
        (".kiln.yml", spec),
        ("ci/base/Dockerfile", base_dockerfile.as_str()),
        ("ci/base/salt", salt),
    ];
    if layered {
        files.push((
            "ci/layered/Dockerfile",
            "ARG SOURCE_IMAGE\nFROM ${SOURCE_IMAGE}\nCOPY layer /layer\n",
        ));
        files.push(("ci/layered/layer", "layered on the other host\n"));
    }
    repo.commit(branch, "Fleet", &files)
}

/// The `task.finished` events of build `id`, until it has `tasks` of them, and the workers
/// its `task.started` events named.
async fn finished(
    consumer: &mut lapin::Consumer,
    id: u64,
    tasks: usize,
) -> (Vec<TaskFinished>, Vec<String>) {
    let (mut seen, mut workers) = (Vec::new(), Vec::new());
    while seen.len() < tasks {
        match next_event(consumer).await {
            Event::TaskFinished(f) if f.build.id.0 == id => seen.push(f),
            Event::TaskStarted(s) if s.build.id.0 == id => workers.push(s.worker),
            _ => {}
        }
    }
    (seen, workers)
}

/// The image `name` as task `task` used it.
fn image<'a>(tasks: &'a [TaskFinished], task: &str, name: &str) -> &'a ImageUse {
    tasks
        .iter()
        .filter(|t| t.task == task)
        .flat_map(|t| &t.images)
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("task {task} used no image {name}: {tasks:#?}"))
}

/// `kiln-worker export` of build `id` with the registry, on the engine at `engine`: the
/// tarball.
async fn export(
    kiln: &Kiln,
    registry: &TestRegistry,
    id: u64,
    engine: Option<&str>,
) -> tempfile::NamedTempFile {
    let registries = Registries::load(Some(registry.addr.clone()), Some(&registry.auth))
        .expect("the registry's credentials");
    let store = ArtifactStore::Registry(registries.store().expect("the registry"));
    let runner = DockerRunner::connect("kiln-export", registries, engine)
        .await
        .expect("the engine");
    let out = tempfile::NamedTempFile::new().expect("temp file");
    kiln_worker::export::export(&kiln.url(""), id, &runner, &store, out.path())
        .await
        .expect("export");
    out
}

/// The names in a tarball.
fn entries(tarball: &tempfile::NamedTempFile) -> Vec<String> {
    let mut archive = tar::Archive::new(std::fs::File::open(tarball.path()).expect("open"));
    archive
        .entries()
        .expect("entries")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .display()
                .to_string()
        })
        .collect()
}

/// Requests to the registry that upload something (a blob or a manifest) under `path`, as
/// its access log counts them.
fn uploads(path: &str) -> usize {
    let log = std::env::var("KILN_TEST_REGISTRY_LOG").expect("KILN_TEST_REGISTRY_LOG is set");
    let text = std::fs::read_to_string(&log).expect("the registry's log");
    text.lines()
        .filter(|l| l.contains(&format!(" /v2/{path}/")))
        .filter(|l| {
            ["\"PUT ", "\"POST ", "\"PATCH "]
                .iter()
                .any(|m| l.contains(m))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_built_on_one_host_is_pulled_not_built_on_the_other() {
    let registry = TestRegistry::require();
    let engine = second_engine();
    let kiln = Kiln::start_without_workers(&kiln_tests::config("")).await;
    let mut events = subscribe(&kiln, "task.#").await;
    let repo = TestRepo::new();
    let branch = format!("{}-main", kiln.prefix);
    let salt = format!("salt of {}\n", kiln.prefix);

    // Host A builds `base` and shares it.
    let host_a = kiln.add_worker("host-a", Platform::LinuxAmd64, None, &registry);
    let first = commit(&repo, &branch, &salt, false);
    let id = kiln.push(&repo, &branch, &first, "fleet-1").await;
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    let (tasks, workers) = finished(&mut events, id, 1).await;
    let base = image(&tasks, "base", "base");
    assert!(base.built && !base.pulled, "{base:#?}");
    assert_eq!(workers, std::slice::from_ref(&host_a.name));
    let pushed = uploads(&format!("kiln/{REPO}/base"));
    assert!(pushed > 0, "host A pushed its image to the registry");
    host_a.stop().await;

    // Host B, on the other engine, pulls `base` and builds `layered` from it.
    let host_b = kiln.add_worker("host-b", Platform::LinuxAmd64, Some(&engine), &registry);
    let second = commit(&repo, &branch, &salt, true);
    let id = kiln.push(&repo, &branch, &second, "fleet-2").await;
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    let (tasks, workers) = finished(&mut events, id, 2).await;
    assert_eq!(workers, [host_b.name.clone(), host_b.name.clone()]);
    let pulled = image(&tasks, "base", "base");
    assert!(
        pulled.pulled && !pulled.built,
        "the second host pulled the image and built nothing: {pulled:#?}"
    );
    assert_eq!(pulled.tag, base.tag, "the same content, the same tag");
    assert_eq!(pulled.id, base.id, "the same image");
    let layered = image(&tasks, "layered", "layered");
    assert!(layered.built, "{layered:#?}");
    let log = kiln.task_log(id, "layered").await;
    assert!(
        log.contains(salt.trim()) && log.contains("layered on the other host"),
        "{log}"
    );
    assert!(
        kiln.task_log(id, "base")
            .await
            .contains(&format!("pulled {} from {}", base.tag, registry.addr)),
        "the log says where the image came from"
    );

    // The same commit again on host B: everything is there, nothing goes to the registry.
    let images =
        || uploads(&format!("kiln/{REPO}/base")) + uploads(&format!("kiln/{REPO}/layered"));
    let before = images();
    let id = kiln.push(&repo, &branch, &second, "fleet-3").await;
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    let (tasks, _) = finished(&mut events, id, 2).await;
    assert!(
        tasks
            .iter()
            .flat_map(|t| &t.images)
            .all(|i| !i.built && !i.pulled),
        "{tasks:#?}"
    );
    assert_eq!(
        images(),
        before,
        "a rebuild uploads no blob and pushes no manifest"
    );
    host_b.stop().await;

    // Exported on the first host, which never had `layered`: it comes from the registry.
    let names = entries(&export(&kiln, &registry, id, None).await);
    assert!(names.iter().any(|n| n == "images.tar"), "{names:?}");
    let here = Docker::connect_with_local_defaults().expect("the first engine");
    for tag in [&base.tag, &layered.tag] {
        let options = RemoveImageOptionsBuilder::new().force(true).build();
        let _ = here.remove_image(tag, Some(options), None).await;
    }

    let docker = Docker::connect_with_host(&engine).expect("the second engine");
    for id in images_of_branches(&docker, &kiln.prefix).await {
        let options = RemoveImageOptionsBuilder::new().force(true).build();
        let _ = docker.remove_image(&id, Some(options), None).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_and_caches_made_on_one_host_are_used_on_the_other() {
    let registry = TestRegistry::require();
    let engine = second_engine();
    let config = kiln_tests::config(&format!(
        "[registry]\naddress = \"{}\"\nauth = \"{}\"\n",
        registry.addr,
        registry.auth.display()
    ));
    let kiln = Kiln::start_without_workers(&config).await;
    let mut events = subscribe(&kiln, "task.#").await;
    // The platform places each task: arm64 on the first engine, amd64 on the second.
    let host_a = kiln.add_worker("host-a", Platform::LinuxArm64, None, &registry);
    let host_b = kiln.add_worker("host-b", Platform::LinuxAmd64, Some(&engine), &registry);
    let key = format!("deps-{}", kiln.prefix);
    let spec = format!(
        r#"stages: [make, use]
steps:
  make:
    stage: make
    platforms: [linux/arm64]
    image: {TEST_IMAGE_ARM64}
    cache: {{ key: "{key}", paths: [deps] }}
    artifacts: [out/*.txt]
    run:
      - mkdir -p out deps
      - echo "made on $(uname -m)" > out/made.txt
      - echo "fetched on $(uname -m)" > deps/fetched
  use:
    stage: use
    needs: [make]
    image: {TEST_IMAGE}
    cache: {{ key: "{key}", paths: [deps] }}
    run:
      - cat out/made.txt
      - cat deps/fetched
"#
    );
    let repo = TestRepo::new();
    let commit = repo.commit("master", "Across hosts", &[(".kiln.yml", &spec)]);
    let id = kiln.push(&repo, "master", &commit, "fleet-artifacts").await;
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    let (tasks, workers) = finished(&mut events, id, 2).await;
    assert_eq!(
        workers,
        [host_a.name.clone(), host_b.name.clone()],
        "{tasks:#?}"
    );
    let log = kiln.task_log(id, "use").await;
    assert!(
        log.contains("made on aarch64"),
        "the artifact came from host A: {log}"
    );
    assert!(
        log.contains("fetched on aarch64"),
        "the cache came from host A: {log}"
    );
    assert!(
        log.contains(&format!("[kiln] cache: restored key {key}")),
        "{log}"
    );
    // The bot lists the artifact and serves it from the registry.
    let listed: serde_json::Value = kiln
        .http
        .get(kiln.url(&format!("/builds/{id}/artifacts")))
        .send()
        .await
        .expect("the bot answers")
        .json()
        .await
        .expect("json");
    let made = &listed["artifacts"][0];
    assert_eq!(made["path"], "out/made.txt", "{listed:#}");
    assert_eq!(made["task"], "make", "{listed:#}");
    let response = kiln
        .http
        .get(kiln.url(&format!("/builds/{id}/artifacts/out/made.txt")))
        .send()
        .await
        .expect("the bot answers");
    assert_eq!(response.status(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        header("content-disposition"),
        "attachment; filename=\"made.txt\""
    );
    let digest = made["digest"].as_str().expect("a digest");
    assert_eq!(header("etag"), format!("\"{digest}\""));
    assert!(header("content-digest").starts_with("sha-256=:"));
    assert_eq!(response.text().await.expect("body"), "made on aarch64\n");
    let missing = kiln
        .http
        .get(kiln.url(&format!("/builds/{id}/artifacts/out/none.txt")))
        .send()
        .await
        .expect("the bot answers");
    assert_eq!(missing.status(), 404);

    // Exported from the registry, on the second host.
    let names = entries(&export(&kiln, &registry, id, Some(&engine)).await);
    assert!(
        names.iter().any(|n| n == "artifacts/make/out/made.txt"),
        "{names:?}"
    );

    // The same commit again: its artifact and cache are in the registry already.
    let blobs = format!("kiln/{REPO}/artifacts/blobs");
    let before = uploads(&blobs);
    let again = kiln
        .push(&repo, "master", &commit, "fleet-artifacts-2")
        .await;
    assert_eq!(kiln.finished_build(again).await["status"], "passed");
    assert_eq!(
        uploads(&blobs),
        before,
        "no blob the registry has is uploaded again"
    );
    for (host, worker) in [("A", &host_a), ("B", &host_b)] {
        let store = kiln.state_path().join(&worker.name).join("store");
        assert!(
            !store.join("artifacts").exists() && !store.join("cache").exists(),
            "host {host} kept nothing in a store directory"
        );
    }
    host_a.stop().await;
    host_b.stop().await;
}

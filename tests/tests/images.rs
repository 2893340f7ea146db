//! In-tree images, artifacts and caches, end to end on the real services: an image is built
//! once and reused by content, a branch-scoped base image keeps two branches apart, an
//! artifact reaches the task that needs it and is listed in the build's manifest, and a
//! cache is restored on the branch's next build, not on another branch's. A build exports to a tarball that loads back, and
//! garbage collection keeps each branch's newest image only.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{ImportImageOptionsBuilder, RemoveImageOptionsBuilder};
use futures_util::StreamExt;
use kiln_shared::wire::{Event, ImageUse, TaskFinished};
use kiln_tests::events::{next_event, subscribe};
use kiln_tests::forge::TestRepo;
use kiln_tests::{Kiln, TEST_IMAGE};
use kiln_worker::artifacts::ArtifactStore;
use kiln_worker::blobs::Blobs;
use kiln_worker::docker::{DockerRunner, Registries};
use kiln_worker::export;
use kiln_worker::gc::{self, Policy};
use sha2::{Digest, Sha256};

fn config() -> String {
    kiln_tests::config("")
}

/// A pipeline whose `build` image is built on the branch's own `base` image.
const SPEC: &str = r#"images:
  base: { context: ci/base }
  build:
    context: ci/build
    args: { SOURCE_IMAGE: "kiln/{{ repo }}/base:{{ branch_slug }}" }
stages: [base, test]
steps:
  base: { stage: base, image: base, run: cat /base-id }
  package:
    stage: test
    image: build
    run:
      - if [ -f deps/fetched ]; then echo "cache hit"; else echo "fetching deps"; mkdir -p deps; echo once > deps/fetched; fi
      - mkdir -p dist
      - cat /base-id > dist/out.txt
      - echo packaged >> dist/out.txt
    artifacts: [dist/*.txt]
    cache: { key: "deps-{{ hash('deps.lock') }}", paths: [deps] }
  consume:
    stage: test
    needs: [package]
    image: build
    run: cat dist/out.txt
"#;

const BUILD_DOCKERFILE: &str = "ARG SOURCE_IMAGE\nFROM ${SOURCE_IMAGE}\nRUN echo built > /built\n";

/// The files of a commit on `branch` whose base image says `base of <branch>`. `salt` goes
/// into both images' contexts, so this test's images are its own.
fn files(branch: &str, salt: &str) -> Vec<(String, String)> {
    vec![
        (".kiln.yml".into(), SPEC.into()),
        ("deps.lock".into(), format!("deps of {salt}\n")),
        (
            "ci/base/Dockerfile".into(),
            format!("FROM {TEST_IMAGE}\nCOPY id /base-id\n"),
        ),
        ("ci/base/id".into(), format!("base of {branch}\n")),
        ("ci/base/VERSION".into(), salt.into()),
        ("ci/build/Dockerfile".into(), BUILD_DOCKERFILE.into()),
        ("ci/build/VERSION".into(), salt.into()),
    ]
}

fn commit(repo: &TestRepo, branch: &str, salt: &str) -> String {
    let files = files(branch, salt);
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    repo.commit(branch, "Images", &files)
}

/// One task's log: what its commands printed, then Kiln's own notes (`[kiln] …`) apart.
async fn log(kiln: &Kiln, id: u64, task: &str) -> String {
    let (_, output) = log_and_notes(kiln, id, task).await;
    output
}

async fn log_and_notes(kiln: &Kiln, id: u64, task: &str) -> (String, String) {
    let text = kiln.task_log(id, task).await;
    let (notes, output): (Vec<&str>, Vec<&str>) =
        text.lines().partition(|l| l.starts_with("[kiln] "));
    (notes.join("\n"), output.join("\n"))
}

/// The `task.finished` events of build `id`, until it has `tasks` of them.
async fn finished_tasks(
    consumer: &mut lapin::Consumer,
    id: u64,
    tasks: usize,
) -> Vec<TaskFinished> {
    let mut finished = Vec::new();
    while finished.len() < tasks {
        if let Event::TaskFinished(f) = next_event(consumer).await
            && f.build.id.0 == id
        {
            finished.push(f);
        }
    }
    finished
}

fn images(finished: &[TaskFinished]) -> Vec<&ImageUse> {
    finished.iter().flat_map(|f| &f.images).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_built_once_per_content_and_branch_bases_stay_apart() {
    let kiln = Kiln::start(&config()).await;
    let repo = TestRepo::new();
    let mut events = subscribe(&kiln, "task.#").await;
    // Branches of this test alone (branch tags are shared by every build of the repository);
    // the harness removes their images when the test ends.
    let (main, feature) = (
        format!("{}-main", kiln.prefix),
        format!("{}-feature", kiln.prefix),
    );

    let first_commit = commit(&repo, &main, &kiln.prefix);
    let first = kiln.push(&repo, &main, &first_commit, "images-1").await;
    let build = kiln.finished_build(first).await;
    let first_tasks = finished_tasks(&mut events, first, 3).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    let built: Vec<&str> = images(&first_tasks)
        .iter()
        .filter(|i| i.built)
        .map(|i| i.name.as_str())
        .collect();
    assert!(
        built.contains(&"base") && built.contains(&"build"),
        "the first build builds both images: {first_tasks:#?}"
    );
    assert_eq!(
        built.iter().filter(|n| **n == "build").count(),
        1,
        "two tasks of one worker wanting one image build it once: {first_tasks:#?}"
    );
    assert!(log(&kiln, first, "package").await.contains("fetching deps"));
    assert_eq!(
        log(&kiln, first, "consume").await.trim(),
        format!("base of {main}\npackaged"),
        "the artifact reached the task that needs it, built on the branch's base"
    );

    // The manifest lists the artifact's digest and both images.
    let manifest: serde_json::Value = kiln
        .http
        .get(kiln.url(&format!("/builds/{first}/manifest")))
        .send()
        .await
        .expect("manifest answers")
        .json()
        .await
        .expect("json");
    let expected = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(format!("base of {main}\npackaged\n")))
    );
    assert_eq!(
        manifest["artifacts"][0]["path"], "dist/out.txt",
        "{manifest:#}"
    );
    assert_eq!(manifest["artifacts"][0]["digest"], expected.as_str());
    let manifest_images: Vec<&str> = manifest["images"]
        .as_array()
        .expect("images")
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(manifest_images.len(), 2, "{manifest:#}");

    // A branch with its own base image sees its own, not the other branch's.
    let feature_commit = commit(&repo, &feature, &kiln.prefix);
    let second = kiln
        .push(&repo, &feature, &feature_commit, "images-2")
        .await;
    let build = kiln.finished_build(second).await;
    let feature_tasks = finished_tasks(&mut events, second, 3).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    assert_eq!(
        log(&kiln, second, "consume").await.trim(),
        format!("base of {feature}\npackaged")
    );
    let base_tag = |tasks: &[TaskFinished]| {
        images(tasks)
            .iter()
            .find(|i| i.name == "base")
            .map(|i| i.tag.clone())
    };
    assert_ne!(base_tag(&feature_tasks), base_tag(&first_tasks));
    assert!(
        log(&kiln, second, "package")
            .await
            .contains("fetching deps"),
        "another branch's cache is not this branch's, whatever the key"
    );

    // The same commit again: nothing is built, and the first branch still has its base.
    let third = kiln.push(&repo, &main, &first_commit, "images-3").await;
    let build = kiln.finished_build(third).await;
    let third_tasks = finished_tasks(&mut events, third, 3).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    let again = images(&third_tasks);
    assert_eq!(again.len(), 3, "{third_tasks:#?}");
    assert!(
        again.iter().all(|i| !i.built),
        "the second build of a commit builds no image: {third_tasks:#?}"
    );
    let tags = |tasks: &[TaskFinished]| {
        let mut tags: Vec<String> = images(tasks).iter().map(|i| i.tag.clone()).collect();
        tags.sort();
        tags.dedup();
        tags
    };
    assert_eq!(tags(&third_tasks), tags(&first_tasks));
    assert!(
        log(&kiln, third, "package").await.contains("cache hit"),
        "the branch's cache, saved by its first build, is restored"
    );
    let (notes, output) = log_and_notes(&kiln, third, "consume").await;
    assert_eq!(output, format!("base of {main}\npackaged"));
    assert!(notes.contains("image `build`: reused"), "{notes}");

    // A new base on the first branch: its images move on, the old ones are no branch's newest.
    let next_commit = {
        let mut files = files(&main, &kiln.prefix);
        files.retain(|(path, _)| path != "ci/base/id");
        files.push(("ci/base/id".into(), format!("base of {main}, version 2\n")));
        let files: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_str()))
            .collect();
        repo.commit(&main, "A new base", &files)
    };
    let fourth = kiln.push(&repo, &main, &next_commit, "images-4").await;
    let build = kiln.finished_build(fourth).await;
    let fourth_tasks = finished_tasks(&mut events, fourth, 3).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    assert_ne!(tags(&fourth_tasks), tags(&first_tasks));

    export_and_load(&kiln, first, &manifest, &tags(&first_tasks)).await;

    // Garbage collection with no age allowed: the first build's images go, each branch's
    // newest stays, and every artifact and cache entry goes.
    let docker = Docker::connect_with_local_defaults().expect("docker");
    let policy = Policy {
        max_age: Duration::ZERO,
        max_bytes: u64::MAX,
    };
    let report = gc::collect(Some(&docker), &kiln.store_dir(), policy, false)
        .await
        .expect("gc runs");
    for tag in tags(&first_tasks) {
        assert!(
            docker.inspect_image(&tag).await.is_err(),
            "{tag} is no branch's newest and went: {report:?}"
        );
    }
    for tag in tags(&fourth_tasks).iter().chain(&tags(&feature_tasks)) {
        assert!(
            docker.inspect_image(tag).await.is_ok(),
            "{tag} is a branch's newest and stays: {report:?}"
        );
    }
    assert!(report.images.removed >= 2, "{report:?}");
    assert_eq!(
        report.artifacts.removed, 3,
        "three distinct outputs: {report:?}"
    );
    assert_eq!(report.artifacts.kept, 0, "{report:?}");
    assert_eq!(
        report.caches.removed, 2,
        "one key, two branches: {report:?}"
    );
}

/// Exports build `id`, checks the tarball against the manifest, then removes the images and
/// loads them back from it, as a machine with no network would.
async fn export_and_load(kiln: &Kiln, id: u64, manifest: &serde_json::Value, tags: &[String]) {
    let docker = Docker::connect_with_local_defaults().expect("docker");
    let out = kiln.store_dir().join("export.tar");
    let store = ArtifactStore::Directory(Blobs::new(kiln.store_dir().join("artifacts")));
    let runner = DockerRunner::connect("kiln-export", Registries::default(), None)
        .await
        .expect("docker");
    let exported = export::export(&kiln.url(""), id, &runner, &store, &out)
        .await
        .expect("export");
    assert_eq!(
        serde_json::to_value(&exported.manifest).expect("json"),
        *manifest
    );

    let mut entries = BTreeMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(&out).expect("tarball"));
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").display().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read");
        entries.insert(name, bytes);
    }
    assert_eq!(
        entries.keys().collect::<Vec<_>>(),
        [
            "artifacts/package/dist/out.txt",
            "images.tar",
            "manifest.json"
        ]
    );
    let in_tarball: serde_json::Value =
        serde_json::from_slice(&entries["manifest.json"]).expect("manifest json");
    assert_eq!(in_tarball, *manifest);
    let expected = manifest["artifacts"][0]["digest"].as_str().expect("digest");
    let digest = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(&entries["artifacts/package/dist/out.txt"]))
    );
    assert_eq!(digest, expected);

    // Gone from the engine, then back from the tarball alone.
    let ids: Vec<String> = exported
        .manifest
        .images
        .iter()
        .map(|i| i.id.clone())
        .collect();
    // The image built on the base goes first.
    for name in ["build", "base"] {
        let image = exported.manifest.images.iter().find(|i| i.name == name);
        let options = RemoveImageOptionsBuilder::new().force(true).build();
        docker
            .remove_image(&image.expect("image").id, Some(options), None)
            .await
            .expect("remove");
    }
    let images_tar = entries.remove("images.tar").expect("images");
    let mut loading = docker.import_image(
        ImportImageOptionsBuilder::new().build(),
        bollard::body_full(images_tar.into()),
        None,
    );
    while let Some(progress) = loading.next().await {
        progress.expect("docker load");
    }
    for tag in tags {
        let loaded = docker.inspect_image(tag).await.expect("loaded back");
        assert!(ids.contains(&loaded.id.unwrap_or_default()), "{tag}");
    }
}

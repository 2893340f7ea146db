//! `kiln-worker run` with Docker: the same engine as the servers' on one machine, containers,
//! services and arm64 emulation included.

use kiln_shared::build::{BuildStatus, TaskStatus};
use kiln_tests::forge::git;
use kiln_tests::services::{containers_named, networks_named};
use kiln_tests::{Services, TEST_IMAGE, TEST_IMAGE_ARM64};
use kiln_worker::local::{Options, Report, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_a_pipeline_in_docker_with_no_server() {
    Services::require().await;
    let repo = tempfile::tempdir().expect("temp dir");
    let store = tempfile::tempdir().expect("temp dir");
    let spec = format!(
        r#"stages: [build, test]
steps:
  build:
    stage: build
    image: {TEST_IMAGE}
    run: [test -f src/main.c, echo built > output]
  arm:
    stage: test
    platforms: [linux/arm64]
    image: {TEST_IMAGE_ARM64}
    run: test "$(uname -m)" = aarch64
  with-service:
    stage: test
    image: {TEST_IMAGE}
    services: {{ api: {{ image: "{TEST_IMAGE}", command: "httpd -f -p 8080 -h /etc" }} }}
    run: for i in $(seq 1 100); do wget -q -O /dev/null http://api:8080/hostname && exit 0; sleep 0.1; done; exit 1
  fails:
    stage: test
    image: {TEST_IMAGE}
    run: exit 7
"#
    );
    std::fs::create_dir_all(repo.path().join("src")).expect("mkdir");
    std::fs::write(repo.path().join("src/main.c"), "int main() {}\n").expect("write");
    std::fs::write(repo.path().join(".kiln.yml"), spec).expect("write");
    git(repo.path(), &["init", "--quiet", "--initial-branch=master"]);
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "--quiet", "-m", "pipeline"]);

    let report = run(&Options {
        dir: repo.path().to_owned(),
        slots: 2,
        shell_only: false,
        store_dir: store.path().to_owned(),
    })
    .await
    .expect("the pipeline runs");
    let expected = Report {
        status: BuildStatus::Failed,
        tasks: vec![
            ("build".into(), TaskStatus::Passed),
            ("arm".into(), TaskStatus::Passed),
            ("fails".into(), TaskStatus::Failed),
            ("with-service".into(), TaskStatus::Passed),
        ],
    };
    assert_eq!(report, expected);
    assert!(
        !repo.path().join("output").exists(),
        "tasks work on a copy of the tree"
    );
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
    assert_eq!(
        containers_named(&docker, "kiln-local").await,
        Vec::<String>::new()
    );
    assert_eq!(
        networks_named(&docker, "kiln-local").await,
        Vec::<String>::new()
    );
}

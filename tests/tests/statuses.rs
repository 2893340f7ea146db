//! Commit statuses, end to end on the real services: a build's status (`kiln`) and each
//! task's (`kiln/<task>`) go to the repository's forge as they change, through octocrab or
//! the `gitlab` crate pointed at a fake of the forge's REST API. A forge that cannot be
//! reached holds nothing up.

use kiln_tests::forge::{TestRepo, gitlab_push_payload};
use kiln_tests::statuses::{FORGE_TOKEN, FakeForge};
use kiln_tests::{E2E_TIMEOUT, Kiln, REPO, TEST_IMAGE, TEST_SECRET, wait_for};

/// `build` passes; `test`, which needs it, fails.
fn pipeline() -> String {
    format!(
        "steps:\n  build:\n    image: {TEST_IMAGE}\n    run: echo built\n  \
         test:\n    image: {TEST_IMAGE}\n    needs: [build]\n    run: exit 2\n"
    )
}

/// Waits until the forge shows `expected` (context, state) as the latest of each context.
async fn wait_for_states(forge: &FakeForge, commit: &str, expected: &[(&str, &str)]) {
    wait_for("the final commit statuses", E2E_TIMEOUT, || async {
        let latest = forge.latest(commit);
        let all = expected
            .iter()
            .all(|(context, state)| latest.get(*context).map(String::as_str) == Some(*state));
        (all && latest.len() == expected.len()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_go_to_github_as_the_build_runs() {
    let github = FakeForge::github().await;
    let kiln = Kiln::start(&kiln_tests::config(&format!(
        "[github]\ntoken = \"{FORGE_TOKEN}\"\napi_url = \"{}\"\n",
        github.url()
    )))
    .await;
    let repo = TestRepo::new();
    let commit = repo.commit("master", "Statuses", &[(".kiln.yml", &pipeline())]);
    let id = kiln
        .push(&repo, "master", &commit, "d-github-statuses")
        .await;
    assert_eq!(kiln.finished_build(id).await["status"], "failed");

    wait_for_states(
        &github,
        &commit,
        &[
            ("kiln", "failure"),
            ("kiln/build", "success"),
            ("kiln/test", "failure"),
        ],
    )
    .await;
    let statuses = github.statuses();
    let first = &statuses[0];
    assert_eq!(
        (
            first.repo.as_str(),
            first.context.as_str(),
            first.state.as_str()
        ),
        (REPO, "kiln", "pending"),
        "the build is pending before anything ends: {statuses:#?}"
    );
    let test = statuses
        .iter()
        .rev()
        .find(|s| s.context == "kiln/test")
        .expect("the test's status");
    assert_eq!(test.description, "failed with exit code 2");
    assert_eq!(test.target_url, format!("http://kiln.test/builds/{id}"));
    // Each change once: no context repeats a state it already had.
    for pair in statuses.windows(2) {
        assert!(
            pair[0].context != pair[1].context
                || pair[0].state != pair[1].state
                || pair[0].description != pair[1].description,
            "{statuses:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_go_to_gitlab_for_its_projects() {
    let gitlab = FakeForge::gitlab().await;
    let kiln = Kiln::start(&kiln_tests::config(&format!(
        "forge = \"gitlab\"\n[gitlab]\ntoken = \"{FORGE_TOKEN}\"\nurl = \"{}\"\n",
        gitlab.url()
    )))
    .await;
    let repo = TestRepo::new();
    let commit = repo.commit("master", "Statuses", &[(".kiln.yml", &pipeline())]);
    let body = gitlab_push_payload(REPO, "master", &commit, &repo.clone_url(), "Ada");
    let (status, answer) = kiln
        .send_gitlab("Push Hook", "k-statuses", &body, TEST_SECRET)
        .await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["build_id"].as_u64().expect("a build id");
    assert_eq!(kiln.finished_build(id).await["status"], "failed");

    wait_for_states(
        &gitlab,
        &commit,
        &[
            ("kiln", "failed"),
            ("kiln/build", "success"),
            ("kiln/test", "failed"),
        ],
    )
    .await;
    let statuses = gitlab.statuses();
    assert!(statuses.iter().all(|s| s.repo == REPO), "{statuses:#?}");
    assert!(
        statuses
            .iter()
            .any(|s| s.context == "kiln/build" && s.state == "running"),
        "GitLab is told a task runs: {statuses:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forge_that_cannot_be_reached_holds_nothing_up() {
    // A port nothing listens on: every status is refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let kiln = Kiln::start(&kiln_tests::config(&format!(
        "[github]\ntoken = \"{FORGE_TOKEN}\"\napi_url = \"http://{closed}\"\n"
    )))
    .await;
    let repo = TestRepo::new();
    let commit = repo.commit("master", "Unreachable", &[(".kiln.yml", &pipeline())]);
    let id = kiln.push(&repo, "master", &commit, "d-closed").await;
    assert_eq!(kiln.finished_build(id).await["status"], "failed");
}

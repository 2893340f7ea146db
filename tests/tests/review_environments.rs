//! Review environments, end to end on the real services: a branch's build deploys one (a step
//! with `environment:` and `on_stop:`), and the forge's real payloads for a closed pull request
//! (GitHub) and a merged merge request (GitLab) make Kiln run the stop step, once, in a build
//! of its own.

use kiln_shared::template::branch_slug;
use kiln_tests::forge::{TestRepo, gitlab_push_payload};
use kiln_tests::{Kiln, REPO, TEST_IMAGE, TEST_SECRET};
use serde_json::Value;

const PR_CLOSED: &str = include_str!("../fixtures/github-pull_request-closed.json");
const MR_MERGED: &str = include_str!("../fixtures/gitlab-merge_request-merge-capture.json");

/// A pipeline that deploys the branch's review environment, and a step that stops it.
fn spec() -> String {
    format!(
        "steps:\n  unit:\n    image: {TEST_IMAGE}\n    run: echo testing\n  \
         deploy-review:\n    image: {TEST_IMAGE}\n    needs: [unit]\n    \
         environment: review/{{{{ branch_slug }}}}\n    on_stop: stop-review\n    \
         run: echo \"deploying $KILN_BRANCH\"\n  \
         stop-review:\n    image: {TEST_IMAGE}\n    run: echo \"stopping the review of $KILN_BRANCH\"\n"
    )
}

fn task_names(build: &Value) -> Vec<String> {
    build["tasks"]
        .as_array()
        .map(|tasks| {
            tasks
                .iter()
                .filter_map(|t| t["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits for the stop build the answer names, and checks it ran the stop step alone.
async fn stopped(kiln: &Kiln, answer: &Value, branch: &str) {
    assert_eq!(
        answer["stopping"],
        serde_json::json!([format!("review/{}", branch_slug(branch))]),
        "{answer}"
    );
    let id = answer["build_id"].as_u64().expect("a stop build");
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    assert_eq!(task_names(&build), ["stop-review"], "{build:#}");
    let log = kiln.task_log(id, "stop-review").await;
    assert!(
        log.contains(&format!("stopping the review of {branch}")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pull_request_stops_its_branchs_review_environment() {
    let kiln = Kiln::start(&kiln_tests::config("")).await;
    let repo = TestRepo::new();
    let commit = repo.commit("changes", "A change to review", &[(".kiln.yml", &spec())]);
    let id = kiln
        .push(&repo, "changes", &commit, "delivery-changes")
        .await;
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    assert_eq!(
        task_names(&build),
        ["unit", "deploy-review"],
        "never the stop step"
    );

    // GitHub's payload of pull request #2, from branch `changes`, closed.
    let mut payload: Value = serde_json::from_str(PR_CLOSED).expect("JSON");
    payload["repository"]["full_name"] = REPO.into();
    payload["pull_request"]["head"]["repo"]["full_name"] = REPO.into();
    payload["pull_request"]["base"]["repo"]["full_name"] = REPO.into();
    // From a fork first: not the repository's branch, so nothing is stopped.
    let mut forked = payload.clone();
    forked["pull_request"]["head"]["repo"]["full_name"] = "someone/fork".into();
    let body = serde_json::to_vec(&forked).expect("JSON");
    let (status, answer) = kiln
        .send_github("pull_request", "delivery-fork", &body, TEST_SECRET)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["ignored"]
            .as_str()
            .unwrap_or_default()
            .contains("the repository's own branch"),
        "{answer}"
    );
    let body = serde_json::to_vec(&payload).expect("JSON");
    let (status, answer) = kiln
        .send_github("pull_request", "delivery-closed", &body, TEST_SECRET)
        .await;
    assert_eq!(status, 202, "{answer}");
    stopped(&kiln, &answer, "changes").await;

    // The same event again (a redelivery, say) stops nothing twice.
    let (status, answer) = kiln
        .send_github("pull_request", "delivery-closed-again", &body, TEST_SECRET)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["ignored"], "branch `changes` deployed no environment",
        "{answer}"
    );
    kiln.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_merge_request_stops_its_branchs_review_environment() {
    let kiln = Kiln::start(&kiln_tests::config("forge = \"gitlab\"\n")).await;
    let repo = TestRepo::new();
    let commit = repo.commit("feature", "A feature to review", &[(".kiln.yml", &spec())]);
    let push = gitlab_push_payload(REPO, "feature", &commit, &repo.clone_url(), "Ada Lovelace");
    let (status, answer) = kiln
        .send_gitlab("Push Hook", "push-feature", &push, TEST_SECRET)
        .await;
    assert_eq!(status, 202, "{answer}");
    let build = kiln
        .finished_build(answer["build_id"].as_u64().expect("a build"))
        .await;
    assert_eq!(build["status"], "passed", "{build:#}");

    // GitLab's payload of merge request !1, from branch `feature`, merged.
    let mut payload: Value = serde_json::from_str(MR_MERGED).expect("JSON");
    payload["project"]["path_with_namespace"] = REPO.into();
    let body = serde_json::to_vec(&payload).expect("JSON");
    let (status, answer) = kiln
        .send_gitlab("Merge Request Hook", "merged", &body, TEST_SECRET)
        .await;
    assert_eq!(status, 202, "{answer}");
    stopped(&kiln, &answer, "feature").await;
    kiln.stop().await;
}

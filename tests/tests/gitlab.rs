//! GitLab's webhooks, end to end on the real services: a push with the project's secret token
//! becomes a build; a wrong or missing token, a malformed payload or an unknown project is
//! refused and creates nothing; the same delivery twice makes one build; a pushed tag builds
//! its commit as a tag's build, and a deleted one nothing.

use kiln_shared::keys::Keys;
use kiln_tests::forge::{TestRepo, gitlab_push_payload};
use kiln_tests::{Kiln, REPO, TEST_IMAGE, TEST_SECRET};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_pushes_are_verified_and_built_once() {
    let kiln = Kiln::start(&kiln_tests::config("forge = \"gitlab\"\n")).await;
    let repo = TestRepo::new();
    let spec = format!(
        "steps:\n  hello:\n    image: {TEST_IMAGE}\n    run: echo \"from ${{KILN_TAG:-$KILN_BRANCH}}\"\n"
    );
    let commit = repo.commit("master", "Add the pipeline", &[(".kiln.yml", &spec)]);
    let body = gitlab_push_payload(REPO, "master", &commit, &repo.clone_url(), "Ada Lovelace");

    // Refused, and no build exists: a wrong token, no token, a body that is not a push.
    let (status, answer) = kiln
        .send_gitlab("Push Hook", "k1", &body, "not-the-secret")
        .await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("token"),
        "{answer}"
    );
    let (status, _) = kiln.send_gitlab("Push Hook", "k1", &body, "").await;
    assert_eq!(status, 401);
    let malformed = br#"{"project": {"path_with_namespace": "acme/api"}, "ref": 7}"#;
    let (status, answer) = kiln
        .send_gitlab("Push Hook", "k1", malformed, TEST_SECRET)
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap_or_default().contains("ref"),
        "{answer}"
    );
    let other = gitlab_push_payload("acme/other", "master", &commit, &repo.clone_url(), "x");
    let (status, _) = kiln
        .send_gitlab("Push Hook", "k2", &other, TEST_SECRET)
        .await;
    assert_eq!(status, 404);
    let mut redis = redis::Client::open(kiln.services.redis_url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let seq: Option<u64> = redis::cmd("GET")
        .arg(Keys::new(&kiln.prefix).build_sequence())
        .query_async(&mut redis)
        .await
        .expect("get");
    assert_eq!(seq, None, "a refused delivery must not create a build");

    // The project's token: a build of the pushed commit, by the commit's author.
    let (status, answer) = kiln
        .send_gitlab("Push Hook", "k1", &body, TEST_SECRET)
        .await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["build_id"].as_u64().expect("a build id");
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    assert_eq!(
        (build["commit"].as_str(), build["branch"].as_str()),
        (Some(commit.as_str()), Some("master"))
    );
    assert_eq!(build["author"], "Ada Lovelace");
    assert_eq!(
        kiln.task_log(id, "hello").await.lines().last(),
        Some("from master")
    );

    // GitLab's retry of the same delivery, known by its Idempotency-Key: the same build.
    let (status, again) = kiln
        .send_gitlab("Push Hook", "k1", &body, TEST_SECRET)
        .await;
    assert_eq!(
        (
            status,
            again["build_id"].as_u64(),
            again["duplicate"].as_bool()
        ),
        (200, Some(id), Some(true))
    );
    // Without the key (GitLab before 17.4), a retry repeats the same ref, before and after.
    let (status, _) = kiln.send_gitlab("Push Hook", "", &body, TEST_SECRET).await;
    assert_eq!(status, 202, "the first delivery known this way");
    let (status, again) = kiln.send_gitlab("Push Hook", "", &body, TEST_SECRET).await;
    assert_eq!((status, again["duplicate"].as_bool()), (200, Some(true)));

    // A pushed tag builds the commit it names, as a tag's build; a deleted one nothing.
    repo.tag("v1.0.0", &commit);
    let mut tag: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/gitlab-tag_push.json")).expect("JSON");
    tag["project"]["path_with_namespace"] = REPO.into();
    tag["project"]["git_http_url"] = repo.clone_url().into();
    tag["checkout_sha"] = commit.as_str().into();
    let body = serde_json::to_vec(&tag).expect("serialises");
    let (status, answer) = kiln
        .send_gitlab("Tag Push Hook", "k3", &body, TEST_SECRET)
        .await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["build_id"].as_u64().expect("a build id");
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    assert_eq!(
        (build["event"].as_str(), build["tag"].as_str()),
        (Some("tag"), Some("v1.0.0"))
    );
    assert_eq!(
        kiln.task_log(id, "hello").await.lines().last(),
        Some("from v1.0.0")
    );
    tag["checkout_sha"] = serde_json::Value::Null;
    tag["after"] = "0".repeat(40).into();
    let body = serde_json::to_vec(&tag).expect("serialises");
    let (status, answer) = kiln
        .send_gitlab("Tag Push Hook", "k4", &body, TEST_SECRET)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["ignored"],
        "tag `v1.0.0` was deleted; nothing to build"
    );
    kiln.stop().await;
}

//! A corrupt build or task record, end to end: the build's page says which record and which
//! field is unreadable, instead of showing a guess (trigger kind `push`, no artifacts).

use kiln_shared::build::BuildId;
use kiln_shared::record::{BuildField, TaskField};
use kiln_tests::Kiln;
use kiln_tests::forge::TestRepo;

/// `GET /builds/{id}`'s status and answer.
async fn build_page(kiln: &Kiln, id: u64) -> (u16, serde_json::Value) {
    let response = kiln
        .http
        .get(kiln.url(&format!("/builds/{id}")))
        .send()
        .await
        .expect("the bot answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_field_makes_the_record_unreadable_not_a_default() {
    let kiln = Kiln::start(&kiln_tests::config("")).await;
    let repo = TestRepo::new();
    let spec = "steps:\n  t:\n    runner: shell\n    run:\n      - echo hi\n";
    let commit = repo.commit("master", "One task", &[(".kiln.yml", spec)]);
    let id = kiln.push(&repo, "master", &commit, "records-1").await;
    assert_eq!(kiln.finished_build(id).await["status"], "passed");

    let redis = redis::Client::open(kiln.services.redis_url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let keys = kiln.keys().await;
    let set = |key: String, field: &'static str, value: &'static str| {
        let mut redis = redis.clone();
        async move {
            redis::cmd("HSET")
                .arg(key)
                .arg(field)
                .arg(value)
                .query_async::<()>(&mut redis)
                .await
                .expect("hset");
        }
    };

    let task = keys.task(BuildId(id), "t");
    set(task.clone(), TaskField::ArtifactsJson.name(), "{\"oops\"").await;
    let (status, answer) = build_page(&kiln, id).await;
    assert_eq!(status, 500, "{answer}");
    let error = answer["error"].as_str().expect("an error");
    assert!(
        error.contains(&task) && error.contains("field `artifacts_json` holds \"{\\\"oops\\\"\""),
        "{error}"
    );

    let build = keys.build(BuildId(id));
    set(build.clone(), BuildField::Kind.name(), "\"pish\"").await;
    let (status, answer) = build_page(&kiln, id).await;
    assert_eq!(status, 500, "{answer}");
    let error = answer["error"].as_str().expect("an error");
    assert!(
        error.contains(&build) && error.contains("field `kind` holds \"\\\"pish\\\"\""),
        "{error}"
    );

    // Put right, the records read again as they were.
    set(build, BuildField::Kind.name(), "\"push\"").await;
    set(task, TaskField::ArtifactsJson.name(), "[]").await;
    let (status, answer) = build_page(&kiln, id).await;
    assert_eq!(
        (status, &answer["status"]),
        (200, &"passed".into()),
        "{answer}"
    );
    kiln.stop().await;
}

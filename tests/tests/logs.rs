//! Following a task's log while it runs, end to end on the real services: its lines arrive
//! as the worker stores them, and the answer ends when the task does.

use kiln_tests::forge::TestRepo;
use kiln_tests::{E2E_TIMEOUT, Kiln};

/// The next piece of a followed log, `None` at its end.
async fn next_chunk(response: &mut reqwest::Response) -> Option<String> {
    let chunk = tokio::time::timeout(E2E_TIMEOUT, response.chunk())
        .await
        .expect("a piece of the log, or its end, in time")
        .expect("the answer goes on");
    chunk.map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_tasks_log_is_followed_until_it_ends() {
    let kiln = Kiln::start(&kiln_tests::config("")).await;
    let repo = TestRepo::new();
    let go = kiln.task_share().join("go");
    // The task waits (a bounded while) for the test to let it go.
    let spec = format!(
        "steps:\n  t:\n    runner: shell\n    run:\n      - echo first\n      - for i in $(seq 1 600); do [ -e {go} ] && break; sleep 0.05; done\n      - echo second\n",
        go = go.display()
    );
    let commit = repo.commit("master", "A waiting task", &[(".kiln.yml", &spec)]);
    let id = kiln.push(&repo, "master", &commit, "follow-1").await;

    let mut response = kiln.follow_log(id, "t").await;
    assert_eq!(response.status(), 200);
    let mut text = String::new();
    while !text.contains("first\n") {
        text += &next_chunk(&mut response).await.expect("more of the log");
    }
    assert!(!text.contains("second"), "{text}");

    std::fs::write(&go, "").expect("let the task go");
    while let Some(chunk) = next_chunk(&mut response).await {
        text += &chunk;
    }
    let first = text.find("first\n").expect("first");
    let second = text
        .find("second\n")
        .expect("the line written after following began");
    assert!(first < second, "{text}");
    // The answer ended because the task did.
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "passed", "{build:#}");

    // Following again, after the end, gives the whole log at once and ends.
    let whole = kiln
        .follow_log(id, "t")
        .await
        .text()
        .await
        .expect("the whole log");
    assert_eq!(whole, kiln.task_log(id, "t").await);

    for (query, status) in [("follow=true", 400), ("follow=true&task=nope", 404)] {
        let response = kiln
            .http
            .get(kiln.url(&format!("/builds/{id}/logs?{query}")))
            .send()
            .await
            .expect("the bot answers");
        assert_eq!(response.status(), status, "{query}");
        let answer: serde_json::Value = response.json().await.expect("json");
        assert!(answer["error"].is_string(), "{answer}");
    }
    kiln.stop().await;
}

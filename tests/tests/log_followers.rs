//! How many logs are followed at once, end to end on the real services: beyond the limit a
//! follower is told to come back later, and places come free as the followed tasks end.
//! (Its own test binary: the limit is the bot's, per process.)

use kiln_tests::forge::TestRepo;
use kiln_tests::{E2E_TIMEOUT, Kiln};

const MAX_FOLLOWERS: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_beyond_the_limit_are_told_to_come_back_later() {
    let kiln = Kiln::start(&kiln_tests::config("")).await;
    let repo = TestRepo::new();
    let go = kiln.task_share().join("go");
    let spec = format!(
        "steps:\n  t:\n    runner: shell\n    run:\n      - echo waiting\n      - for i in $(seq 1 600); do [ -e {go} ] && break; sleep 0.05; done\n",
        go = go.display()
    );
    let commit = repo.commit("master", "A waiting task", &[(".kiln.yml", &spec)]);
    let id = kiln.push(&repo, "master", &commit, "followers-1").await;

    let mut followers = Vec::new();
    for _ in 0..MAX_FOLLOWERS {
        let response = kiln.follow_log(id, "t").await;
        assert_eq!(response.status(), 200);
        followers.push(response);
    }
    let refused = kiln.follow_log(id, "t").await;
    assert_eq!(refused.status(), 503);
    let answer: serde_json::Value = refused.json().await.expect("json");
    let error = answer["error"].as_str().expect("an error");
    assert!(error.contains("64 logs are being followed"), "{error}");

    // The task ends, so do the answers, and their places come free.
    std::fs::write(&go, "").expect("let the task go");
    for follower in followers {
        let text = tokio::time::timeout(E2E_TIMEOUT, follower.text())
            .await
            .expect("the answer ends with the task")
            .expect("text");
        assert!(text.contains("waiting"), "{text}");
    }
    let again = kiln.follow_log(id, "t").await;
    assert_eq!(again.status(), 200);
    let text = again.text().await.expect("the whole log");
    assert!(text.contains("waiting"), "{text}");
    kiln.stop().await;
}

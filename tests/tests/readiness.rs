//! A bot whose RabbitMQ URL points at a closed port, with Redis up: it still starts, is
//! alive, says on `/readyz` that RabbitMQ is down and Redis up, stays ready for webhooks
//! (`/readyz/webhooks`, the load balancers' check) and takes a push into its outbox. Nothing
//! shared is stopped.

use std::time::Duration;

use kiln_tests::forge::{TestRepo, push_payload};
use kiln_tests::processes::start_bot;
use kiln_tests::services::unique_prefix;
use kiln_tests::{REPO, Services, TEST_SECRET, config, free_port, post_github};

/// How long any one answer of the bot may take.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// The status and JSON answer of the bot at `url`.
async fn get(http: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let response = http
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url} answers: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.expect("the answer's body");
    (status, serde_json::from_str(&text).unwrap_or(text.into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_without_its_broker_is_not_ready_and_still_takes_webhooks() {
    let shared = Services::require().await;
    let services = Services {
        // Nothing listens there: the port was free a moment ago.
        amqp_url: format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port()),
        redis_url: shared.redis_url,
    };
    let prefix = unique_prefix();
    let state = tempfile::tempdir().expect("temp dir");
    // Returns once `/healthz` answers 200, within its bound: the bot starts without a broker.
    let (bot, addr) = start_bot(&config(""), &services, &prefix, state.path()).await;
    let http = reqwest::Client::builder()
        .timeout(ANSWER_WITHIN)
        .build()
        .expect("HTTP client");

    let (status, ready) = get(&http, &format!("http://{addr}/readyz")).await;
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready["rabbitmq"]
            .as_str()
            .is_some_and(|s| s.starts_with("unreachable")),
        "{ready}"
    );
    assert_eq!(ready["redis"], "up", "{ready}");

    let (status, webhooks) = get(&http, &format!("http://{addr}/readyz/webhooks")).await;
    assert_eq!(status, 200, "{webhooks}");
    assert_eq!(webhooks["redis"], "up", "{webhooks}");
    assert_ne!(webhooks["rabbitmq"], "up", "{webhooks}");

    let (status, alive) = get(&http, &format!("http://{addr}/healthz")).await;
    assert_eq!((status, alive), (200, "ok".into()));

    // What the load balancers' check promises: a push is taken, into the outbox.
    let repo = TestRepo::new();
    let commit = repo.commit("master", "Not built here", &[(".kiln.yml", "steps: {}\n")]);
    let body = push_payload(REPO, "master", &commit, &repo.clone_url(), "Not built here");
    let url = format!("http://{addr}/hooks/github");
    let (status, answer) = post_github(&http, &url, "push", "no-broker", &body, TEST_SECRET)
        .await
        .expect("the push is answered");
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["outbox"], true, "{answer}");

    bot.stop().await;
    services.remove_everything_under(&prefix).await;
}

//! A GitHub push becomes a Docker build on a worker over RabbitMQ, logs in Redis, the result
//! in chat: end to end on the real services.

use kiln_shared::keys::Keys;
use kiln_tests::discord::FakeDiscord;
use kiln_tests::events::{next_build_finished, subscribe};
use kiln_tests::forge::{TestRepo, push_payload};
use kiln_tests::{E2E_TIMEOUT, Kiln, REPO, TEST_IMAGE, TEST_SECRET, wait_for};

const CHANNEL: u64 = 4242;

/// The Discord user the fixture's commit author (`baxterthehacker`) is, per the config.
const AUTHOR_ON_DISCORD: u64 = 1_100_000_000_000_000_777;

fn config(discord: &FakeDiscord) -> String {
    kiln_tests::config(&format!(
        r#"[discord]
token = "test-token"
channel_id = {CHANNEL}
api_url = "{}"
[[person]]
names = ["baxterthehacker"]
discord = {AUTHOR_ON_DISCORD}
"#,
        discord.url()
    ))
}

/// A two-step pipeline; `test` exits with `exit_code`, and `ship` needs it.
fn pipeline(exit_code: u8) -> String {
    format!(
        r#"steps:
  build:
    image: {TEST_IMAGE}
    run:
      - echo "building $KILN_COMMIT"
      - for i in 1 2 3 4 5; do echo "line $i"; done
      - echo "to stderr" >&2
  test:
    image: {TEST_IMAGE}
    needs: [build]
    run:
      - cat README
      - exit {exit_code}
  ship:
    image: {TEST_IMAGE}
    needs: [test]
    run: echo shipped
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passing_and_failing_pipelines_end_to_end() {
    let discord = FakeDiscord::start().await;
    let kiln = Kiln::start(&config(&discord)).await;
    let repo = TestRepo::new();
    let mut events = subscribe(&kiln, &format!("build.*.{REPO}.master")).await;

    // A passing pipeline on master.
    let commit = repo.commit(
        "master",
        "Add the pipeline",
        &[
            (".kiln.yml", &pipeline(0)),
            ("README", "hello from the repository\n"),
        ],
    );
    let body = push_payload(
        REPO,
        "master",
        &commit,
        &repo.clone_url(),
        "Add the pipeline",
    );
    let (status, answer) = kiln
        .send_github("push", "delivery-pass", &body, TEST_SECRET)
        .await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["build_id"].as_u64().expect("a build id");
    assert_eq!(answer["url"], format!("http://kiln.test/builds/{id}"));

    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    assert_eq!(build["commit"], commit);
    assert_eq!(build["branch"], "master");
    let statuses: Vec<_> = build["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap_or(""),
                t["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [("build", "passed"), ("test", "passed"), ("ship", "passed")]
    );

    // The log lines are in Redis, in order, stdout and stderr alike.
    let mut redis = redis::Client::open(kiln.services.redis_url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let key = kiln
        .keys()
        .await
        .logs(kiln_shared::build::BuildId(id), "build");
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&key)
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await
        .expect("xrange");
    // Docker copies stdout and stderr separately, so only the order within each is defined.
    let lines = |fd: &str| -> Vec<String> {
        entries
            .ids
            .iter()
            .filter(|e| e.get::<String>("fd").as_deref() == Some(fd))
            .filter_map(|e| e.get("line"))
            .collect()
    };
    let expected: Vec<String> = std::iter::once(format!("building {commit}"))
        .chain((1..=5).map(|i| format!("line {i}")))
        .collect();
    assert_eq!(lines("out"), expected);
    assert_eq!(lines("err"), ["to stderr"]);
    assert_eq!(entries.ids.len(), 7);
    let logs = kiln
        .http
        .get(kiln.url(&format!("/builds/{id}/logs")))
        .send()
        .await
        .expect("logs")
        .text()
        .await
        .expect("text");
    assert!(
        logs.contains("==> test (passed)\nhello from the repository\n"),
        "{logs}"
    );

    // Another team's queue bound to build.*.acme/api.master got the result.
    let finished = next_build_finished(&mut events).await;
    assert_eq!(finished.build.id.0, id);
    assert_eq!(finished.status, kiln_shared::build::BuildStatus::Passed);

    // A failing pipeline on master: the failing step's exit code, and what needed it skipped.
    let commit = repo.commit("master", "Break the tests", &[(".kiln.yml", &pipeline(3))]);
    let failed_id = kiln.push(&repo, "master", &commit, "delivery-fail").await;
    let build = kiln.finished_build(failed_id).await;
    assert_eq!(build["status"], "failed", "{build:#}");
    let test = &build["tasks"][1];
    assert_eq!(
        (test["name"].as_str(), test["status"].as_str()),
        (Some("test"), Some("failed"))
    );
    assert_eq!(test["exit_code"], 3);
    assert_eq!(test["outcome"], "failed with exit code 3");
    assert_eq!(build["tasks"][2]["status"], "skipped");
    let finished = next_build_finished(&mut events).await;
    assert_eq!(finished.build.id.0, failed_id);
    assert_eq!(finished.status, kiln_shared::build::BuildStatus::Failed);
    assert_eq!(finished.tasks[1].exit_code, Some(3));

    // Discord: each build's card, edited in place as it ran, then one notification of the
    // failure.
    let content = |m: &kiln_tests::discord::PostedMessage| {
        m.body["content"].as_str().unwrap_or_default().to_owned()
    };
    let shown = wait_for(
        "two final cards and a notification",
        E2E_TIMEOUT,
        || async {
            let shown = discord.channel(CHANNEL);
            let done = shown.len() == 3
                && content(&shown[0]).contains("**passed**")
                && content(&shown[1]).contains("**failed**");
            done.then_some(shown)
        },
    )
    .await;
    let passed = content(&shown[0]);
    for needle in ["acme/api", "master", &format!("#{id}"), "• ship: passed"] {
        assert!(passed.contains(needle), "`{needle}` missing from {passed}");
    }
    assert!(
        discord.edits_of(&shown[0].message_id) >= 1,
        "the card was posted once and edited as the build ran"
    );
    let buttons = &shown[0].body["components"][0]["components"];
    assert_eq!(buttons[0]["custom_id"], format!("logs {id}"), "{buttons:#}");
    assert_eq!(
        buttons[1]["custom_id"],
        format!("retry {id}"),
        "{buttons:#}"
    );
    assert_eq!(buttons[2]["url"], format!("http://kiln.test/builds/{id}"));
    let failed_card = content(&shown[1]);
    assert!(
        failed_card.contains("• test: failed (exit code 3)") && !failed_card.contains("<@"),
        "{failed_card}"
    );
    let failed = content(&shown[2]);
    for needle in [
        "acme/api",
        &commit[..10],
        "failed",
        "test: failed (exit code 3)",
    ] {
        assert!(failed.contains(needle), "`{needle}` missing from {failed}");
    }
    // The failure names its author, who alone may be pinged, and shows the failing lines.
    assert!(
        failed.starts_with(&format!("<@{AUTHOR_ON_DISCORD}> ❌")),
        "{failed}"
    );
    assert!(
        failed.contains("Last lines of test:\n```\nhello from the repository\n```"),
        "{failed}"
    );
    assert_eq!(
        shown[2].body["allowed_mentions"]["parse"],
        serde_json::json!([])
    );
    assert_eq!(
        shown[2].body["allowed_mentions"]["users"],
        serde_json::json!([AUTHOR_ON_DISCORD.to_string()])
    );
    assert!(
        !passed.contains("<@"),
        "a build that passed mentions nobody: {passed}"
    );

    // Every container was removed.
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
    assert!(
        kiln_tests::services::containers_named(&docker, &kiln.prefix)
            .await
            .is_empty()
    );
    kiln.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_deliveries_are_refused_and_nothing_is_queued_twice() {
    let discord = FakeDiscord::start().await;
    let kiln = Kiln::start(&config(&discord)).await;
    let repo = TestRepo::new();
    let commit = repo.commit(
        "master",
        "Add the pipeline",
        &[(".kiln.yml", &pipeline(0)), ("README", "x\n")],
    );
    let body = push_payload(
        REPO,
        "master",
        &commit,
        &repo.clone_url(),
        "Add the pipeline",
    );

    // A wrong signature: 401, and no build exists.
    let (status, answer) = kiln
        .send_github("push", "d-wrong", &body, "not-the-secret")
        .await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .expect("reason")
            .contains("signature")
    );
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

    // A body over GitHub's 25 MB payload cap.
    let huge = vec![b' '; kiln_bot::http::MAX_WEBHOOK_BYTES + 1];
    let (status, _) = kiln.send_github("push", "d-huge", &huge, TEST_SECRET).await;
    assert_eq!(status, 413);

    // An unknown repository, a malformed payload, a deleted tag, a ping.
    let other = push_payload("acme/other", "master", &commit, &repo.clone_url(), "x");
    let (status, answer) = kiln
        .send_github("push", "d-other", &other, TEST_SECRET)
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (
            404,
            Some("repository `acme/other` is not configured in Kiln")
        )
    );
    let (status, _) = kiln
        .send_github("push", "d-junk", b"{not json", TEST_SECRET)
        .await;
    assert_eq!(status, 400);
    let mut tag: serde_json::Value = serde_json::from_slice(&body).expect("json");
    tag["ref"] = "refs/tags/v1.0".into();
    tag["deleted"] = true.into();
    tag["after"] = "0".repeat(40).into();
    let tag = serde_json::to_vec(&tag).expect("json");
    let (status, answer) = kiln.send_github("push", "d-tag", &tag, TEST_SECRET).await;
    assert_eq!(
        (status, answer["ignored"].as_str()),
        (200, Some("tag `v1.0` was deleted; nothing to build"))
    );

    // The same delivery twice makes one build.
    let (first, answer) = kiln
        .send_github("push", "d-twice", &body, TEST_SECRET)
        .await;
    assert_eq!(first, 202, "{answer}");
    let id = answer["build_id"].as_u64().expect("id");
    let (second, again) = kiln
        .send_github("push", "d-twice", &body, TEST_SECRET)
        .await;
    assert_eq!(
        (
            second,
            again["build_id"].as_u64(),
            again["duplicate"].as_bool()
        ),
        (200, Some(id), Some(true))
    );
    assert_eq!(kiln.finished_build(id).await["status"], "passed");
    let builds: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:build:*:task:build:*", kiln.prefix))
        .query_async(&mut redis)
        .await
        .expect("keys");
    assert_eq!(builds.len(), 1, "one build ran: {builds:?}");
    kiln.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_pipeline_fails_the_build_with_line_and_column() {
    let discord = FakeDiscord::start().await;
    let kiln = Kiln::start(&config(&discord)).await;
    let repo = TestRepo::new();
    let broken = format!("steps:\n  build:\n    image: {TEST_IMAGE}\n    runs: make\n");
    let commit = repo.commit(
        "feature/x",
        "Typo in the pipeline",
        &[(".kiln.yml", &broken)],
    );
    let id = kiln.push(&repo, "feature/x", &commit, "d-broken").await;

    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "failed", "{build:#}");
    let error = build["error"].as_str().expect("a reason");
    assert!(
        error.starts_with(".kiln.yml line 4, column 5: unknown field `runs`"),
        "{error}"
    );

    // The card may be posted while the build is queued; it is edited to its end.
    let content = wait_for("the card of the failed build", E2E_TIMEOUT, || async {
        discord.messages().into_iter().rev().find_map(|m| {
            let content = m.body["content"].as_str()?;
            content.contains("failed").then(|| content.to_owned())
        })
    })
    .await;
    assert!(content.contains("line 4, column 5"), "{content}");
    kiln.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_build_cancelled_by_command_shows_so_on_its_card_at_once() {
    const TOKEN: &str = "alice-token-0123456789";
    let discord = FakeDiscord::start().await;
    let operator = format!("[[operator]]\nname = \"alice\"\ntoken = \"{TOKEN}\"\n");
    let kiln = Kiln::start(&format!("{}{operator}", config(&discord))).await;
    let repo = TestRepo::new();
    // No worker serves Windows here: the task stays queued, and no worker ever says a word
    // of it, so only the cancel itself can bring the card up to date.
    let spec = "steps:\n  t:\n    platforms: [windows/amd64]\n    runner: shell\n    run: 'true'\n";
    let commit = repo.commit("master", "Wait", &[(".kiln.yml", spec)]);
    let id = kiln.push(&repo, "master", &commit, "d-cancel-queued").await;
    let card = |word: &'static str| {
        let discord = &discord;
        move || async move {
            discord.messages().into_iter().rev().find_map(|m| {
                let content = m.body["content"].as_str()?;
                (content.contains(&format!("#{id}")) && content.contains(word))
                    .then(|| content.to_owned())
            })
        }
    };
    wait_for("the card of the queued build", E2E_TIMEOUT, card("queued")).await;

    let (status, reply) = kiln.command(TOKEN, &format!("cancel {id}")).await;
    assert_eq!(status, 200, "{reply}");
    // Well before the card's keeper would look again by itself (every 30 s).
    wait_for(
        "the card to say cancelled",
        std::time::Duration::from_secs(15),
        card("cancelled"),
    )
    .await;
    kiln.stop().await;
}

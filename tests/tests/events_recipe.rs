//! Another team's subscription, exactly as the README's recipe puts it: a queue of its own
//! bound to `kiln.events` with `build.*.<repo>.master` gets that branch's build events, and
//! nothing of other branches or of tasks; its verdict, reported back with its token, shows
//! on the build's card.

use kiln_shared::wire::Event;
use kiln_tests::discord::FakeDiscord;
use kiln_tests::events::{next_event, subscribe};
use kiln_tests::forge::TestRepo;
use kiln_tests::{E2E_TIMEOUT, Kiln, REPO, TEST_IMAGE, wait_for};
use serde_json::json;

const CHANNEL: u64 = 4343;
const SCAN_TOKEN: &str = "security-scan-token-0123";
const OTHER_TOKEN: &str = "other-scan-token-0123456";

/// Kiln with a reporter on the test's repository, another on another repository, and a
/// Discord channel that follows everything.
fn config(discord: &FakeDiscord) -> String {
    kiln_tests::config(&format!(
        r#"[[repository.reporter]]
name = "security-scan"
token = "{SCAN_TOKEN}"
[[repository]]
name = "acme/other"
webhook_secret = "other-secret"
[[repository.reporter]]
name = "other-scan"
token = "{OTHER_TOKEN}"
[discord]
token = "test-token"
channel_id = {CHANNEL}
api_url = "{}"
"#,
        discord.url()
    ))
}

/// Posts a report with `token`: the status and the answer.
async fn report(kiln: &Kiln, token: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let response = kiln
        .http
        .post(kiln.url("/api/reports"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("the bot answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_bound_to_a_branch_gets_exactly_its_build_events() {
    let discord = FakeDiscord::start().await;
    let kiln = Kiln::start(&config(&discord)).await;
    let mut events = subscribe(&kiln, &format!("build.*.{REPO}.master")).await;
    let repo = TestRepo::new();
    let spec = format!("steps:\n  only:\n    image: {TEST_IMAGE}\n    run: echo fine\n");

    // First a build of another branch, then one of master: events of one installation are
    // published in order, so the feature branch's would arrive first if they matched.
    let feature = repo.commit("feature/x", "Elsewhere", &[(".kiln.yml", &spec)]);
    let other = kiln.push(&repo, "feature/x", &feature, "d-recipe-1").await;
    kiln.finished_build(other).await;
    let master = repo.commit("master", "Here", &[(".kiln.yml", &spec)]);
    let id = kiln.push(&repo, "master", &master, "d-recipe-2").await;

    let mut received = Vec::new();
    loop {
        let event = next_event(&mut events).await;
        let done = matches!(event, Event::BuildFinished(_));
        received.push((event.routing_key(), event.build().id.0));
        if done {
            break;
        }
    }
    assert_eq!(
        received,
        [
            (format!("build.requested.{REPO}.master"), id),
            (format!("build.passed.{REPO}.master"), id),
        ]
    );

    // The team's verdict, with its token: on the card, and in the build's record.
    let verdict =
        json!({ "build": id, "verdict": "failed", "summary": "2 known @everyone vulnerabilities" });
    let (status, answer) = report(&kiln, SCAN_TOKEN, verdict.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["reporter"], "security-scan");
    let card = wait_for("the report on the card", E2E_TIMEOUT, || async {
        discord.channel(CHANNEL).into_iter().find_map(|m| {
            let content = m.body["content"].as_str()?.to_owned();
            (content.contains(&format!("build #{id}")) && content.contains("security"))
                .then_some(content)
        })
    })
    .await;
    assert!(
        card.contains("❌ security\\-scan: 2 known @\u{200B}everyone vulnerabilities"),
        "{card}"
    );
    let build = kiln.build(id).await.expect("the build");
    assert_eq!(build["reports"][0]["verdict"], "failed", "{build:#}");

    // Refused, and nothing recorded: another repository's token, none, no such build, not
    // a report.
    assert_eq!(report(&kiln, OTHER_TOKEN, verdict.clone()).await.0, 401);
    assert_eq!(report(&kiln, "", verdict.clone()).await.0, 401);
    let nowhere = json!({ "build": 999, "verdict": "passed", "summary": "x" });
    assert_eq!(report(&kiln, SCAN_TOKEN, nowhere).await.0, 404);
    let (status, _) = report(
        &kiln,
        SCAN_TOKEN,
        json!({ "build": id, "verdict": "great" }),
    )
    .await;
    assert_eq!(status, 422);
    let build = kiln.build(id).await.expect("the build");
    assert_eq!(
        build["reports"].as_array().map(Vec::len),
        Some(1),
        "{build:#}"
    );
}

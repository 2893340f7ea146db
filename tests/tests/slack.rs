//! Slack, end to end on the real services: a signed slash command is acknowledged at once and
//! answered through its `response_url`; permissions come from Kiln's configuration; a
//! request without Slack's signature, or too old, changes nothing. A channel that subscribes
//! gets each build's card, updated as it runs, and a notification of a failure.

use kiln_tests::forge::TestRepo;
use kiln_tests::slack::{
    BOT_TOKEN, FakeSlack, block_action, now, send, slash_command, slash_command_in,
};
use kiln_tests::{E2E_TIMEOUT, Kiln, REPO, TEST_IMAGE, wait_for};

const SIGNING_SECRET: &str = "slack-signing-secret-for-tests";

fn config() -> String {
    kiln_tests::config(&format!(
        r#"[slack]
signing_secret = "{SIGNING_SECRET}"
teams = ["T1"]
[[permission]]
users = ["slack:UALICE"]
commands = ["cancel"]
repos = ["acme/*"]
"#
    ))
}

/// Slack with a bot token, pointed at `slack`'s Web API; Alice may subscribe channels.
fn config_with_bot(slack: &FakeSlack) -> String {
    kiln_tests::config(&format!(
        r#"[slack]
signing_secret = "{SIGNING_SECRET}"
bot_token = "{BOT_TOKEN}"
api_url = "{}"
[[permission]]
users = ["slack:UALICE"]
commands = ["subscribe", "unsubscribe"]
[[person]]
names = ["baxterthehacker"]
slack = "UBAXTER"
"#,
        slack.api_url()
    ))
}

/// Posts the slash command `body` to the bot as Slack would, signed at `timestamp` with
/// `secret`.
async fn post(kiln: &Kiln, body: &str, secret: &str, timestamp: u64) -> (u16, serde_json::Value) {
    send(kiln, "/slack/commands", body, secret, timestamp).await
}

/// Waits for the answer number `n` (from 1) to reach the fake's `response_url`.
async fn answer(slack: &FakeSlack, n: usize) -> String {
    wait_for("an answer through response_url", E2E_TIMEOUT, || async {
        slack
            .answers()
            .get(n - 1)
            .map(|a| a["text"].as_str().unwrap_or_default().to_owned())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slash_commands_are_verified_permitted_and_answered() {
    let kiln = Kiln::start(&config()).await;
    let slack = FakeSlack::start().await;
    let repo = TestRepo::new();
    let spec =
        format!("steps:\n  long:\n    image: {TEST_IMAGE}\n    run: [echo started, sleep 600]\n");
    let commit = repo.commit("master", "Long", &[(".kiln.yml", &spec)]);
    let id = kiln.push(&repo, "master", &commit, "delivery-slack").await;
    wait_for("the build to run", E2E_TIMEOUT, || async {
        let build = kiln.build(id).await?;
        (build["status"] == "running").then_some(())
    })
    .await;

    // Not Slack: a wrong secret, or a request replayed after five minutes.
    let cancel = slash_command(
        "UALICE",
        "alice",
        &format!("cancel {id}"),
        &slack.response_url(1),
    );
    let (status, _) = post(&kiln, &cancel, "not-the-secret", now()).await;
    assert_eq!(status, 401);
    let (status, _) = post(&kiln, &cancel, SIGNING_SECRET, now() - 6 * 60).await;
    assert_eq!(status, 401);

    // Bob may look, not cancel.
    let status_command = slash_command("UBOB", "bob", "status", &slack.response_url(2));
    let (code, ack) = post(&kiln, &status_command, SIGNING_SECRET, now()).await;
    assert_eq!(
        (code, ack["response_type"].as_str()),
        (200, Some("ephemeral"))
    );
    assert!(
        answer(&slack, 1)
            .await
            .starts_with(&format!("#{id} {REPO} master"))
    );
    let refused = slash_command(
        "UBOB",
        "bob",
        &format!("/cancel #{id}"),
        &slack.response_url(3),
    );
    let (code, _) = post(&kiln, &refused, SIGNING_SECRET, now()).await;
    assert_eq!(code, 200);
    let text = answer(&slack, 2).await;
    assert!(text.contains("bob may not `cancel` on acme/api"), "{text}");
    assert_eq!(kiln.build(id).await.expect("build")["status"], "running");

    // Alice may.
    let (code, ack) = post(&kiln, &cancel, SIGNING_SECRET, now()).await;
    assert_eq!(code, 200);
    assert_eq!(ack["text"], format!("Working on `cancel {id}`…"));
    let text = answer(&slack, 3).await;
    assert_eq!(
        text,
        format!("Build #{id} cancelled, with 1 unfinished task(s).")
    );
    assert_eq!(kiln.build(id).await.expect("build")["status"], "cancelled");

    // Slack's answers are escaped: nothing in them can mention a channel.
    let hostile = slash_command("UBOB", "bob", "<!channel>", &slack.response_url(4));
    post(&kiln, &hostile, SIGNING_SECRET, now()).await;
    let text = answer(&slack, 4).await;
    assert!(
        text.contains("&lt;!channel&gt;") && !text.contains("<!channel>"),
        "{text}"
    );

    // Another workspace, however well signed, is turned away and nothing is run.
    let elsewhere = slash_command("UALICE", "alice", "status", &slack.response_url(5))
        .replace("team_id=T1", "team_id=T2");
    let (code, ack) = post(&kiln, &elsewhere, SIGNING_SECRET, now()).await;
    assert_eq!(code, 200);
    assert_eq!(
        ack["text"],
        "Kiln does not take commands from this workspace."
    );

    // A command given after it is answered next: nothing came of the refused one.
    let later = slash_command("UBOB", "bob", "help", &slack.response_url(6));
    post(&kiln, &later, SIGNING_SECRET, now()).await;
    assert!(answer(&slack, 5).await.starts_with("Kiln's commands"));
    assert_eq!(slack.answers().len(), 5, "one answer per verified command");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribed_channel_gets_cards_and_failure_notifications() {
    let slack = FakeSlack::start().await;
    let kiln = Kiln::start(&config_with_bot(&slack)).await;
    let repo = TestRepo::new();
    let command =
        |user: &str, text: &str, n: u32| slash_command(user, user, text, &slack.response_url(n));

    // Bob may not subscribe a channel; Alice may, to master.
    post(
        &kiln,
        &command("UBOB", "subscribe acme/api", 1),
        SIGNING_SECRET,
        now(),
    )
    .await;
    let refused = answer(&slack, 1).await;
    assert!(refused.contains("UBOB may not `subscribe`"), "{refused}");
    let subscribe = command("UALICE", "subscribe acme/api@master", 2);
    post(&kiln, &subscribe, SIGNING_SECRET, now()).await;
    assert_eq!(
        answer(&slack, 2).await,
        "This channel now follows acme/api@master: every build, its card edited as it runs."
    );
    post(
        &kiln,
        &command("UBOB", "subscriptions", 3),
        SIGNING_SECRET,
        now(),
    )
    .await;
    assert_eq!(
        answer(&slack, 3).await,
        "This channel follows:\n• acme/api@master"
    );
    // Another channel wants only failures, of every branch.
    let failures = slash_command_in(
        "C2",
        "UALICE",
        "alice",
        "subscribe acme/api failed",
        &slack.response_url(4),
    );
    post(&kiln, &failures, SIGNING_SECRET, now()).await;
    assert_eq!(
        answer(&slack, 4).await,
        "This channel now follows acme/api: builds that are failed."
    );

    // A build of another branch: not for this channel.
    let spec = format!("steps:\n  only:\n    image: {TEST_IMAGE}\n    run: echo fine\n");
    let other = repo.commit("feature/x", "Elsewhere", &[(".kiln.yml", &spec)]);
    let elsewhere = kiln.push(&repo, "feature/x", &other, "d-slack-other").await;
    kiln.finished_build(elsewhere).await;

    // A failing build of master: its card, updated to the end, then the notification.
    let spec = format!(
        "steps:\n  test:\n    image: {TEST_IMAGE}\n    run: [echo '<!channel> expected 2', exit 4]\n"
    );
    let commit = repo.commit("master", "Break it", &[(".kiln.yml", &spec)]);
    let id = kiln.push(&repo, "master", &commit, "d-slack-fail").await;
    assert_eq!(kiln.finished_build(id).await["status"], "failed");
    let shown = wait_for(
        "the final card and the notification",
        E2E_TIMEOUT,
        || async {
            let shown = slack.channel("C1");
            let done = shown.len() == 2 && shown[0]["text"].as_str()?.contains("*failed*");
            done.then_some(shown)
        },
    )
    .await;
    let card = shown[0]["text"].as_str().expect("text");
    assert!(
        card.starts_with(&format!("❌ *acme/api* on master: build #{id} *failed*")),
        "{card}"
    );
    assert!(card.contains("• test: failed (exit code 4)"), "{card}");
    assert!(
        slack.updates_of(shown[0]["ts"].as_str().expect("ts")) >= 1,
        "the card was updated in place"
    );
    let actions = &shown[0]["blocks"][1]["elements"];
    assert_eq!(actions[0]["value"], format!("logs {id}"), "{actions:#}");
    assert_eq!(actions[1]["value"], format!("retry {id}"), "{actions:#}");
    assert_eq!(actions[2]["url"], format!("http://kiln.test/builds/{id}"));
    let notification = shown[1]["text"].as_str().expect("text");
    assert!(notification.starts_with("<@UBAXTER> ❌"), "{notification}");
    assert!(
        notification.contains("Last lines of test:\n```\n&lt;!channel&gt; expected 2\n```"),
        "{notification}"
    );
    // The failures channel: that notification alone, no card.
    let alone = wait_for(
        "the failures channel's notification",
        E2E_TIMEOUT,
        || async {
            let shown = slack.channel("C2");
            (!shown.is_empty()).then_some(shown)
        },
    )
    .await;
    assert_eq!(alone.len(), 1, "{alone:#?}");
    assert_eq!(alone[0]["text"], shown[1]["text"]);

    // The card's Logs button, clicked by Bob: the logs, privately. Unsigned clicks do nothing.
    let click = block_action("UBOB", &format!("logs {id}"), &slack.response_url(9));
    let (code, _) = send(&kiln, "/slack/actions", &click, "not-the-secret", now()).await;
    assert_eq!(code, 401);
    let (code, _) = send(&kiln, "/slack/actions", &click, SIGNING_SECRET, now()).await;
    assert_eq!(code, 200);
    let logs = answer(&slack, 5).await;
    assert!(
        logs.starts_with(&format!(
            "Build #{id}, task `test` (failed with exit code 4)"
        )),
        "{logs}"
    );

    // Unsubscribed, the channel hears no more.
    let unsubscribe = command("UALICE", "unsubscribe acme/api", 6);
    post(&kiln, &unsubscribe, SIGNING_SECRET, now()).await;
    assert_eq!(
        answer(&slack, 6).await,
        "This channel no longer follows acme/api@master."
    );
    post(
        &kiln,
        &command("UBOB", "subscriptions", 7),
        SIGNING_SECRET,
        now(),
    )
    .await;
    assert!(
        answer(&slack, 7)
            .await
            .starts_with("This channel follows no repository")
    );
    // The next failure reaches the failures channel, and not this one.
    let again = kiln.push(&repo, "master", &commit, "d-slack-again").await;
    kiln.finished_build(again).await;
    wait_for("the second failure's notification", E2E_TIMEOUT, || async {
        (slack.channel("C2").len() == 2).then_some(())
    })
    .await;
    assert_eq!(slack.channel("C1").len(), 2, "{:#?}", slack.channel("C1"));
}

//! Zulip, end to end on the real services: a mention of Kiln's outgoing webhook bot carries a
//! command, checked against the bot's token and Kiln's permissions and answered in the
//! webhook's response; a topic that subscribes gets each build's card through Zulip's REST
//! API, edited as it runs, and a notification of a failure that mentions its author.

use kiln_tests::forge::TestRepo;
use kiln_tests::zulip::{API_KEY, BOT_EMAIL, FakeZulip, mention, send_command};
use kiln_tests::{E2E_TIMEOUT, Kiln, TEST_IMAGE, wait_for};

const TOKEN: &str = "zulip-outgoing-token-for-tests";

/// The builds stream, and its topic that follows acme/api.
const STREAM: u64 = 5;
const TOPIC: &str = "acme/api builds";

/// Ada (user 7) may subscribe topics; Bob (user 8) may not.
const ADA: (u64, &str) = (7, "Ada Lovelace");
const BOB: (u64, &str) = (8, "Bob");

fn config(zulip: &FakeZulip) -> String {
    kiln_tests::config(&format!(
        r#"[zulip]
url = "{}"
bot_email = "{BOT_EMAIL}"
api_key = "{API_KEY}"
token = "{TOKEN}"
[[permission]]
users = ["zulip:7"]
commands = ["subscribe", "unsubscribe"]
[[person]]
names = ["baxterthehacker"]
zulip = "Baxter|21"
"#,
        zulip.url()
    ))
}

/// What Kiln answers `sender`'s `text` in the topic: the response's `content`.
async fn ask(kiln: &Kiln, sender: (u64, &str), text: &str) -> String {
    let (status, answer) = send_command(kiln, &mention(TOKEN, sender, STREAM, TOPIC, text)).await;
    assert_eq!(status, 200, "{answer}");
    answer["content"]
        .as_str()
        .expect("an answer's content")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_verified_permitted_and_answered() {
    let zulip = FakeZulip::start().await;
    let kiln = Kiln::start(&config(&zulip)).await;

    // A request without the bot's token, or not Zulip's at all, is refused and does nothing.
    let forged = mention("not-the-token", ADA, STREAM, TOPIC, "subscribe acme/api");
    let (status, answer) = send_command(&kiln, &forged).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(
        answer["error"],
        "the token does not match the outgoing webhook's"
    );
    let (status, answer) = send_command(&kiln, &serde_json::json!({ "token": TOKEN })).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("not a Zulip outgoing webhook")),
        "{answer}"
    );
    assert_eq!(
        ask(&kiln, ADA, "subscriptions").await,
        "This channel follows no repository; `subscribe <owner/repo>` makes it.",
        "the forged subscribe changed nothing"
    );

    // An unknown command gets the grammar's answer; a mention in an answer pings no one.
    let typo = ask(&kiln, BOB, "cancle 3").await;
    assert!(typo.contains("did you mean `cancel`"), "{typo}");
    let refused = ask(&kiln, BOB, "subscribe acme/api").await;
    assert_eq!(
        refused,
        "Bob may not `subscribe` on acme/api; a `[[permission]]` in Kiln's configuration must name `zulip:8`."
    );
    let hostile = ask(&kiln, BOB, "help @**all**").await;
    assert!(!hostile.contains("@**all**"), "{hostile}");
    assert!(hostile.contains("@\u{200B}**all**"), "{hostile}");
    assert_eq!(
        ask(&kiln, ADA, "subscribe acme/api").await,
        "This channel now follows acme/api: every build, its card edited as it runs."
    );
    assert_eq!(
        ask(&kiln, BOB, "subscriptions").await,
        "This channel follows:\n• acme/api"
    );
    assert!(
        zulip.topic(STREAM, TOPIC).is_empty(),
        "answers go in the response"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribed_topic_gets_cards_and_failure_notifications() {
    let zulip = FakeZulip::start().await;
    let kiln = Kiln::start(&config(&zulip)).await;
    let repo = TestRepo::new();
    assert_eq!(
        ask(&kiln, ADA, "subscribe acme/api@master").await,
        "This channel now follows acme/api@master: every build, its card edited as it runs."
    );

    let spec = format!(
        "steps:\n  test:\n    image: {TEST_IMAGE}\n    run: [echo '@**all** expected 2', exit 4]\n"
    );
    let commit = repo.commit("master", "Break it", &[(".kiln.yml", &spec)]);
    let id = kiln.push(&repo, "master", &commit, "d-zulip-fail").await;
    assert_eq!(kiln.finished_build(id).await["status"], "failed");
    let shown = wait_for(
        "the final card and the notification",
        E2E_TIMEOUT,
        || async {
            let shown = zulip.topic(STREAM, TOPIC);
            let done = shown.len() == 2 && shown[0].content.contains("**failed**");
            done.then_some(shown)
        },
    )
    .await;
    let card = &shown[0];
    assert!(
        card.content.starts_with(&format!(
            "❌ **acme/api** on master: build #{id} **failed**"
        )),
        "{card:#?}"
    );
    assert!(
        card.content.contains("* test: failed (exit code 4)"),
        "{card:#?}"
    );
    assert!(
        card.content.contains(&format!(
            "[Build #{id}](http://kiln.test/builds/{id}) · [logs](http://kiln.test/builds/{id}/logs) · `logs {id}` · `retry {id}`"
        )),
        "{card:#?}"
    );
    assert!(card.edits >= 1, "the card was edited in place: {card:#?}");
    let notification = &shown[1].content;
    assert!(
        notification.starts_with("@**Baxter|21** ❌"),
        "{notification}"
    );
    assert!(
        notification.contains("Last lines of test:\n```\n@**all** expected 2\n```"),
        "the log is quoted in a code block, where Zulip renders no mention: {notification}"
    );
}

//! Discord's slash commands over the interactions endpoint, end to end on the real services:
//! Ed25519-signed requests (a test key pair), PING answered, a command deferred at once and
//! its result edited in through the fake Discord API; unsigned or stale requests refused. A
//! build started from Discord gets a card edited to its end, whose buttons give commands.

use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::{Signer, SigningKey};
use kiln_tests::discord::FakeDiscord;
use kiln_tests::forge::TestRepo;
use kiln_tests::{E2E_TIMEOUT, Kiln, TEST_IMAGE, wait_for};
use serde_json::json;

/// RFC 8032 section 7.1, TEST 1: a published key pair, for tests only.
const SECRET_KEY: [u8; 32] = [
    0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c, 0xc4,
    0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60,
];
const PUBLIC_KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
const APPLICATION_ID: u64 = 1_100_000_000_000_000_010;
const GUILD: u64 = 1_100_000_000_000_000_020;
/// A role whose members may retry builds.
const MAINTAINERS: u64 = 1_100_000_000_000_000_050;
/// The channel that follows every repository.
const CHANNEL: u64 = 1_100_000_000_000_000_099;

fn config(discord: &FakeDiscord) -> String {
    config_with(discord, "")
}

/// The configuration, with `repository` lines added to the repository's section.
fn config_with(discord: &FakeDiscord, repository: &str) -> String {
    kiln_tests::config(&format!(
        r#"{repository}
[discord]
token = "test-token"
channel_id = {CHANNEL}
api_url = "{}"
public_key = "{PUBLIC_KEY}"
application_id = {APPLICATION_ID}
guilds = [{GUILD}]
[[permission]]
users = ["discord:42"]
commands = ["cancel", "build"]
[[permission]]
roles = ["discord:{MAINTAINERS}"]
commands = ["retry"]
"#,
        discord.url()
    ))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Posts `body` as Discord would, signed with `key` at `timestamp`.
async fn post(
    kiln: &Kiln,
    body: &serde_json::Value,
    key: &SigningKey,
    timestamp: u64,
) -> (u16, serde_json::Value) {
    let body = body.to_string();
    let mut signed = timestamp.to_string().into_bytes();
    signed.extend_from_slice(body.as_bytes());
    let signature = hex::encode(key.sign(&signed).to_bytes());
    let response = kiln
        .http
        .post(kiln.url("/discord/interactions"))
        .header("content-type", "application/json")
        .header("x-signature-ed25519", signature)
        .header("x-signature-timestamp", timestamp.to_string())
        .body(body)
        .send()
        .await
        .expect("the bot answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

fn command(token: &str, user: &str, name: &str, options: serde_json::Value) -> serde_json::Value {
    json!({
        "id": "1100000000000000100", "application_id": APPLICATION_ID.to_string(),
        "type": 2, "token": token, "version": 1, "guild_id": GUILD.to_string(),
        "channel_id": "1100000000000000030",
        "member": { "user": { "id": user, "username": format!("user{user}") } },
        "data": { "id": "1100000000000000101", "name": name, "options": options }
    })
}

/// A click on the button with `custom_id` of a message Kiln posted, by `user` with `roles`.
fn click(token: &str, user: &str, roles: &[u64], custom_id: &str) -> serde_json::Value {
    let roles: Vec<String> = roles.iter().map(u64::to_string).collect();
    json!({
        "id": "1100000000000000102", "application_id": APPLICATION_ID.to_string(),
        "type": 3, "token": token, "version": 1, "guild_id": GUILD.to_string(),
        "channel_id": CHANNEL.to_string(),
        "member": { "user": { "id": user, "username": format!("user{user}") }, "roles": roles },
        "data": { "custom_id": custom_id, "component_type": 2 }
    })
}

/// Waits for the answer to the interaction with `token`.
async fn answer(discord: &FakeDiscord, token: &str) -> serde_json::Value {
    let key = format!("interaction:{token}");
    wait_for("the command's answer", E2E_TIMEOUT, || async {
        discord
            .interaction_answers()
            .into_iter()
            .find(|m| m.channel_id == key)
            .map(|m| m.body)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slash_commands_are_verified_deferred_and_answered() {
    let discord = FakeDiscord::start().await;
    let kiln = Kiln::start(&config(&discord)).await;
    let key = SigningKey::from_bytes(&SECRET_KEY);
    let repo = TestRepo::new();
    let spec =
        format!("steps:\n  long:\n    image: {TEST_IMAGE}\n    run: [echo started, sleep 600]\n");
    let commit = repo.commit("master", "Long", &[(".kiln.yml", &spec)]);
    let id = kiln
        .push(&repo, "master", &commit, "delivery-discord")
        .await;

    let (status, pong) = post(&kiln, &json!({ "type": 1 }), &key, now()).await;
    assert_eq!((status, pong), (200, json!({ "type": 1 })));

    // Not Discord: another key, or a replay after five minutes. Nothing is answered.
    let cancel = command(
        "t-cancel",
        "42",
        "cancel",
        json!([{ "name": "build", "type": 4, "value": id }]),
    );
    let stranger = SigningKey::from_bytes(&[7; 32]);
    assert_eq!(post(&kiln, &cancel, &stranger, now()).await.0, 401);
    assert_eq!(post(&kiln, &cancel, &key, now() - 6 * 60).await.0, 401);

    // Someone without permission is refused, in words.
    let refused = command(
        "t-refused",
        "7",
        "kiln",
        json!([{ "name": "command", "type": 3, "value": format!("cancel {id}") }]),
    );
    let (status, deferred) = post(&kiln, &refused, &key, now()).await;
    assert_eq!(
        (status, deferred),
        (200, json!({ "type": 5, "data": { "flags": 64 } }))
    );
    let text = answer(&discord, "t-refused").await["content"].clone();
    assert!(
        text.as_str()
            .unwrap_or_default()
            .contains("user7 may not `cancel`"),
        "{text}"
    );

    // The permitted user cancels the running build; the answer carries no mentions.
    wait_for("the task to start", E2E_TIMEOUT, || async {
        kiln.task_log(id, "long")
            .await
            .contains("started")
            .then_some(())
    })
    .await;
    let (status, _) = post(&kiln, &cancel, &key, now()).await;
    assert_eq!(status, 200);
    let answered = answer(&discord, "t-cancel").await;
    assert_eq!(
        answered["content"],
        format!("Build #{id} cancelled, with 1 unfinished task(s).")
    );
    assert_eq!(answered["allowed_mentions"]["parse"], json!([]));
    wait_for("the build to be cancelled", E2E_TIMEOUT, || async {
        (kiln.build(id).await?["status"] == "cancelled").then_some(())
    })
    .await;
    // A direct message, or another server: turned away at once, nothing run.
    let mut direct = command("t-direct", "42", "status", json!([]));
    direct.as_object_mut().expect("object").remove("guild_id");
    let (status, refused) = post(&kiln, &direct, &key, now()).await;
    assert_eq!(status, 200);
    assert_eq!(refused["type"], 4);
    assert_eq!(
        refused["data"]["content"],
        "Kiln does not take commands from here."
    );

    assert_eq!(
        discord.interaction_answers().len(),
        2,
        "only verified commands are answered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_the_kiln_slash_command() {
    let discord = FakeDiscord::start().await;
    let config = kiln_bot::Config::parse(&config(&discord)).expect("config");
    let interactions = kiln_bot::vendors::discord::interactions::Interactions::new(
        config.discord.as_ref().expect("discord"),
    )
    .expect("valid")
    .expect("configured");
    assert_eq!(interactions.register().await.expect("registered"), ["kiln"]);
    let sent = discord
        .messages()
        .into_iter()
        .find(|m| m.channel_id == format!("commands:{APPLICATION_ID}"))
        .expect("the commands were sent");
    assert_eq!(sent.body[0]["name"], "kiln");
    assert_eq!(sent.body[0]["options"][0]["name"], "command");
    assert_eq!(sent.body[0]["options"][0]["type"], 3, "a string");
    assert_eq!(sent.body[0]["options"][0]["required"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_from_discord_gets_a_card_edited_to_its_end_whose_buttons_give_commands() {
    let discord = FakeDiscord::start().await;
    let repo = TestRepo::new();
    let spec = format!(
        "steps:\n  first:\n    image: {TEST_IMAGE}\n    run: echo one\n  \
         second:\n    image: {TEST_IMAGE}\n    needs: [first]\n    run: echo two\n"
    );
    repo.commit("master", "Two steps", &[(".kiln.yml", &spec)]);
    let clone_url = format!("clone_url = \"{}\"", repo.clone_url());
    let kiln = Kiln::start(&config_with(&discord, &clone_url)).await;
    let key = SigningKey::from_bytes(&SECRET_KEY);

    let build = command(
        "t-build",
        "42",
        "kiln",
        json!([{ "name": "command", "type": 3, "value": "build acme/api" }]),
    );
    let (status, deferred) = post(&kiln, &build, &key, now()).await;
    assert_eq!((status, deferred["type"].as_u64()), (200, Some(5)));
    let text = answer(&discord, "t-build").await["content"].clone();
    let text = text.as_str().unwrap_or_default();
    assert!(text.starts_with("Build #1 of acme/api master ("), "{text}");
    assert_eq!(kiln.finished_build(1).await["status"], "passed");

    // One card in the channel that follows every repository, edited to the end.
    let card = wait_for("the card to show the end", E2E_TIMEOUT, || async {
        let shown = discord.channel(CHANNEL);
        let content = shown.first()?.body["content"].as_str()?.to_owned();
        content.contains("**passed**").then_some((shown, content))
    })
    .await;
    let (shown, content) = card;
    assert_eq!(
        shown.len(),
        1,
        "one card, not a message per event: {shown:#?}"
    );
    assert!(
        content.contains("• first: passed\n• second: passed"),
        "{content}"
    );
    assert!(discord.edits_of(&shown[0].message_id) >= 1);
    // And one in the channel the command was given in.
    wait_for("the card where /build was typed", E2E_TIMEOUT, || async {
        let shown = discord.channel(1_100_000_000_000_000_030);
        let content = shown.first()?.body["content"].as_str()?.to_owned();
        (shown.len() == 1 && content.contains("**passed**")).then_some(())
    })
    .await;

    // Its Logs button, clicked by anyone: the logs, privately.
    let (status, deferred) = post(&kiln, &click("t-click", "7", &[], "logs 1"), &key, now()).await;
    assert_eq!(
        (status, deferred),
        (200, json!({ "type": 5, "data": { "flags": 64 } }))
    );
    let logs = answer(&discord, "t-click").await["content"].clone();
    let logs = logs.as_str().unwrap_or_default();
    assert!(
        logs.starts_with("Build #1, task `second` (passed"),
        "{logs}"
    );
    assert!(logs.contains("two"), "{logs}");
    // Its Retry button gives `retry`, with the permissions that takes.
    post(&kiln, &click("t-retry", "7", &[], "retry 1"), &key, now()).await;
    let refused = answer(&discord, "t-retry").await["content"].clone();
    assert!(
        refused
            .as_str()
            .unwrap_or_default()
            .contains("user7 may not `retry`"),
        "{refused}"
    );
    // A maintainer (by role) may.
    let retry = click("t-retry-2", "8", &[MAINTAINERS], "retry 1");
    post(&kiln, &retry, &key, now()).await;
    let done = answer(&discord, "t-retry-2").await["content"].clone();
    assert_eq!(
        done,
        "Build #2 runs build #1 again (acme/api master), for user8."
    );
    assert_eq!(kiln.finished_build(2).await["status"], "passed");
}

//! Promotion, end to end on the real services with a bare repository on disk as the forge:
//! `promote` picks a passed commit of `master`, approvals come from others, `production` moves
//! by a real `git push` (fast-forward only), the move is built, and every step is an event.

use kiln_shared::promotion::PromotionEvent;
use kiln_tests::events::{next_message, subscribe};
use kiln_tests::forge::{TestRepo, push_payload};
use kiln_tests::slack::{BOT_TOKEN, FakeSlack, block_action, now, send, slash_command};
use kiln_tests::{E2E_TIMEOUT, Kiln, REPO, TEST_IMAGE, TEST_SECRET, wait_for};

const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-0123456789ab";
const CAROL: &str = "carol-token-0123456789";
const DAVE: &str = "dave-token-0123456789a";

/// Four operators, three of them approvers; two approvals and the staging deploy required.
fn config() -> String {
    let mut text = String::from(
        "[repository.promote]\napprovals = 2\nrequires = [\"deploy-staging\"]\n\
         approvers = [\"operator:alice\", \"operator:bob\", \"operator:carol\"]\n",
    );
    for (name, token) in [
        ("alice", ALICE),
        ("bob", BOB),
        ("carol", CAROL),
        ("dave", DAVE),
    ] {
        text.push_str(&format!(
            "[[operator]]\nname = \"{name}\"\ntoken = \"{token}\"\n"
        ));
    }
    kiln_tests::config(&text)
}

/// A pipeline that passes, or fails in its tests, with its staging deploy.
fn spec(unit: &str) -> String {
    format!(
        "steps:\n  unit:\n    image: {TEST_IMAGE}\n    run: {unit}\n  deploy-staging:\n    \
         image: {TEST_IMAGE}\n    needs: [unit]\n    run: echo deployed\n"
    )
}

/// Commits on `branch`, announces it, and waits for its build to end as `status`.
async fn built(kiln: &Kiln, repo: &TestRepo, branch: &str, unit: &str, status: &str) -> String {
    let commit = repo.commit(branch, "A change", &[(".kiln.yml", &spec(unit))]);
    let id = kiln
        .push(repo, branch, &commit, &format!("delivery-{commit}"))
        .await;
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], status, "{build:#}");
    commit
}

/// The build number a promotion's answer says runs the move.
fn started_build(reply: &str) -> u64 {
    let (_, after) = reply.split_once("Build #").expect("a build is started");
    after
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a build number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_promotions_fast_forward_production_and_a_rollback_moves_it_back() {
    let kiln = Kiln::start(&config()).await;
    let mut events = subscribe(&kiln, "promotion.#").await;
    let repo = TestRepo::new();
    let first = built(&kiln, &repo, "master", "echo ok", "passed").await;

    let (status, reply) = kiln.command_text(ALICE, &format!("promote {REPO}")).await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply.contains("Promotion #1") && reply.contains("`approve 1`"),
        "{reply}"
    );
    let (status, reply) = kiln.command_text(BOB, &format!("promote {REPO}")).await;
    assert_eq!(status, 422, "{reply}");
    assert!(
        reply.contains("Promotion #1 of this repository is in flight"),
        "{reply}"
    );

    let (status, reply) = kiln.command_text(ALICE, "approve 1").await;
    assert_eq!(status, 403, "{reply}");
    assert!(reply.contains("other than the one who asked"), "{reply}");
    let (status, reply) = kiln.command_text(DAVE, "approve 1").await;
    assert_eq!(status, 403, "{reply}");
    assert!(
        reply.contains("`operator:dave` is not one of them"),
        "{reply}"
    );
    let (status, reply) = kiln.command_text(BOB, "approve 1").await;
    assert_eq!((status, reply.contains("1 of 2")), (200, true), "{reply}");
    assert_eq!(repo.head("production"), None, "one approval is not enough");

    let (status, reply) = kiln.command_text(CAROL, "approve #1").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(repo.head("production").as_deref(), Some(first.as_str()));
    let production_build = started_build(&reply);
    let build = kiln.finished_build(production_build).await;
    assert_eq!(
        (&build["branch"], &build["commit"], &build["status"]),
        (
            &"production".into(),
            &first.clone().into(),
            &"passed".into()
        ),
        "{build:#}"
    );
    let (status, reply) = kiln.command_text(CAROL, "approve 1").await;
    assert_eq!(status, 422, "{reply}");
    assert!(reply.contains("has ended (promoted)"), "{reply}");

    // The forge announces the push Kiln made: already built, not built twice.
    let body = push_payload(REPO, "production", &first, &repo.clone_url(), "A change");
    let (status, answer) = kiln
        .send_github("push", "delivery-production", &body, TEST_SECRET)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["promotion"], 1, "{answer}");
    assert!(
        kiln.build(production_build + 1).await.is_none(),
        "built once"
    );

    // A newer commit, named, by fast-forward.
    let second = built(&kiln, &repo, "master", "echo ok again", "passed").await;
    let (status, reply) = kiln
        .command_text(BOB, &format!("promote {REPO} {}", &second[..10]))
        .await;
    assert_eq!(status, 200, "{reply}");
    for token in [ALICE, CAROL] {
        let (status, reply) = kiln.command_text(token, "approve 2").await;
        assert_eq!(status, 200, "{reply}");
    }
    assert_eq!(repo.head("production").as_deref(), Some(second.as_str()));

    // Back to the commit promoted before, through the same gates.
    let (status, reply) = kiln
        .command_text(CAROL, &format!("promote --rollback {REPO}"))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("back to"), "{reply}");
    kiln.command_text(ALICE, "approve 3").await;
    let (status, reply) = kiln.command_text(BOB, "approve 3").await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply.contains(&format!("rolled back from {}", &second[..8])),
        "{reply}"
    );
    assert_eq!(repo.head("production").as_deref(), Some(first.as_str()));
    let build = kiln.finished_build(started_build(&reply)).await;
    assert_eq!(build["commit"], first.as_str(), "{build:#}");

    let mut seen = Vec::new();
    while seen
        .last()
        .map(|(what, id): &(String, Option<u64>)| (what.as_str(), *id))
        != Some(("promoted", Some(3)))
    {
        let event: PromotionEvent = next_message(&mut events).await;
        seen.push((event.what, event.promotion.map(|p| p.0)));
    }
    let seen: Vec<String> = seen
        .iter()
        .map(|(what, id)| format!("{what} {}", id.map_or("-".into(), |id| id.to_string())))
        .collect();
    assert_eq!(
        seen,
        [
            "requested 1",
            "refused -",
            "refused 1",
            "refused 1",
            "approved 1",
            "approved 1",
            "promoted 1",
            "requested 2",
            "approved 2",
            "approved 2",
            "promoted 2",
            "requested 3",
            "approved 3",
            "approved 3",
            "promoted 3",
        ],
    );
    kiln.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotions_are_refused_with_the_reason() {
    let kiln = Kiln::start(&config()).await;
    let repo = TestRepo::new();
    let base = built(&kiln, &repo, "master", "echo ok", "passed").await;

    let broken = built(&kiln, &repo, "master", "exit 3", "failed").await;
    let (status, reply) = kiln
        .command_text(ALICE, &format!("promote {REPO} {broken}"))
        .await;
    assert_eq!(status, 422, "{reply}");
    assert!(
        reply.contains(&format!(
            "No build of commit {} passed (#2 failed)",
            &broken[..8]
        )),
        "{reply}"
    );
    // Without a commit named: the newest that passed, which is not the newest commit.
    let (status, reply) = kiln.command_text(ALICE, &format!("promote {REPO}")).await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains(&base[..8]), "{reply}");
    // Meanwhile someone pushes to production by hand: the promotion does not happen.
    repo.reset("production", &base);
    let hotfix = repo.commit("production", "Hotfix", &[("HOTFIX", "x")]);
    let (status, reply) = kiln.command_text(BOB, "approve 1").await;
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = kiln.command_text(CAROL, "approve 1").await;
    assert_eq!(status, 422, "{reply}");
    assert!(
        reply.contains("did not happen: `production` moved since the promotion was asked for"),
        "{reply}"
    );
    let (status, reply) = kiln.command_text(CAROL, "approve 1").await;
    assert_eq!(status, 422, "{reply}");
    assert!(reply.contains("has ended (rejected)"), "{reply}");
    assert_eq!(repo.head("production").as_deref(), Some(hotfix.as_str()));

    // Production now has a commit master lacks: no fast-forward is possible.
    repo.reset("master", &broken);
    let fixed = built(&kiln, &repo, "master", "echo fixed", "passed").await;
    let (status, reply) = kiln.command_text(ALICE, &format!("promote {REPO}")).await;
    assert_eq!(status, 422, "{reply}");
    assert!(
        reply.contains(&format!(
            "`production` has commits that {} does not",
            &fixed[..8]
        )),
        "{reply}"
    );

    // A commit that passed on another branch is not on master.
    let feature = built(&kiln, &repo, "feature", "echo feature", "passed").await;
    let (status, reply) = kiln
        .command_text(ALICE, &format!("promote {REPO} {feature}"))
        .await;
    assert_eq!(status, 422, "{reply}");
    assert!(reply.contains("is not on `master`"), "{reply}");

    let (status, reply) = kiln.command_text(ALICE, "promote other/repo").await;
    assert_eq!(status, 422, "{reply}");
    assert!(reply.contains("Kiln does not build other/repo"), "{reply}");
    kiln.stop().await;
}

const SIGNING_SECRET: &str = "slack-signing-secret-for-tests";

/// The promotion's card in Slack channel C1 once `done` holds of its text.
async fn card(slack: &FakeSlack, what: &str, done: impl Fn(&str) -> bool) -> serde_json::Value {
    wait_for(what, E2E_TIMEOUT, || async {
        slack.channel("C1").into_iter().find(|m| {
            m["text"]
                .as_str()
                .is_some_and(|t| t.contains("promotion #1") && done(t))
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_card_in_slack_is_approved_with_its_button() {
    let slack = FakeSlack::start().await;
    let config = kiln_tests::config(&format!(
        "[repository.promote]\napprovals = 1\napprovers = [\"slack:UBOB\"]\n\
         [slack]\nsigning_secret = \"{SIGNING_SECRET}\"\nbot_token = \"{BOT_TOKEN}\"\n\
         api_url = \"{}\"\n[[permission]]\nusers = [\"slack:UALICE\"]\ncommands = [\"promote\"]\n",
        slack.api_url()
    ));
    let kiln = Kiln::start(&config).await;
    let repo = TestRepo::new();
    let commit = built(&kiln, &repo, "master", "echo ok", "passed").await;

    let asked = slash_command(
        "UALICE",
        "alice",
        "promote acme/api",
        &slack.response_url(1),
    );
    assert_eq!(
        send(&kiln, "/slack/commands", &asked, SIGNING_SECRET, now())
            .await
            .0,
        200
    );
    let shown = card(&slack, "the promotion's card", |t| {
        t.contains("*awaiting approval*")
    })
    .await;
    let text = shown["text"].as_str().unwrap_or_default();
    assert!(text.contains(&format!("to `{}`", &commit[..8])), "{text}");
    assert!(
        text.contains("asked for by alice; 0 of 1 approval(s)"),
        "{text}"
    );
    let actions = &shown["blocks"][1]["elements"];
    assert_eq!(actions[0]["value"], "approve 1", "{actions:#}");

    // Alice may not approve her own promotion, button or not.
    let click = block_action("UALICE", "approve 1", &slack.response_url(2));
    assert_eq!(
        send(&kiln, "/slack/actions", &click, SIGNING_SECRET, now())
            .await
            .0,
        200
    );
    wait_for("Alice's refusal", E2E_TIMEOUT, || async {
        slack
            .answers()
            .iter()
            .any(|a| a.to_string().contains("other than the one who asked"))
            .then_some(())
    })
    .await;
    let click = block_action("UBOB", "approve 1", &slack.response_url(3));
    assert_eq!(
        send(&kiln, "/slack/actions", &click, SIGNING_SECRET, now())
            .await
            .0,
        200
    );
    let shown = card(&slack, "the promoted card", |t| t.contains("*promoted*")).await;
    let text = shown["text"].as_str().unwrap_or_default();
    assert!(text.contains("1 of 1 approval(s): ubob"), "{text}");
    assert!(text.contains("runs production now"), "{text}");
    assert_eq!(
        shown["blocks"][1]["elements"].as_array().map(Vec::len),
        Some(1),
        "no Approve button once it has ended"
    );
    assert_eq!(repo.head("production").as_deref(), Some(commit.as_str()));
    kiln.stop().await;
}

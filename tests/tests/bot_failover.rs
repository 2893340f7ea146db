//! Two bot processes serve one installation (one prefix, one broker, one Redis), as two
//! replicas behind a load balancer would. The one that took a push is killed (SIGKILL) while
//! the build's task runs: the other finishes the build and edits its card in chat, and goes
//! on taking pushes alone.

use std::time::{Duration, Instant};

use kiln_tests::forge::TestRepo;
use kiln_tests::processes::{self, Process};
use kiln_tests::services::unique_prefix;
use kiln_tests::slack::{BOT_TOKEN, FakeSlack, now, send_to, slash_command};
use kiln_tests::{E2E_TIMEOUT, Services, ended_at, push_to, wait_for};

const SIGNING_SECRET: &str = "slack-signing-secret-for-tests";

/// A task long enough to kill a bot while it runs.
const SPEC: &str = "steps:\n  slow:\n    runner: shell\n    run: 'sleep 6'\n";

/// How soon after the build ended the surviving bot must have edited its card. It edits it
/// as it handles the task's end, in well under a second; the bound leaves room for a loaded
/// machine.
const CARD_BOUND: Duration = Duration::from_secs(15);

/// Slack with a bot token, pointed at `slack`; Alice may subscribe channels.
fn config(slack: &FakeSlack) -> String {
    kiln_tests::config(&format!(
        r#"[slack]
signing_secret = "{SIGNING_SECRET}"
bot_token = "{BOT_TOKEN}"
api_url = "{}"
[[permission]]
users = ["slack:UALICE"]
commands = ["subscribe"]
"#,
        slack.api_url()
    ))
}

/// One bot replica: its process and address.
struct Replica {
    process: Process,
    addr: std::net::SocketAddr,
}

impl Replica {
    async fn start(
        config: &str,
        services: &Services,
        prefix: &str,
        state: &std::path::Path,
    ) -> Self {
        std::fs::create_dir_all(state).expect("the bot's state directory");
        let (process, addr) = processes::start_bot(config, services, prefix, state).await;
        Self { process, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends a signed push of `commit` as `delivery`; the build's id.
    async fn push(
        &self,
        http: &reqwest::Client,
        repo: &TestRepo,
        commit: &str,
        delivery: &str,
    ) -> u64 {
        let clone_url = repo.clone_url();
        push_to(http, &self.url(""), &clone_url, "master", commit, delivery).await
    }
}

/// The text of the card of build `id` in `channel`, once there is one.
fn card(slack: &FakeSlack, channel: &str, id: u64) -> Option<String> {
    slack
        .channel(channel)
        .iter()
        .filter_map(|m| m["text"].as_str())
        .find(|text| text.contains(&format!("build #{id} ")))
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_killed_mid_build_loses_nothing() {
    let services = Services::require().await;
    let slack = FakeSlack::start().await;
    let config = config(&slack);
    let prefix = unique_prefix();
    let state = tempfile::tempdir().expect("temp dir");
    let http = reqwest::Client::new();
    let mut a = Replica::start(&config, &services, &prefix, &state.path().join("a")).await;
    let b = Replica::start(&config, &services, &prefix, &state.path().join("b")).await;
    let worker = processes::start_worker(&services, &prefix, state.path(), 2).await;

    // A channel subscribes, through the first replica.
    let subscribe = slash_command(
        "UALICE",
        "alice",
        "subscribe acme/api",
        &slack.response_url(1),
    );
    let url = a.url("/slack/commands");
    let (status, _) = send_to(&http, &url, &subscribe, SIGNING_SECRET, now()).await;
    assert_eq!(status, 200);
    wait_for("the subscription's answer", E2E_TIMEOUT, || async {
        let answers = slack.answers();
        let text = answers.first()?["text"].as_str()?.to_owned();
        text.contains("now follows").then_some(())
    })
    .await;

    // A push to the first replica; its card shows the task running.
    let repo = TestRepo::new();
    let commit = repo.commit("master", "Slow", &[(".kiln.yml", SPEC)]);
    let id = a.push(&http, &repo, &commit, "failover-1").await;
    wait_for("the card to show the task running", E2E_TIMEOUT, || async {
        card(&slack, "C1", id).filter(|text| text.contains("• slow: running"))
    })
    .await;

    // The first replica is killed mid-build.
    a.process.signal(nix::sys::signal::Signal::SIGKILL);
    a.process.ended(E2E_TIMEOUT).await;

    // The second finishes the build and edits the card.
    let status = ended_at(&http, &b.url(""), id, E2E_TIMEOUT).await["status"].clone();
    let ended = Instant::now();
    assert_eq!(status, "passed");
    let text = wait_for("the card to show the build passed", E2E_TIMEOUT, || async {
        card(&slack, "C1", id).filter(|text| text.contains("*passed*"))
    })
    .await;
    let took = ended.elapsed();
    assert!(text.contains("• slow: passed"), "{text}");
    assert!(
        took <= CARD_BOUND,
        "the card was edited {took:?} after the build ended"
    );
    assert_eq!(slack.channel("C1").len(), 1, "one card, edited in place");

    // The second goes on alone.
    let next = b.push(&http, &repo, &commit, "failover-2").await;
    let status = ended_at(&http, &b.url(""), next, E2E_TIMEOUT).await["status"].clone();
    assert_eq!(status, "passed");
    eprintln!("the surviving bot edited the card {took:?} after the build ended");

    b.process.stop().await;
    worker.stop().await;
    services.remove_everything_under(&prefix).await;
}

//! Commands through the API (`POST /api/commands`), end to end on the real services: the
//! same grammar as chat, an operator's token, clear answers to mistakes, and every command
//! in the audit stream.

use kiln_tests::forge::TestRepo;
use kiln_tests::{E2E_TIMEOUT, Kiln, REPO, TEST_IMAGE, wait_for};

const TOKEN: &str = "alice-token-0123456789";

fn config() -> String {
    kiln_tests::config(&format!(
        "[[operator]]\nname = \"alice\"\ntoken = \"{TOKEN}\"\n"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_answer_in_words_and_are_audited() {
    let kiln = Kiln::start(&config()).await;
    let repo = TestRepo::new();
    let spec = format!(
        "steps:\n  unit:\n    image: {TEST_IMAGE}\n    run: ['echo compiling', 'echo \"assertion failed: 2 == 3\"', 'exit 3']\n"
    );
    let commit = repo.commit("master", "Break it", &[(".kiln.yml", &spec)]);
    let id = kiln
        .push(&repo, "master", &commit, "delivery-commands")
        .await;
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "failed", "{build:#}");

    let (status, _) = kiln.command("not-a-token", "status").await;
    assert_eq!(status, 401, "no operator, no command");

    let (status, reply) = kiln.command(TOKEN, "/help").await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply["text"]
            .as_str()
            .unwrap_or_default()
            .contains("`cancel <build>`")
    );

    let (status, reply) = kiln.command(TOKEN, "stauts acme/api").await;
    assert_eq!((status, reply["outcome"].as_str()), (422, Some("invalid")));
    assert!(
        reply["text"]
            .as_str()
            .unwrap_or_default()
            .contains("did you mean `status`?"),
        "{reply}"
    );

    let (status, reply) = kiln.command(TOKEN, &format!("status {REPO} master")).await;
    assert_eq!(status, 200, "{reply}");
    let text = reply["text"].as_str().unwrap_or_default();
    assert!(
        text.starts_with(&format!("#{id} {REPO} master {}", &commit[..8])),
        "{text}"
    );
    assert!(
        text.contains("failed: A commit"),
        "the subject the push named: {text}"
    );

    let (status, reply) = kiln.command(TOKEN, &format!("logs #{id} --lines 1")).await;
    assert_eq!(status, 200, "{reply}");
    let text = reply["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("task `unit` (failed with exit code 3)"),
        "{text}"
    );
    assert!(
        text.ends_with("```\nassertion failed: 2 == 3\n```"),
        "{text}"
    );
    assert!(
        text.contains("last 1 of 2 line(s)") && !text.contains("compiling"),
        "{text}"
    );

    let (status, reply) = kiln.command(TOKEN, &format!("cancel {id}")).await;
    assert_eq!(status, 422, "{reply}");
    assert!(
        reply["text"]
            .as_str()
            .unwrap_or_default()
            .contains("already ended: failed")
    );

    // The test's workers, as they last said: each says so as it starts, and as it takes or
    // lets go of a job.
    let prefix = &kiln.prefix;
    // The workers' crate shares the workspace's version with this one.
    let version = env!("CARGO_PKG_VERSION");
    let idle = format!(
        "Workers:\n• {prefix}-linux-amd64 on 127.0.0.1 (linux/amd64, {version}, 0 of 2 slot(s) busy)\n\
         • {prefix}-linux-arm64 on 127.0.0.1 (linux/arm64, {version}, 0 of 2 slot(s) busy)"
    );
    wait_for("both workers idle", E2E_TIMEOUT, || async {
        let (status, reply) = kiln.command(TOKEN, "workers").await;
        (status == 200 && reply["text"] == idle.as_str()).then_some(())
    })
    .await;

    // Every command an operator gave, in order, with its outcome; the refused request is
    // not in it, as nobody could be named.
    let mut redis = redis::Client::open(kiln.services.redis_url.as_str())
        .and_then(|c| c.get_connection())
        .expect("redis");
    let audit: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(format!("{}:audit", kiln.prefix))
        .arg("-")
        .arg("+")
        .query(&mut redis)
        .expect("audit stream");
    let entries: Vec<(String, String, String)> = audit
        .ids
        .iter()
        .map(|e| {
            let field = |name: &str| e.get::<String>(name).unwrap_or_default();
            (field("actor"), field("command"), field("outcome"))
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("/help".to_owned(), "done"),
        ("stauts acme/api".to_owned(), "invalid"),
        (format!("status {REPO} master"), "done"),
        (format!("logs #{id} --lines 1"), "done"),
        (format!("cancel {id}"), "invalid"),
        ("workers".to_owned(), "done"),
    ]
    .into_iter()
    .map(|(command, outcome)| ("alice".to_owned(), command, outcome.to_owned()))
    .collect();
    assert_eq!(entries, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_and_retry_start_builds_of_a_branch_or_commit() {
    let kiln = Kiln::start(&config()).await;
    let repo = TestRepo::new();
    let spec =
        format!("steps:\n  unit:\n    image: {TEST_IMAGE}\n    run: echo \"on $KILN_BRANCH\"\n");
    let first = repo.commit("master", "First", &[(".kiln.yml", &spec)]);
    let pushed = kiln.push(&repo, "master", &first, "delivery-build-1").await;
    kiln.finished_build(pushed).await;
    let second = repo.commit("master", "Second", &[]);

    // The branch's head now, fetched by Kiln itself: the push only told it where from.
    let (status, reply) = kiln.command(TOKEN, &format!("build {REPO}")).await;
    assert_eq!(status, 200, "{reply}");
    let text = reply["text"].as_str().unwrap_or_default();
    let id = pushed + 1;
    assert_eq!(
        text,
        format!(
            "Build #{id} of {REPO} master ({}) is queued, for alice.",
            &second[..8]
        )
    );
    let build = kiln.finished_build(id).await;
    assert_eq!(
        (build["status"].as_str(), build["commit"].as_str()),
        (Some("passed"), Some(second.as_str())),
        "{build:#}"
    );

    // A commit is built on a branch that holds it.
    let (status, reply) = kiln
        .command(TOKEN, &format!("build {REPO} {}", &first[..10]))
        .await;
    assert_eq!(status, 200, "{reply}");
    let build = kiln.finished_build(id + 1).await;
    assert_eq!(
        (build["branch"].as_str(), build["commit"].as_str()),
        (Some("master"), Some(first.as_str())),
        "{build:#}"
    );

    let (status, reply) = kiln.command(TOKEN, &format!("retry #{pushed}")).await;
    assert_eq!(status, 200, "{reply}");
    let build = kiln.finished_build(id + 2).await;
    assert_eq!(build["commit"].as_str(), Some(first.as_str()), "{build:#}");

    let (status, reply) = kiln.command(TOKEN, "queue").await;
    assert_eq!(status, 200, "{reply}");
    let text = reply["text"].as_str().unwrap_or_default();
    for line in [
        "linux/amd64: 0 waiting, 1 worker(s) taking jobs",
        "linux/arm64: 0 waiting, 1 worker(s) taking jobs",
        "windows/amd64: 0 waiting, 0 worker(s) taking jobs",
    ] {
        assert!(text.contains(line), "{text}");
    }

    for (text, answer) in [
        (
            format!("build {REPO} no-such-branch"),
            "has no branch `no-such-branch`",
        ),
        (
            "build other/repo".to_owned(),
            "Kiln does not build other/repo",
        ),
        ("retry 999".to_owned(), "There is no build #999"),
        (
            format!("retry --failed {pushed}"),
            "has no task that did not pass",
        ),
    ] {
        let (status, reply) = kiln.command(TOKEN, &text).await;
        assert_eq!(status, 422, "{text}: {reply}");
        assert!(
            reply["text"].as_str().unwrap_or_default().contains(answer),
            "{text}: {reply}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_failed_runs_only_what_did_not_pass_with_the_artifacts_of_what_did() {
    let kiln = Kiln::start(&config()).await;
    let repo = TestRepo::new();
    let spec = format!(
        r#"steps:
  make:
    image: {TEST_IMAGE}
    run: echo made > out.txt
    artifacts: [out.txt]
  lint:
    image: {TEST_IMAGE}
    run: echo linted
  check:
    image: {TEST_IMAGE}
    needs: [make]
    run: ['cat out.txt', 'exit 5']
  ship:
    image: {TEST_IMAGE}
    needs: [check]
    run: echo shipped
"#
    );
    let commit = repo.commit("master", "Flaky", &[(".kiln.yml", &spec)]);
    let first = kiln
        .push(&repo, "master", &commit, "delivery-retry-failed")
        .await;
    assert_eq!(kiln.finished_build(first).await["status"], "failed");

    let (status, reply) = kiln
        .command(TOKEN, &format!("retry --failed {first}"))
        .await;
    assert_eq!(status, 200, "{reply}");
    let id = first + 1;
    assert_eq!(
        reply["text"],
        format!(
            "Build #{id} runs what did not pass in build #{first} again ({REPO} master), for alice."
        )
    );
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "failed", "{build:#}");
    let tasks: Vec<(String, String, String)> = build["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| {
            let field = |f: &str| t[f].as_str().unwrap_or_default().to_owned();
            (field("name"), field("status"), field("outcome"))
        })
        .collect();
    let taken = format!("passed in build #{first}");
    assert_eq!(
        tasks,
        [
            ("lint".to_owned(), "passed".to_owned(), taken.clone()),
            ("make".to_owned(), "passed".to_owned(), taken),
            (
                "check".to_owned(),
                "failed".to_owned(),
                "failed with exit code 5".to_owned()
            ),
            ("ship".to_owned(), "skipped".to_owned(), String::new()),
        ]
    );
    // What passed did not run again; what failed ran with the artifact of what passed.
    assert_eq!(kiln.task_log(id, "make").await, "");
    assert!(kiln.task_log(id, "check").await.contains("made\n"));

    // A retry of that retry takes over what it took over, artifacts included.
    let (status, reply) = kiln.command(TOKEN, &format!("retry --failed {id}")).await;
    assert_eq!(status, 200, "{reply}");
    let again = kiln.finished_build(id + 1).await;
    assert_eq!(
        again["tasks"][1]["outcome"],
        format!("passed in build #{id}")
    );
    assert!(kiln.task_log(id + 1, "check").await.contains("made\n"));
}

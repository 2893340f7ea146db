//! A `windows/amd64` worker for real: `kiln-worker.exe`, cross-compiled from the current
//! sources, run under Wine against the same RabbitMQ and Redis as the bot. It takes the
//! build's jobs, runs `runner: shell` steps through `cmd.exe`, streams their output, reports
//! exit codes, kills a task's whole process tree at its timeout and on cancel, and stops
//! cleanly on Ctrl-C. What Wine cannot show of Windows is in the README.

use std::collections::BTreeMap;

use kiln_shared::build::TaskOutcome;
use kiln_shared::wire::Event;
use kiln_tests::events::{next_event, subscribe};
use kiln_tests::forge::TestRepo;
use kiln_tests::wine::{Wine, WineWorker};
use kiln_tests::{E2E_TIMEOUT, Kiln, wait_for};

const TOKEN: &str = "alice-token-0123456789";

/// How long the step that times out may run: time enough for Wine to start its processes.
const TIMEOUT_SECS: u64 = 8;

fn config() -> String {
    kiln_tests::config(&format!(
        "[[operator]]\nname = \"alice\"\ntoken = \"{TOKEN}\"\n"
    ))
}

/// Three Windows steps: one passes, one fails with exit code 3, one outlives its timeout
/// with two processes of its own still running (`ping` to 127.0.0.2, started by `start`,
/// whose parent has exited by then; `ping` to 127.0.0.3 under a second `cmd`).
fn pipeline() -> String {
    format!(
        r#"steps:
  passes:
    platforms: [windows/amd64]
    runner: shell
    run:
      - echo hello from %KILN_TASK% on %KILN_PLATFORM%
      - ver
      - echo written by the task> note.txt
      - type note.txt
  fails:
    platforms: [windows/amd64]
    runner: shell
    run: [echo failing on purpose, exit /b 3, echo never]
  times-out:
    platforms: [windows/amd64]
    runner: shell
    timeout: {TIMEOUT_SECS}s
    run:
      - start /b ping -n 1000 127.0.0.2 > nul
      - echo started
      - cmd /c ping -n 1000 127.0.0.3 > nul
"#
    )
}

/// Each task's outcome, from its `task.<status>` event, until build `id` has finished.
async fn outcomes(events: &mut lapin::Consumer, id: u64) -> BTreeMap<String, TaskOutcome> {
    let mut outcomes = BTreeMap::new();
    loop {
        match next_event(events).await {
            Event::TaskFinished(f) if f.build.id.0 == id => {
                outcomes.insert(f.task, f.outcome);
            }
            Event::BuildFinished(f) if f.build.id.0 == id => return outcomes,
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windows_worker_under_wine_runs_fails_times_out_cancels_and_stops() {
    let started = std::time::Instant::now();
    let wine = Wine::require();
    let exe = wine.build_worker().await;
    let built = started.elapsed();

    let kiln = Kiln::start(&config()).await;
    let worker = WineWorker::start(&wine, &exe, &kiln.services, &kiln.prefix, 3).await;
    let repo = TestRepo::new();
    let mut events = subscribe(&kiln, "#").await;

    let commit = repo.commit("master", "Windows", &[(".kiln.yml", &pipeline())]);
    let id = kiln
        .push(&repo, "master", &commit, "delivery-windows")
        .await;
    // Both of the last step's processes run before its timeout, so their absence later
    // says they were killed.
    for target in ["127.0.0.2", "127.0.0.3"] {
        wait_for(&format!("ping {target} to run"), E2E_TIMEOUT, || async {
            (!worker.processes_with(target).is_empty()).then_some(())
        })
        .await;
    }
    let outcomes = outcomes(&mut events, id).await;
    assert_eq!(
        outcomes,
        BTreeMap::from([
            ("passes".to_owned(), TaskOutcome::Passed),
            ("fails".to_owned(), TaskOutcome::Failed { exit_code: 3 }),
            (
                "times-out".to_owned(),
                TaskOutcome::TimedOut {
                    after_secs: TIMEOUT_SECS
                }
            ),
        ])
    );
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "failed", "{build:#}");

    let passed = kiln.task_log(id, "passes").await;
    assert!(
        passed.contains("hello from passes on windows/amd64"),
        "the task's own echo: {passed}"
    );
    assert!(
        passed.contains("Microsoft Windows"),
        "`ver` says which Windows: {passed}"
    );
    assert!(
        passed.contains("written by the task"),
        "the file the task wrote, read back: {passed}"
    );
    let failed = kiln.task_log(id, "fails").await;
    assert!(failed.contains("failing on purpose"), "{failed}");
    assert!(
        !failed.contains("never"),
        "the first failing command ends the task: {failed}"
    );
    let timed_out = kiln.task_log(id, "times-out").await;
    assert!(timed_out.contains("started"), "{timed_out}");
    for target in ["127.0.0.2", "127.0.0.3"] {
        wait_for(
            &format!("ping {target} to be killed with its task"),
            E2E_TIMEOUT,
            || async { worker.processes_with(target).is_empty().then_some(()) },
        )
        .await;
    }

    // A cancelled task goes with everything it started.
    let long = "steps:\n  long:\n    platforms: [windows/amd64]\n    runner: shell\n    \
                run: [echo started, cmd /c ping -n 1000 127.0.0.4 > nul]\n";
    let commit = repo.commit("master", "Long", &[(".kiln.yml", long)]);
    let id = kiln
        .push(&repo, "master", &commit, "delivery-windows-long")
        .await;
    wait_for("ping 127.0.0.4 to run", E2E_TIMEOUT, || async {
        (!worker.processes_with("127.0.0.4").is_empty()).then_some(())
    })
    .await;
    let answer = kiln
        .http
        .post(kiln.url(&format!("/builds/{id}/cancel")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("the bot answers");
    assert_eq!(answer.status(), 200);
    wait_for(
        "ping 127.0.0.4 to be killed with its cancelled task",
        E2E_TIMEOUT,
        || async { worker.processes_with("127.0.0.4").is_empty().then_some(()) },
    )
    .await;
    wait_for("the cancel note in the log", E2E_TIMEOUT, || async {
        kiln.task_log(id, "long")
            .await
            .contains("[kiln] cancelled")
            .then_some(())
    })
    .await;
    assert_eq!(kiln.build(id).await.expect("build")["status"], "cancelled");

    worker.stop().await;
    kiln.stop().await;
    eprintln!(
        "the Windows worker's build took {built:?}; the whole test {:?}",
        started.elapsed()
    );
}

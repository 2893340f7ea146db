//! Workers that hang or are asked to stop, as processes on the real services: a frozen
//! worker's task is taken back and run again elsewhere within a minute, and its late result
//! changes nothing; a worker told to stop (SIGTERM) takes no new job and lets its task finish,
//! or hands it back once its drain timeout has passed; a killed worker's overlays are removed
//! by the next worker on its state directory, and so are its task containers.

use std::path::Path;
use std::time::{Duration, Instant};

use kiln_shared::presence::Presence;
use kiln_tests::forge::TestRepo;
use kiln_tests::processes::Process;
use kiln_tests::{E2E_TIMEOUT, Kiln, config, wait_for};
use nix::sys::signal::Signal;

/// How soon a frozen worker's task must be running again elsewhere, with the default
/// settings (`[workers] reclaim_after = "30s"`).
const RECLAIM_BOUND: Duration = Duration::from_secs(60);

/// A shell step that notes its start and its end in `mark`, with `seconds` between, slept
/// in tenths: a single `sleep` would end at once after a freeze longer than itself.
fn slow_spec(mark: &Path, seconds: u32) -> String {
    let mark = mark.display();
    let tenths = seconds * 10;
    format!(
        "steps:\n  slow:\n    runner: shell\n    run:\n      - echo start >> {mark}\n      \
         - for i in $(seq 1 {tenths}); do sleep 0.1; done\n      - echo done >> {mark}\n      \
         - echo finished\n"
    )
}

/// A worker process for this Kiln, named `<prefix>-<name>`, with one slot.
async fn worker(kiln: &Kiln, name: &str, env: &[(&str, &str)]) -> Process {
    kiln.worker_process(name, 1, env).await
}

/// The first task of build `id`: (status, attempt, worker).
async fn task(kiln: &Kiln, id: u64) -> Option<(String, u64, String)> {
    let build = kiln.build(id).await?;
    let task = &build["tasks"][0];
    Some((
        task["status"].as_str()?.to_owned(),
        task["attempt"].as_u64()?,
        task["worker"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// Waits until build `id`'s task runs on `worker` at `attempt`.
async fn running_on(kiln: &Kiln, id: u64, attempt: u64, worker: &str, within: Duration) {
    wait_for(&format!("the task to run on {worker}"), within, || async {
        kiln.first_task_runs_on(id, attempt, worker)
            .await
            .then_some(())
    })
    .await;
}

/// What worker `name` last said of itself.
async fn presence(kiln: &Kiln, name: &str) -> Option<Presence> {
    let mut redis = redis::Client::open(kiln.services.redis_url.as_str())
        .and_then(|c| c.get_connection())
        .expect("Redis");
    let json: Option<String> = redis::cmd("HGET")
        .arg(kiln_shared::keys::Keys::new(&kiln.prefix).workers())
        .arg(name)
        .query(&mut redis)
        .expect("HGET");
    serde_json::from_str(&json?).ok()
}

fn lines(mark: &Path, word: &str) -> usize {
    let text = std::fs::read_to_string(mark).unwrap_or_default();
    text.lines().filter(|l| *l == word).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_workers_task_runs_again_elsewhere_and_its_late_result_changes_nothing() {
    let kiln = Kiln::start_without_workers(&config("")).await;
    let mark = kiln.task_share().join("mark");
    let repo = TestRepo::new();
    let commit = repo.commit("master", "Slow", &[(".kiln.yml", &slow_spec(&mark, 20))]);
    let mut first = worker(&kiln, "first", &[]).await;
    let first_name = format!("{}-first", kiln.prefix);
    let id = kiln.push(&repo, "master", &commit, "frozen-1").await;
    running_on(&kiln, id, 1, &first_name, E2E_TIMEOUT).await;
    wait_for("the task's shell to start", E2E_TIMEOUT, || async {
        (lines(&mark, "start") == 1).then_some(())
    })
    .await;

    // The worker hangs with its task, its broker connection still open.
    first.freeze();
    let frozen = Instant::now();
    let mut second = worker(&kiln, "second", &[]).await;
    let second_name = format!("{}-second", kiln.prefix);
    running_on(&kiln, id, 2, &second_name, RECLAIM_BOUND + E2E_TIMEOUT).await;
    let again = frozen.elapsed();
    eprintln!("frozen worker's task running again elsewhere after {again:?}");
    assert!(
        again <= RECLAIM_BOUND,
        "the task ran again after {again:?}, not within {RECLAIM_BOUND:?}"
    );
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "passed", "{build:#}");

    // The frozen worker comes back: it finds the attempt no longer its and lets it go.
    first.thaw();
    wait_for(
        "the thawed worker to let the job go",
        E2E_TIMEOUT,
        || async {
            let said = presence(&kiln, &first_name).await?;
            said.held.is_empty().then_some(())
        },
    )
    .await;
    let (status, attempt, on) = task(&kiln, id).await.expect("the task");
    assert_eq!(
        (status.as_str(), attempt, on.as_str()),
        ("passed", 2, second_name.as_str()),
        "the late attempt changed the record"
    );
    assert_eq!(kiln.build(id).await.expect("build")["status"], "passed");
    assert!(kiln.task_log(id, "slow").await.contains("finished"));
    assert_eq!(lines(&mark, "start"), 2, "each attempt started once");
    assert_eq!(
        lines(&mark, "done"),
        1,
        "only the second attempt ran to its end"
    );

    for worker in [&mut first, &mut second] {
        worker.stop_in_place().await;
    }
    kiln.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_told_to_stop_finishes_its_task_and_takes_no_new_job() {
    let kiln = Kiln::start_without_workers(&config("")).await;
    let mark = kiln.task_share().join("mark");
    let repo = TestRepo::new();
    let slow = repo.commit("master", "Slow", &[(".kiln.yml", &slow_spec(&mark, 10))]);
    // Two slots: with one free, only the cancelled consumer keeps the next job away.
    let mut draining = kiln.worker_process("draining", 2, &[]).await;
    let draining_name = format!("{}-draining", kiln.prefix);
    let id = kiln.push(&repo, "master", &slow, "drain-1").await;
    running_on(&kiln, id, 1, &draining_name, E2E_TIMEOUT).await;

    draining.signal(Signal::SIGTERM);
    wait_for("the worker to say it is draining", E2E_TIMEOUT, || async {
        presence(&kiln, &draining_name)
            .await
            .filter(|p| p.draining)
            .map(|_| ())
    })
    .await;
    let quick = repo.commit(
        "master",
        "Quick",
        &[(
            ".kiln.yml",
            "steps:\n  quick:\n    runner: shell\n    run: 'true'\n",
        )],
    );
    let next = kiln.push(&repo, "master", &quick, "drain-2").await;

    let ended = draining.ended(E2E_TIMEOUT).await;
    assert!(ended.success(), "the drained worker ended with {ended}");
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    let (_, attempt, on) = task(&kiln, id).await.expect("the task");
    assert_eq!((attempt, on.as_str()), (1, draining_name.as_str()));
    assert_eq!(lines(&mark, "done"), 1);
    assert!(
        presence(&kiln, &draining_name).await.is_none(),
        "a worker that stopped takes its presence back"
    );
    let (status, _, _) = task(&kiln, next).await.expect("the next build's task");
    assert_eq!(status, "queued", "the draining worker took a new job");

    // The next build waited for a worker, and runs on one.
    let mut other = worker(&kiln, "other", &[]).await;
    let build = kiln.finished_build(next).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    assert_eq!(
        build["tasks"][0]["worker"],
        format!("{}-other", kiln.prefix)
    );
    other.stop_in_place().await;
    kiln.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_not_finished_within_the_drain_timeout_is_handed_back_and_runs_elsewhere() {
    let kiln = Kiln::start_without_workers(&config("")).await;
    let mark = kiln.task_share().join("mark");
    let repo = TestRepo::new();
    let commit = repo.commit("master", "Slow", &[(".kiln.yml", &slow_spec(&mark, 15))]);
    let mut leaving = worker(&kiln, "leaving", &[("KILN_DRAIN_TIMEOUT", "2s")]).await;
    let leaving_name = format!("{}-leaving", kiln.prefix);
    let id = kiln.push(&repo, "master", &commit, "handed-back-1").await;
    running_on(&kiln, id, 1, &leaving_name, E2E_TIMEOUT).await;

    let asked = Instant::now();
    leaving.signal(Signal::SIGTERM);
    let ended = leaving.ended(E2E_TIMEOUT).await;
    assert!(ended.success(), "the worker ended with {ended}");
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "the worker waited for its task ({:?}) instead of handing it back",
        asked.elapsed()
    );
    assert_eq!(
        lines(&mark, "done"),
        0,
        "the interrupted run did not finish"
    );

    let mut other = worker(&kiln, "other", &[]).await;
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    assert_eq!(
        build["tasks"][0]["worker"],
        format!("{}-other", kiln.prefix)
    );
    assert_eq!(lines(&mark, "start"), 2);
    assert_eq!(lines(&mark, "done"), 1);
    other.stop_in_place().await;
    kiln.stop().await;
}

/// The mount points under `dir` in this (the workers') mount namespace.
fn mounts_under(dir: &Path) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").expect("the mount table");
    let dir = dir.display().to_string();
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| point.starts_with(&format!("{dir}/")))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_overlay_is_unmounted_and_removed_when_it_starts_again() {
    const TOKEN: &str = "olga-token-0123456789";
    let kiln = Kiln::start_without_workers(&config(&format!(
        "[[operator]]\nname = \"olga\"\ntoken = \"{TOKEN}\"\n"
    )))
    .await;
    let mark = kiln.task_share().join("mark");
    let repo = TestRepo::new();
    let commit = repo.commit("master", "Slow", &[(".kiln.yml", &slow_spec(&mark, 60))]);
    let mut killed = worker(&kiln, "killed", &[]).await;
    let name = format!("{}-killed", kiln.prefix);
    let state = kiln.state_path().join(&name).join("kiln-worker");
    let id = kiln.push(&repo, "master", &commit, "killed-1").await;
    running_on(&kiln, id, 1, &name, E2E_TIMEOUT).await;
    wait_for("the task's shell to start", E2E_TIMEOUT, || async {
        (lines(&mark, "start") == 1).then_some(())
    })
    .await;
    let work = state.join("work");
    assert_eq!(
        mounts_under(&work).len(),
        1,
        "the task's work directory is an overlay"
    );

    killed.kill().await;
    assert_eq!(
        mounts_under(&work).len(),
        1,
        "a killed worker unmounts nothing"
    );
    let (status, reply) = kiln.command(TOKEN, &format!("cancel {id}")).await;
    assert_eq!(status, 200, "{reply}");

    // Its successor on the same state directory unmounts and removes what it left.
    let _again = worker(&kiln, "killed", &[]).await;
    let entries = |dir: &Path| -> Vec<std::ffi::OsString> {
        std::fs::read_dir(dir).map_or_else(
            |_| vec!["(unreadable)".into()],
            |entries| entries.map(|e| e.expect("an entry").file_name()).collect(),
        )
    };
    wait_for(
        "the next worker to remove the killed one's work directory",
        E2E_TIMEOUT,
        || async {
            let left = (
                mounts_under(&state),
                entries(&work),
                entries(&state.join("layers")),
            );
            (left.0.is_empty() && left.1.is_empty() && left.2.is_empty()).then_some(())
        },
    )
    .await;
    kiln.stop().await;
}

/// How long after its worker's kill a task's container is checked to be still running.
const OUTLIVED_FOR: Duration = Duration::from_secs(1);

/// The containers labelled as build `id`'s on the local engine, running or not: (name,
/// state).
async fn containers_of(id: u64) -> Vec<(String, String)> {
    use bollard::query_parameters::ListContainersOptionsBuilder;
    let docker = bollard::Docker::connect_with_local_defaults().expect("the Docker engine");
    let label = format!("kiln.build={id}");
    let filters = std::collections::HashMap::from([("label", vec![label.as_str()])]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .expect("the containers")
        .into_iter()
        .map(|c| {
            let name = c.names.unwrap_or_default().concat();
            (name, c.state.map(|s| s.to_string()).unwrap_or_default())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_task_container_is_removed_when_it_starts_again() {
    const TOKEN: &str = "olga-token-0123456789";
    let kiln = Kiln::start_without_workers(&config(&format!(
        "[[operator]]\nname = \"olga\"\ntoken = \"{TOKEN}\"\n"
    )))
    .await;
    let repo = TestRepo::new();
    let spec = format!(
        "steps:\n  slow:\n    image: {}\n    run:\n      - sleep 120\n",
        kiln_tests::TEST_IMAGE
    );
    let commit = repo.commit("master", "Slow", &[(".kiln.yml", &spec)]);
    let mut killed = worker(&kiln, "boxed", &[]).await;
    let name = format!("{}-boxed", kiln.prefix);
    let id = kiln.push(&repo, "master", &commit, "boxed-1").await;
    running_on(&kiln, id, 1, &name, E2E_TIMEOUT).await;
    wait_for("the task's container to run", E2E_TIMEOUT, || async {
        let running = containers_of(id).await;
        running
            .iter()
            .any(|(_, state)| state == "running")
            .then_some(())
    })
    .await;

    killed.kill().await;
    // Not a wait for something to happen: how long the container is seen to outlive it.
    tokio::time::sleep(OUTLIVED_FOR).await;
    let left = containers_of(id).await;
    assert!(
        left.iter().any(|(_, state)| state == "running"),
        "a task's container outlives a killed worker: {left:?}"
    );
    let (status, reply) = kiln.command(TOKEN, &format!("cancel {id}")).await;
    assert_eq!(status, 200, "{reply}");

    // Its successor on the same state directory removes it before it says it is there.
    let _again = worker(&kiln, "boxed", &[]).await;
    wait_for(
        "the worker started again to remove the killed one's container",
        E2E_TIMEOUT,
        || async { containers_of(id).await.is_empty().then_some(()) },
    )
    .await;
    kiln.stop().await;
}

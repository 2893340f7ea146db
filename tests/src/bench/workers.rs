//! Remote workers' figures: how soon a frozen worker's task runs again elsewhere, beside the
//! configured limit, and what TLS between workers and the services costs on dispatch.

use std::time::{Duration, Instant};

use super::{Bench, Figure, Options, Target};
use crate::processes::Process;
use crate::{E2E_TIMEOUT, Kiln, wait_for};

/// The bot's default `[workers] reclaim_after`, in seconds.
const RECLAIM_AFTER_SECS: f64 = 30.0;

/// Whether build `id`'s first task runs on `worker` at `attempt`.
async fn runs_on(kiln: &Kiln, id: u64, attempt: u64, worker: &str) -> Option<()> {
    kiln.first_task_runs_on(id, attempt, worker)
        .await
        .then_some(())
}

/// A worker process of one slot named `<prefix>-<name>`, with `env` besides the usual.
async fn worker(kiln: &Kiln, name: &str, env: &[(&str, &str)]) -> Process {
    kiln.worker_process(name, 1, env).await
}

/// From a worker's freeze (SIGSTOP of it and its task's processes) to its task running again,
/// as the next attempt, on another worker, with the default settings; each run on a Kiln of
/// its own.
pub(super) async fn frozen_worker(options: Options) -> Figure {
    let spec =
        "steps:\n  slow:\n    runner: shell\n    run: for i in $(seq 1 1200); do sleep 0.1; done\n";
    let mut samples = Vec::new();
    for _ in 0..options.count(3, 1) {
        let kiln = Kiln::start_without_workers(&crate::config("")).await;
        let repo = crate::forge::TestRepo::new();
        let commit = repo.commit("master", "Slow", &[(".kiln.yml", spec)]);
        let first = worker(&kiln, "first", &[]).await;
        let id = kiln.push(&repo, "master", &commit, "frozen").await;
        let first_name = format!("{}-first", kiln.prefix);
        wait_for("the task to run", E2E_TIMEOUT, || {
            runs_on(&kiln, id, 1, &first_name)
        })
        .await;
        let second = worker(&kiln, "second", &[]).await;
        let second_name = format!("{}-second", kiln.prefix);
        first.freeze();
        let frozen = Instant::now();
        let within = Duration::from_secs(180);
        wait_for("the task to run again", within, || {
            runs_on(&kiln, id, 2, &second_name)
        })
        .await;
        samples.push(frozen.elapsed().as_secs_f64());
        first.thaw();
        // Killed outright: the build is of no further interest.
        drop((first, second));
        kiln.stop().await;
    }
    let mut figure = Figure::new("frozen_worker_to_task_restarted", "s", samples);
    figure.floor = Some(("reclaim_after", RECLAIM_AFTER_SECS));
    // 60 s with the default `reclaim_after`.
    figure.target = Some(Target::AtMostTimes(2.0));
    figure
}

/// Push → `task.started` with the worker talking plain AMQP and Redis, then with another
/// worker over TLS (`amqps://`, `rediss://`, the services' own CA), on the same Kiln and
/// services: the first is the floor of the second.
pub(super) async fn tls_dispatch(options: Options) -> [Figure; 2] {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: start the services with `deploy/dev/services`")
        })
    };
    let (amqps, rediss, ca) = (
        var("KILN_TEST_AMQPS_URL"),
        var("KILN_TEST_REDISS_URL"),
        var("KILN_TEST_TLS_CA"),
    );
    let kiln = Kiln::start_without_workers(&crate::config("")).await;
    let bench = Bench::new(&kiln).await;

    let mut plain_worker = worker(&kiln, "plain", &[]).await;
    let mut plain = bench.push_to_task_started(options).await;
    plain.name = "dispatch_plain_p50";
    plain_worker.stop_in_place().await;

    let over_tls = [
        ("KILN_AMQP_URL", amqps.as_str()),
        ("KILN_REDIS_URL", rediss.as_str()),
        ("KILN_TLS_CA", ca.as_str()),
    ];
    let mut tls_worker = worker(&kiln, "tls", &over_tls).await;
    let mut tls = bench.push_to_task_started(options).await;
    tls.name = "dispatch_tls_p50";
    let tls = tls.against(&plain, Some(Target::AtMostTimes(1.2)));
    tls_worker.stop_in_place().await;
    drop(bench);
    kiln.stop().await;
    [plain, tls]
}

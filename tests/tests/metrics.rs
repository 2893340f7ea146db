//! Metrics and structured logs after real builds: the bot's `/metrics` counts the deliveries
//! by answer, the build by status with its duration, the task's duration, the planning and
//! the job queues and what the caches keep; a worker's `/metrics` (`--metrics-listen`) its slots, the task and the log
//! lines it stored; and the worker's `--log-format json` lines carry the build's `build_id`.

use kiln_tests::forge::{TestRepo, push_payload};
use kiln_tests::{E2E_TIMEOUT, Kiln, REPO, config, wait_for};

/// The value of the sample named exactly `name` (with its labels) in `text`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape(http: &reqwest::Client, url: &str) -> String {
    let answer = http.get(url).send().await.expect("metrics answer");
    assert_eq!(answer.status(), 200);
    let kind = answer.headers()["content-type"]
        .to_str()
        .expect("type")
        .to_owned();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    answer.text().await.expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_and_worker_metrics_count_a_build_and_logs_name_it() {
    let kiln = Kiln::start_without_workers(&config("")).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let listen = port.to_string();
    let env = [
        ("KILN_METRICS_LISTEN", listen.as_str()),
        ("KILN_LOG_FORMAT", "json"),
        ("RUST_LOG", "info"),
    ];
    let state = kiln.state_path().to_owned();
    let mut worker = kiln.worker_process("metered", 1, &env).await;
    let repo = TestRepo::new();
    let spec = "steps:\n  t:\n    runner: shell\n    run: [echo one, echo two, echo three]\n";
    let commit = repo.commit("master", "Metered", &[(".kiln.yml", spec)]);
    let id = kiln.push(&repo, "master", &commit, "metrics-1").await;
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    let body = push_payload(REPO, "master", &commit, &repo.clone_url(), "Forged");
    let (status, _) = kiln
        .send_github("push", "metrics-2", &body, "not-the-secret")
        .await;
    assert_eq!(status, 401);

    let bot = scrape(&kiln.http, &kiln.url("/metrics")).await;
    for (name, value) in [
        ("kiln_webhooks_total{forge=\"github\",answer=\"202\"}", 1.0),
        ("kiln_webhooks_total{forge=\"github\",answer=\"401\"}", 1.0),
        ("kiln_builds_total{status=\"passed\"}", 1.0),
        ("kiln_build_duration_seconds_count{status=\"passed\"}", 1.0),
        ("kiln_task_duration_seconds_count{status=\"passed\"}", 1.0),
        ("kiln_planning_duration_seconds_count", 1.0),
        // The ended build's plan is let go; its pipeline, parsed once, is kept.
        ("kiln_kept_bytes{cache=\"plans\"}", 0.0),
    ] {
        assert_eq!(sample(&bot, name), Some(value), "{name} in\n{bot}");
    }
    let pipelines = sample(&bot, "kiln_kept_bytes{cache=\"pipelines\"}");
    assert!(pipelines.is_some_and(|b| b > 0.0), "{bot}");
    let consumers: f64 = bot
        .lines()
        .filter(|l| l.starts_with("kiln_job_consumers{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(consumers, 1.0, "one worker takes jobs:\n{bot}");

    // The worker lets the job go just after the build has ended.
    let own = wait_for("the worker to hold no job", E2E_TIMEOUT, || async {
        let own = scrape(&kiln.http, &format!("http://{listen}/metrics")).await;
        (sample(&own, "kiln_worker_running") == Some(0.0)).then_some(own)
    })
    .await;
    for (name, value) in [
        ("kiln_worker_slots", 1.0),
        (
            "kiln_worker_task_duration_seconds_count{status=\"passed\"}",
            1.0,
        ),
    ] {
        assert_eq!(sample(&own, name), Some(value), "{name} in\n{own}");
    }
    let lines = sample(&own, "kiln_worker_log_lines_total").expect("log lines counted");
    assert!(lines >= 3.0, "{own}");

    worker.stop_in_place().await;
    let log_file = state
        .join(format!("{}-metered", kiln.prefix))
        .join("kiln-worker.log");
    let log = std::fs::read_to_string(&log_file).expect("the worker's log");
    let ended = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["fields"]["message"] == "task ended")
        .unwrap_or_else(|| panic!("a JSON line saying the task ended in\n{log}"));
    let spans = ended["spans"].as_array().expect("the line's spans");
    assert!(
        spans
            .iter()
            .any(|s| s["build_id"].as_str() == Some(&id.to_string())),
        "{ended}"
    );
    kiln.stop().await;
}

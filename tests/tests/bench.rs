//! The benchmark's quick mode, so it never rots: every figure is measured on the real
//! services and printed, and no queued task is lost or run twice. Nothing here asserts a
//! speed; `deploy/dev/bench` is for that.

use kiln_tests::bench::{Options, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_benchmark_measures_every_figure() {
    let figures = run(Options {
        runs: 1,
        quick: true,
        only: &[],
    })
    .await;
    let names: Vec<&str> = figures.iter().map(|f| f.name).collect();
    assert_eq!(
        names,
        [
            "floor_amqp_round_trip",
            "floor_docker_create_start",
            "floor_redis_xadd",
            "floor_amqp_confirms",
            "floor_redis_xread_wakeup_p99",
            "bot_rss_idle",
            "worker_rss_idle",
            "push_to_task_started_p50",
            "push_to_task_started_p99",
            "push_to_container_running",
            "push_to_docker_task_done",
            "webhooks_accepted",
            "builds_completed",
            "bot_rss_loaded",
            "worker_rss_loaded",
            "cluster_push_to_task_started_p50",
            "cluster_webhooks_accepted",
            "log_lines",
            "live_tail_lag_p99",
            "sse_log_lag_p99",
            "build_json_first_byte",
            "build_page_first_byte",
            "build_page_render",
            "priority_normal_started_before_high",
            "image_resolve",
            "floor_registry_pull",
            "registry_image_pull",
            "floor_registry_blob_upload",
            "floor_registry_blob_download",
            "artifact_upload",
            "artifact_download",
            "redis_per_build_before_archive",
            "redis_per_build_archived",
            "redis_after_soak_per_build",
            "floor_broker_start_app",
            "broker_back_to_build_p50",
            "broker_back_to_build_p99",
            "outbox_waited",
            "frozen_worker_to_task_restarted",
            "dispatch_plain_p50",
            "dispatch_tls_p50",
            "floor_drain_consume_ack",
            "floor_drain_claim",
            "floor_drain_work_dirs",
            "floor_drain_spawn",
            "floor_drain",
            "drain_time",
            "drain_tasks_lost",
            "drain_tasks_run_twice",
            "bot_rss_after_drain",
            "bot_rss_peak",
            "worker_rss_peak",
        ]
    );
    for figure in &figures {
        assert!(!figure.samples.is_empty(), "{}", figure.line());
        let json = figure.json();
        assert_eq!(json["name"], figure.name);
        assert_eq!(json["value"], figure.value(), "{json}");
        assert_eq!(json["met"].as_bool(), figure.meets(), "{json}");
        if figure.name.starts_with("drain_tasks_") {
            // Correctness, not speed: every queued task ran, and ran once.
            assert_eq!(figure.value(), 0.0, "{}", figure.line());
        } else if figure.unit == "tasks" {
            // A count, whose best is none (no normal task started before the high one).
            assert!(figure.value() >= 0.0, "{}", figure.line());
        } else {
            assert!(figure.value() > 0.0, "{}", figure.line());
        }
    }
}

//! `/workers` (and `/queue`): each worker with its platform, host, slots, the jobs it runs
//! and when it was last heard from; the jobs waiting on each platform's queue; the tasks
//! waiting for a slot of a pool (a device, a concurrency group).

use axum::extract::State;
use axum::response::Response;
use serde::Serialize;

use super::readers::Reader;
use super::view::{Who, duration, time};
use super::{render, sign_in_first, unavailable};
use crate::app::App;
use crate::store::now_ms;

#[derive(Debug, Serialize)]
struct Page {
    who: Who,
    title: String,
    workers: Vec<Worker>,
    queues: Vec<Queue>,
    /// Why the queues cannot be shown, when RabbitMQ does not answer.
    queues_error: Option<String>,
    waiting: Vec<Waiting>,
}

#[derive(Debug, Serialize)]
struct Worker {
    name: String,
    platform: String,
    host: String,
    version: String,
    slots: u16,
    running: Vec<String>,
    /// `taking jobs`, `draining` or `lost`.
    state: &'static str,
    seen: String,
    up: String,
}

#[derive(Debug, Serialize)]
struct Queue {
    platform: String,
    waiting: u32,
    consumers: u32,
}

#[derive(Debug, Serialize)]
struct Waiting {
    pool: String,
    build: u64,
    task: String,
}

/// `GET /workers`.
pub async fn workers(State(app): State<App>, reader: Reader) -> Response {
    if !reader.may_read_some() {
        return sign_in_first("/workers");
    }
    let now = now_ms();
    let workers = match app.store.workers().await {
        Ok(workers) => workers,
        Err(e) => return unavailable(&app, &reader, e),
    };
    let workers = workers
        .into_iter()
        .map(|w| Worker {
            state: if !w.is_there(now) {
                "lost"
            } else if w.draining {
                "draining"
            } else {
                "taking jobs"
            },
            seen: format!("{} ago", duration(w.seen_ms, Some(now))),
            up: time(w.started_ms),
            name: w.name,
            platform: w.platform,
            host: w.host,
            version: w.version,
            slots: w.slots,
            running: w.running,
        })
        .collect();
    let (queues, queues_error) = match app.broker.job_queues().await {
        Ok(queues) => (
            queues
                .into_iter()
                .map(|(platform, waiting, consumers)| Queue {
                    platform: platform.to_string(),
                    waiting,
                    consumers,
                })
                .collect(),
            None,
        ),
        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
    };
    let mut waiting = Vec::new();
    let pools = match app.store.waited_pools().await {
        Ok(pools) => pools,
        Err(e) => return unavailable(&app, &reader, e),
    };
    for pool in pools {
        match app.store.waiting(&pool).await {
            Ok(tasks) => waiting.extend(tasks.into_iter().map(|w| Waiting {
                pool: pool.clone(),
                build: w.build.0,
                task: w.task,
            })),
            Err(e) => return unavailable(&app, &reader, e),
        }
    }
    render(
        &app,
        "workers.html",
        &Page {
            who: Who::of(&reader),
            title: "Workers and queues".into(),
            workers,
            queues,
            queues_error,
            waiting,
        },
    )
}

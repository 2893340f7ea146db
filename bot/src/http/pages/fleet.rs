//! `/workers` (and `/queue`): each worker with its platform, host, slots, the jobs it runs
//! and when it was last heard from; the jobs waiting on each platform's queue; the tasks
//! waiting for a slot of a pool (a device, a concurrency group). Where access is not public,
//! a reader who is not an operator sees only the jobs of builds they may read.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::response::Response;
use kiln_shared::build::BuildId;
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
    high: u32,
    consumers: u32,
}

#[derive(Debug, Serialize)]
struct Waiting {
    pool: String,
    build: u64,
    task: String,
}

/// Which of builds `ids` `reader` may read: all of them for operators, or where access is
/// public.
async fn readable(
    app: &App,
    reader: &Reader,
    ids: Vec<BuildId>,
) -> anyhow::Result<impl Fn(BuildId) -> bool + use<>> {
    let everything = reader.is_operator() || app.config.access.public;
    let mut seen = BTreeSet::new();
    if !everything {
        let ids: Vec<BuildId> = ids
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let records = app.store.build_records(&ids).await?;
        seen.extend(
            records
                .into_iter()
                .flatten()
                .filter(|r| reader.may_read(&r.build.repo))
                .map(|r| r.build.id),
        );
    }
    Ok(move |id| everything || seen.contains(&id))
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
    let mut waited = Vec::new();
    let pools = match app.store.waited_pools().await {
        Ok(pools) => pools,
        Err(e) => return unavailable(&app, &reader, e),
    };
    for pool in pools {
        match app.store.waiting(&pool).await {
            Ok(tasks) => waited.extend(tasks.into_iter().map(|w| (pool.clone(), w))),
            Err(e) => return unavailable(&app, &reader, e),
        }
    }
    let ids: Vec<BuildId> = workers
        .iter()
        .flat_map(|w| w.held.iter().map(|h| h.build))
        .chain(waited.iter().map(|(_, w)| w.build))
        .collect();
    let readable = match readable(&app, &reader, ids).await {
        Ok(readable) => readable,
        Err(e) => return unavailable(&app, &reader, format!("{e:#}")),
    };
    let workers = workers
        .into_iter()
        .map(|w| Worker {
            running: w
                .held
                .iter()
                .filter(|h| readable(h.build))
                .map(|h| h.label())
                .collect(),
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
        })
        .collect();
    let (queues, queues_error) = match app.broker.job_queues().await {
        Ok(queues) => (
            queues
                .into_iter()
                .map(|q| Queue {
                    platform: q.platform.to_string(),
                    waiting: q.waiting,
                    high: q.high,
                    consumers: q.workers,
                })
                .collect(),
            None,
        ),
        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
    };
    let waiting = waited
        .into_iter()
        .filter(|(_, w)| readable(w.build))
        .map(|(pool, w)| Waiting {
            pool,
            build: w.build.0,
            task: w.task,
        })
        .collect();
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

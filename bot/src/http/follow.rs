//! `GET /builds/{id}/logs?task=…&follow=true`: one task's log as it is written, until the
//! task ends: its lines so far, then each new one as soon as the worker stores it.

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_shared::build::BuildId;
use kiln_shared::ident::RepoName;
use redis::aio::MultiplexedConnection;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;

use super::error;
use crate::app::App;
use crate::store::StoreError;

/// Logs followed at once, at most: each holds a Redis connection of its own until its task
/// ends, and the workers need Redis too.
pub const MAX_FOLLOWERS: usize = 64;

static FOLLOWERS: Semaphore = Semaphore::const_new(MAX_FOLLOWERS);

/// Where a follower is in the task's log.
#[derive(Debug)]
pub struct Follower {
    app: App,
    conn: MultiplexedConnection,
    build: BuildId,
    task: String,
    /// The id of the last entry sent.
    after: String,
    /// The task has ended: what is left is read without waiting, then the answer ends.
    ending: bool,
    /// Its place among the [`MAX_FOLLOWERS`], given back when the answer ends.
    _place: SemaphorePermit<'static>,
}

impl Follower {
    /// A follower of `task` of build `build` from after the entry `after` (`0-0`: from the
    /// start), or the answer that there is no room for one more.
    pub async fn start(
        app: App,
        build: BuildId,
        task: String,
        after: String,
    ) -> Result<Self, Response> {
        let Ok(place) = FOLLOWERS.try_acquire() else {
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{MAX_FOLLOWERS} logs are being followed already; try again later"),
            ));
        };
        let conn = match app.store.log_reader().await {
            Ok(conn) => conn,
            Err(e) => return Err(error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        };
        Ok(Self {
            app,
            conn,
            build,
            task,
            after,
            ending: false,
            _place: place,
        })
    }

    /// The next lines and the id of the last one's entry, `None` once the task has ended
    /// and every line was given.
    pub async fn next(&mut self) -> Result<Option<(Vec<String>, String)>, StoreError> {
        loop {
            let wait = !self.ending;
            let (lines, last) = self
                .app
                .store
                .read_log(&mut self.conn, self.build, &self.task, &self.after, wait)
                .await?;
            if let Some(last) = last {
                self.after.clone_from(&last);
                return Ok(Some((lines, last)));
            }
            if self.ending {
                return Ok(None);
            }
            // A worker stores a task's last lines before it records the end, so once the
            // end is seen, one more read finds them all.
            self.ending = self.ended().await?;
        }
    }

    /// Whether the task has ended, or will never run: its build was planned without it.
    async fn ended(&self) -> Result<bool, StoreError> {
        let Some(build) = self.app.store.build(self.build).await? else {
            return Ok(true);
        };
        match &build.plan {
            Some(plan) if plan.tasks.iter().any(|t| t.name == self.task) => {
                let task = self.app.store.task(self.build, &self.task).await?;
                Ok(task.is_none_or(|t| t.status.is_final()))
            }
            Some(_) => Ok(true),
            None => Ok(build.status.is_final()),
        }
    }
}

/// Follows `task` of build `build`, which exists; the answer also ends when the bot stops.
/// A log archived and gone from Redis is given whole.
pub async fn follow(
    app: App,
    repo: &RepoName,
    build: BuildId,
    task: String,
    stopping: CancellationToken,
) -> Response {
    match app.logs.instead_of_stream(repo, build, &task).await {
        Ok(Some(lines)) => return whole(&lines),
        Ok(None) => {}
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")),
    }
    let follower = match Follower::start(app, build, task, "0-0".into()).await {
        Ok(follower) => follower,
        Err(refusal) => return refusal,
    };
    let lines = futures_util::stream::unfold(Some(follower), move |follower| {
        let stopping = stopping.clone();
        async move {
            let mut follower = follower?;
            let next = tokio::select! {
                next = follower.next() => next,
                () = stopping.cancelled() => return None,
            };
            match next {
                Ok(Some((lines, _))) => {
                    let mut text = lines.join("\n");
                    text.push('\n');
                    Some((Ok(Bytes::from(text)), Some(follower)))
                }
                Ok(None) => None,
                // The answer is cut short: the reader sees it did not end cleanly.
                Err(e) => Some((Err(e), None)),
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(lines),
    )
        .into_response()
}

/// An ended task's log given at once, as a follow of it would end up.
fn whole(lines: &[String]) -> Response {
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

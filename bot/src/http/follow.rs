//! `GET /builds/{id}/logs?task=…&follow=true`: one task's log as it is written, until the
//! task ends: its lines so far, then each new one as soon as the worker stores it.

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_shared::build::BuildId;
use redis::RedisResult;
use redis::aio::MultiplexedConnection;
use tokio_util::sync::CancellationToken;

use super::error;
use crate::app::App;

/// Where a follower is in the task's log.
struct Follower {
    app: App,
    conn: MultiplexedConnection,
    build: BuildId,
    task: String,
    /// The id of the last entry sent.
    after: String,
    /// The task has ended: what is left is read without waiting, then the answer ends.
    ending: bool,
}

impl Follower {
    /// The next lines, `None` once the task has ended and every line was sent.
    async fn next(&mut self) -> RedisResult<Option<Bytes>> {
        loop {
            let wait = !self.ending;
            let (lines, last) = self
                .app
                .store
                .read_log(&mut self.conn, self.build, &self.task, &self.after, wait)
                .await?;
            if let Some(last) = last {
                self.after = last;
                let mut text = lines.join("\n");
                text.push('\n');
                return Ok(Some(Bytes::from(text)));
            }
            if self.ending {
                return Ok(None);
            }
            // A worker stores a task's last lines before it records the end, so once the
            // end is seen, one more read finds them all.
            self.ending = self.ended().await?;
        }
    }
}

impl Follower {
    /// Whether the task has ended, or will never run: its build was planned without it.
    async fn ended(&self) -> RedisResult<bool> {
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
pub async fn follow(
    app: App,
    build: BuildId,
    task: String,
    stopping: CancellationToken,
) -> Response {
    let conn = match app.store.log_reader().await {
        Ok(conn) => conn,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let follower = Follower {
        app,
        conn,
        build,
        task,
        after: "0-0".into(),
        ending: false,
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
                Ok(Some(bytes)) => Some((Ok(bytes), Some(follower))),
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

//! `cancel <build>`.

use kiln_shared::build::{BuildId, BuildStatus};

use super::actor::Actor;
use super::reply::{self, Reply};
use crate::app::App;
use crate::lifecycle::{self, Cancel};

/// Cancels `build` for `actor`.
pub async fn cancel(app: &App, actor: Actor<'_>, build: BuildId) -> anyhow::Result<Reply> {
    Ok(
        match lifecycle::cancel_build(app, build, &actor.signature()).await? {
            Cancel::Cancelled { tasks } => cancelled(build, tasks.len()),
            Cancel::AlreadyEnded(status) => already_ended(build, status),
            Cancel::NoSuchBuild => reply::no_such_build(build),
        },
    )
}

fn cancelled(build: BuildId, unfinished: usize) -> Reply {
    Reply::done(format!(
        "Build #{build} cancelled, with {unfinished} unfinished task(s)."
    ))
}

fn already_ended(build: BuildId, status: BuildStatus) -> Reply {
    Reply::invalid(format!("Build #{build} has already ended: {status}."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        insta::assert_snapshot!(cancelled(BuildId(4), 2).text, @"Build #4 cancelled, with 2 unfinished task(s).");
        insta::assert_snapshot!(already_ended(BuildId(4), BuildStatus::Passed).text, @"Build #4 has already ended: passed.");
    }
}

//! `queue`: the jobs waiting, per platform.

use super::reply::Reply;
use crate::app::App;

/// The jobs waiting on each platform's queue, and the workers taking them.
pub async fn queue(app: &App) -> anyhow::Result<Reply> {
    Ok(waiting(&app.broker.job_queues().await?))
}

fn waiting<P: std::fmt::Display>(queues: &[(P, u32, u32)]) -> Reply {
    let mut text = String::from("Jobs waiting, per platform:");
    for (platform, waiting, workers) in queues {
        text.push_str(&format!(
            "\n{platform}: {waiting} waiting, {workers} worker(s) taking jobs"
        ));
    }
    Reply::done(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        insta::assert_snapshot!(waiting(&[("linux-x86_64", 3, 1), ("windows", 0, 0)]).text, @r"
        Jobs waiting, per platform:
        linux-x86_64: 3 waiting, 1 worker(s) taking jobs
        windows: 0 waiting, 0 worker(s) taking jobs
        ");
    }
}

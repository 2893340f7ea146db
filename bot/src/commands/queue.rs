//! `queue`: the jobs waiting, per platform.

use super::reply::Reply;
use crate::amqp::JobQueue;
use crate::app::App;

/// The jobs waiting on each platform's queues, and the workers taking them.
pub async fn queue(app: &App) -> anyhow::Result<Reply> {
    Ok(waiting(&app.broker.job_queues().await?))
}

fn waiting(queues: &[JobQueue]) -> Reply {
    let mut text = String::from("Jobs waiting, per platform:");
    for q in queues {
        let high = match q.high {
            0 => String::new(),
            high => format!(" ({high} of high priority)"),
        };
        text.push_str(&format!(
            "\n{}: {} waiting{high}, {} worker(s) taking jobs",
            q.platform, q.waiting, q.workers
        ));
    }
    Reply::done(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_shared::platform::Platform;

    #[test]
    fn replies() {
        let queue = |platform, waiting, high, workers| JobQueue {
            platform,
            waiting,
            high,
            workers,
        };
        let queues = [
            queue(Platform::LinuxAmd64, 3, 1, 1),
            queue(Platform::WindowsAmd64, 0, 0, 0),
        ];
        insta::assert_snapshot!(waiting(&queues).text, @r"
        Jobs waiting, per platform:
        linux/amd64: 3 waiting (1 of high priority), 1 worker(s) taking jobs
        windows/amd64: 0 waiting, 0 worker(s) taking jobs
        ");
    }
}

//! `workers`: the workers taking jobs now.

use super::reply::Reply;
use crate::app::App;

/// The workers that announced themselves lately.
pub async fn workers(app: &App) -> anyhow::Result<Reply> {
    let workers = app.store.workers().await?;
    let now = kiln_io::clock::now_ms();
    Ok(listed(workers.iter().map(|w| w.describe(now))))
}

fn listed(described: impl Iterator<Item = String>) -> Reply {
    let lines: Vec<String> = described.map(|w| format!("• {w}")).collect();
    if lines.is_empty() {
        Reply::done("No worker is taking jobs.")
    } else {
        Reply::done(format!("Workers:\n{}", lines.join("\n")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        insta::assert_snapshot!(listed(std::iter::empty()).text, @"No worker is taking jobs.");
        insta::assert_snapshot!(listed(["w1 (linux-x86_64)".to_owned(), "w2".to_owned()].into_iter()).text, @r"
        Workers:
        • w1 (linux-x86_64)
        • w2
        ");
    }
}

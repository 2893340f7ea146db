//! The notifier: final build events become chat messages.
//!
//! Rendering is pure ([`render`]); posting is per vendor ([`discord`]). A build's message goes
//! to a channel once, however often its event is delivered.

pub mod discord;
pub mod render;

use kiln_shared::view::{BuildFinishedMessage, FailureExcerpt, log_excerpt};
use kiln_shared::wire::BuildFinished;

use crate::app::App;

/// How much of a failed task's log a notification shows: its last lines, within a share of
/// Discord's 2,000 characters that leaves room for the rest of the message.
const FAILURE_LINES: usize = 15;
const FAILURE_CHARS: usize = 900;

/// Posts a finished build's message to every configured channel; a failure shows the end of
/// the failed task's log and mentions its author, when Kiln knows who they are in chat.
pub async fn handle_build_finished(app: &App, event: &BuildFinished) -> anyhow::Result<()> {
    let Some(discord) = &app.discord else {
        return Ok(());
    };
    let mut message = BuildFinishedMessage::new(event, &app.config.public_url);
    let mut notify = None;
    if let Some(task) = BuildFinishedMessage::failed_task(event) {
        let (lines, _) = app
            .store
            .log_tail(event.build.id, task, FAILURE_LINES)
            .await?;
        message.failure = Some(FailureExcerpt {
            task: task.to_owned(),
            lines: log_excerpt(&lines, FAILURE_LINES, FAILURE_CHARS),
        });
        notify = app.config.discord_user(&event.author);
        message.mention = notify.map(|id| format!("<@{id}>"));
    }
    if !app
        .store
        .first_notification(event.build.id, &discord.channel_key())
        .await?
    {
        return Ok(());
    }
    let text = app.templates.build_finished(&message)?;
    if let Err(e) = discord.post(&text, notify).await {
        // Chat being down must not stop builds; the result stays readable at the build's URL.
        tracing::error!(build = %event.build.id, error = %e, "cannot post to Discord");
    }
    Ok(())
}

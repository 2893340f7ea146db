//! The notifier: final build events become chat messages.
//!
//! Rendering is pure ([`render`]); posting is per vendor ([`discord`]). A build's message goes
//! to a channel once, however often its event is delivered.

pub mod discord;
pub mod render;

use kiln_shared::view::BuildFinishedMessage;
use kiln_shared::wire::BuildFinished;

use crate::app::App;

/// Posts a finished build's message to every configured channel.
pub async fn handle_build_finished(app: &App, event: &BuildFinished) -> anyhow::Result<()> {
    let Some(discord) = &app.discord else {
        return Ok(());
    };
    let message = BuildFinishedMessage::new(event, &app.config.public_url);
    if !app
        .store
        .first_notification(event.build.id, &discord.channel_key())
        .await?
    {
        return Ok(());
    }
    let text = app.templates.build_finished(&message)?;
    if let Err(e) = discord.post(&text).await {
        // Chat being down must not stop builds; the result stays readable at the build's URL.
        tracing::error!(build = %event.build.id, error = %e, "cannot post to Discord");
    }
    Ok(())
}

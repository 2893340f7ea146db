//! Build cards: one message per build per channel, edited in place as the build runs.
//!
//! Every event of a build pokes its card keeper, a task that renders the build as Redis has
//! it now and posts or edits the card in each following channel. Pokes that arrive while it
//! works fold into one more pass, so a burst of task events (or Discord's rate limits) makes
//! a few edits, never a queue of stale ones, and the bot's event loop never waits for chat.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_shared::build::BuildId;
use kiln_shared::view::{BuildMessage, TaskLine};
use tokio::sync::Notify;

use super::{Buttons, Chat, followers, is_alarm};
use crate::app::App;

/// How long a keeper waits for its build's next event before it stops; the next event
/// starts another.
const IDLE: Duration = Duration::from_secs(10 * 60);

/// The builds whose cards are being kept, each with the way to poke its keeper.
#[derive(Debug, Clone, Default)]
pub struct Cards {
    live: Arc<Mutex<HashMap<BuildId, Arc<Notify>>>>,
}

impl Cards {
    /// Brings build `id`'s cards up to date, soon: pokes its keeper, or starts one.
    pub fn refresh(&self, app: &App, id: BuildId) {
        let mut live = self.live.lock().expect("not poisoned");
        if let Some(poke) = live.get(&id) {
            poke.notify_one();
            return;
        }
        let poke = Arc::new(Notify::new());
        live.insert(id, poke.clone());
        let app = app.clone();
        let cards = self.clone();
        tokio::spawn(async move {
            let mut shown = HashMap::new();
            loop {
                let ended = update(&app, id, &mut shown).await.unwrap_or_else(|error| {
                    tracing::error!(build = %id, error = format!("{error:#}"), "cannot update a build's cards");
                    false
                });
                if ended || tokio::time::timeout(IDLE, poke.notified()).await.is_err() {
                    break;
                }
            }
            cards.live.lock().expect("not poisoned").remove(&id);
            // A poke that came after the last pass and before the removal found this keeper:
            // one more pass shows what it announced. Later pokes start a new keeper.
            if let Err(error) = update(&app, id, &mut shown).await {
                tracing::error!(build = %id, error = format!("{error:#}"), "cannot update a build's cards");
            }
        });
    }
}

/// Posts or edits build `id`'s card in every channel that follows it, unless the card
/// already reads as `shown` remembers (by channel); true once the build has ended and every
/// card shows it.
///
/// A channel that follows only a build's end gets no card of a failed build: the failure
/// notification ([`super::handle_build_finished`]) is its one message.
async fn update(
    app: &App,
    id: BuildId,
    shown: &mut HashMap<String, String>,
) -> anyhow::Result<bool> {
    let Some(record) = app.store.build(id).await? else {
        return Ok(true);
    };
    let tasks = match &record.plan {
        Some(plan) => app
            .store
            .tasks(id, plan)
            .await?
            .into_iter()
            .zip(&plan.tasks)
            .map(|(task, planned)| TaskLine {
                name: task.name,
                status: task.status.as_str().to_owned(),
                exit_code: task.exit_code.filter(|code| *code != 0),
                allow_failure: planned.allow_failure,
            })
            .collect(),
        None => Vec::new(),
    };
    let message = BuildMessage::new(
        &record.build,
        record.status,
        &record.author,
        &record.subject,
        tasks,
        record.error.clone(),
        &app.config.public_url,
    );
    let buttons = Buttons::card(&message);
    let mut all_shown = true;
    for (channel, subscriptions) in followers(app, &record.build.repo).await? {
        let Some(dialect) = Chat::dialect(&channel) else {
            continue;
        };
        let text = app.templates.card(dialect, &message)?;
        if shown.get(&channel) == Some(&text) {
            continue;
        }
        let result = match app.store.card(id, &channel).await? {
            Some(Some(card)) => app.chat.edit(&channel, &card, &text, Some(&buttons)).await,
            // Another keeper is posting it; the next pass edits it.
            Some(None) => {
                all_shown = false;
                continue;
            }
            None if is_alarm(record.status)
                || !subscriptions
                    .iter()
                    .any(|s| s.wants(&record.build.branch, record.status)) =>
            {
                continue;
            }
            None if !app.store.claim_card(id, &channel).await? => {
                all_shown = false;
                continue;
            }
            None => {
                let posted = app.chat.post(&channel, &text, Some(&buttons), None).await;
                let card = posted.as_ref().ok().map(String::as_str);
                app.store.posted_card(id, &channel, card).await?;
                posted.map(drop)
            }
        };
        match result {
            Ok(()) => {
                shown.insert(channel, text);
            }
            Err(error) => {
                // Chat being down must not stop builds; the next event tries again.
                tracing::error!(build = %id, %channel, error = format!("{error:#}"), "cannot show a build's card");
                all_shown = false;
            }
        }
    }
    Ok(record.status.is_final() && all_shown)
}

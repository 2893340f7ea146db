//! Build cards: one message per build per channel, edited in place as the build runs, the
//! notification of a failure, and the build's commit statuses on its forge.
//!
//! Every event of a build that a channel follows, or whose forge is told its statuses, pokes
//! its keeper, a task that renders the build as Redis has it now and posts or edits the card
//! in each following channel; a build with nothing to show gets no keeper. Pokes that arrive
//! while it works fold into one more pass, so a burst of task events (or a chat vendor's rate
//! limits) makes a few edits, never a queue of stale ones, and the bot's event loop never
//! waits for chat.
//! A keeper also looks again every [`RECHECK`] while its build runs or a post failed, so a card
//! that another bot rendered from an older state, or that chat refused, is put right.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kiln_shared::build::{BuildId, TaskStatus};
use kiln_shared::commit_status::statuses;
use kiln_shared::ident::{ChannelName, RepoName};
use kiln_shared::plan::group_pool;
use kiln_shared::subscription::Subscription;
use kiln_shared::trigger::TriggerKind;
use kiln_shared::view::{BuildMessage, FailureExcerpt, ReportLine, TaskLine, log_excerpt};
use kiln_shared::wire::BuildRef;

use super::keepers::Keeper;
use super::{Buttons, EVERY_REPOSITORY, is_alarm};
use crate::app::App;
use crate::config::Forge;
use crate::store::{BuildRecord, TaskRecord};

/// How often a keeper looks at its build again without being poked.
const RECHECK: Duration = Duration::from_secs(30);

/// How long a keeper goes on without a poke before it stops; the next event starts another.
const IDLE: Duration = Duration::from_secs(10 * 60);

/// The least time from one pass over a build's cards to the next. A pass reads every task
/// of the build; a large build's events come faster than chat would take edits anyway.
const PASS_SPACING: Duration = Duration::from_millis(250);

/// How much of a failed task's log a notification shows: its last lines, within a share of
/// Discord's 2,000 characters that leaves room for the rest of the message.
const FAILURE_LINES: usize = 15;
const FAILURE_CHARS: usize = 900;

/// Build `build` changed: notes its cards due, so that a bot stopped before they are out
/// takes them up again when it starts, and brings them up to date. A build that no channel
/// follows, and whose forge is told no statuses, has nothing to show: nothing is noted and
/// no keeper started, at the cost of one Redis round trip.
pub async fn changed(app: &App, build: &BuildRef) -> redis::RedisResult<()> {
    let due = if app.chat.everywhere().next().is_some() || has_statuses(app, &build.repo) {
        app.store.cards_due(build.id).await?;
        true
    } else {
        app.store
            .cards_due_if_followed(&build.repo, build.id)
            .await?
    };
    if due {
        refresh(app, build.id);
    }
    Ok(())
}

/// Brings build `id`'s cards up to date, soon: pokes its keeper, or starts one.
pub fn refresh(app: &App, id: BuildId) {
    if let Some(keeper) = app.cards.poke(id) {
        tokio::spawn(keep(app.clone(), id, keeper));
    }
}

/// Keeps build `id`'s cards until the build has ended and every card and notification is
/// out, or nothing happened for [`IDLE`].
async fn keep(app: App, id: BuildId, keeper: Arc<Keeper>) {
    let mut shown = HashMap::new();
    let mut quiet = Duration::ZERO;
    loop {
        keeper.pass_begins();
        let began = tokio::time::Instant::now();
        let done = update(&app, id, &mut shown).await.unwrap_or_else(|error| {
            tracing::error!(build_id = %id, error = format!("{error:#}"), "cannot update a build's cards");
            false
        });
        if !done {
            if keeper.poked_within(RECHECK).await {
                quiet = Duration::ZERO;
            } else {
                quiet += RECHECK;
            }
            tokio::time::sleep_until(began + PASS_SPACING).await;
            if quiet < IDLE {
                continue;
            }
        }
        // Everything is out: a restarted bot need not take the build up again.
        if done && let Err(error) = app.store.cards_out(id).await {
            tracing::warn!(build_id = %id, %error, "cannot note a build's cards out");
        }
        if app.cards.leave(id, &keeper) {
            return;
        }
        if done && let Err(error) = app.store.cards_due(id).await {
            tracing::warn!(build_id = %id, %error, "cannot note a build's cards due");
        }
    }
}

/// Posts or edits build `id`'s card in every channel that follows it, unless the card
/// already reads as `shown` remembers (by channel), and notifies a failure once per channel;
/// true once the build has ended and all of it is out.
///
/// A channel that follows only a build's end gets no card of a failed build: the failure
/// notification is its one message.
async fn update(
    app: &App,
    id: BuildId,
    shown: &mut HashMap<String, String>,
) -> anyhow::Result<bool> {
    let Some(record) = app.store.build(id).await? else {
        return Ok(true);
    };
    let followers = followers(app, id, &record.build.repo).await?;
    if followers.is_empty() && !has_statuses(app, &record.build.repo) {
        // Nobody to show it to: its tasks need not be read.
        return Ok(record.status.is_final());
    }
    let (mut message, tasks) = current(app, &record).await?;
    let buttons = Buttons::card(&message);
    let mut all_out = true;
    for (channel, subscriptions) in &followers {
        let Some(dialect) = app.chat.dialect(channel) else {
            continue;
        };
        let text = app.templates.card(dialect, &message)?;
        if shown.get(channel.as_str()) == Some(&text) {
            continue;
        }
        let wanted = wants(subscriptions, &record);
        let result = match app.store.card(id, channel).await? {
            Some(Some(card)) => app.chat.edit(channel, &card, &text, Some(&buttons)).await,
            // Another keeper is posting it; a later pass edits it.
            Some(None) => {
                all_out = false;
                continue;
            }
            None if is_alarm(record.status) || !wanted => continue,
            None if !app.store.claim_card(id, channel).await? => {
                all_out = false;
                continue;
            }
            None => {
                let posted = app.chat.post(channel, &text, Some(&buttons), None).await;
                let card = posted.as_ref().ok().map(String::as_str);
                app.store.posted_card(id, channel, card).await?;
                posted.map(drop)
            }
        };
        match result {
            Ok(()) => {
                shown.insert(channel.to_string(), text);
            }
            Err(error) => {
                // Chat being down must not stop builds; a later pass tries again.
                tracing::error!(build_id = %id, %channel, error = format!("{error:#}"), "cannot show a build's card");
                all_out = false;
            }
        }
    }
    if is_alarm(record.status) {
        add_failure(app, &record, &mut message).await?;
        for (channel, subscriptions) in &followers {
            if wants(subscriptions, &record)
                && !notify_failure(app, &record, channel, &mut message).await?
            {
                all_out = false;
            }
        }
    }
    if !set_statuses(app, &record, &tasks, &message.url, shown).await {
        all_out = false;
    }
    Ok(record.status.is_final() && all_out)
}

/// Sets the build's and its tasks' commit statuses on its forge, those that changed since
/// `shown`; false if the forge refused one.
async fn set_statuses(
    app: &App,
    record: &BuildRecord,
    tasks: &[TaskRecord],
    url: &str,
    shown: &mut HashMap<String, String>,
) -> bool {
    if !has_statuses(app, &record.build.repo) {
        return true;
    }
    let Some(repository) = app.config.repository(&record.build.repo) else {
        return true;
    };
    let tasks: Vec<(&str, TaskStatus, Option<&str>)> = tasks
        .iter()
        .map(|t| (t.name.as_str(), t.status, t.outcome.as_deref()))
        .collect();
    let mut all_set = true;
    for status in statuses(record.build.id.0, record.status, &tasks) {
        // Keyed apart from the channels' cards, which share the map.
        let key = format!("forge status {}", status.context);
        // GitLab refuses a status that keeps its state, so only a new state goes there.
        let value = match repository.forge {
            Forge::GitHub => format!("{:?} {}", status.state, status.description),
            Forge::GitLab => format!("{:?}", status.state),
        };
        if shown.get(&key) == Some(&value) {
            continue;
        }
        let set = app
            .forges
            .set(
                repository.forge,
                &repository.name,
                &record.build.commit,
                &status,
                url,
            )
            .await;
        match set {
            Ok(()) => {
                shown.insert(key, value);
            }
            Err(error) => {
                tracing::error!(build_id = %record.build.id, context = %status.context, error = format!("{error:#}"), "cannot set a commit status");
                all_set = false;
            }
        }
    }
    all_set
}

/// Whether the forge of `repo` is told its builds' statuses.
fn has_statuses(app: &App, repo: &str) -> bool {
    app.config
        .repository(repo)
        .is_some_and(|r| app.forges.serves(r.forge))
}

/// Whether a channel with `subscriptions` asks to see `record` as it is now.
fn wants(subscriptions: &[Subscription], record: &BuildRecord) -> bool {
    subscriptions
        .iter()
        .any(|s| s.wants(&record.build.branch, record.status))
}

/// What a card says of the build as Redis has it now, and its tasks as stored.
pub async fn current(
    app: &App,
    record: &BuildRecord,
) -> anyhow::Result<(BuildMessage, Vec<TaskRecord>)> {
    let id = record.build.id;
    let tasks = match &record.plan {
        Some(plan) => app.store.tasks(id, plan).await?,
        None => Vec::new(),
    };
    let mut message = message(app, record, &tasks);
    say_what_waits(app, record, &tasks, &mut message).await?;
    message.reports = app
        .store
        .reports(id)
        .await?
        .iter()
        .map(ReportLine::from)
        .collect();
    Ok((message, tasks))
}

/// Says of each queued task waiting for a slot what it waits for: its concurrency group, or
/// a pool. One read of each line a queued task of the build could be in.
async fn say_what_waits(
    app: &App,
    record: &BuildRecord,
    tasks: &[TaskRecord],
    message: &mut BuildMessage,
) -> anyhow::Result<()> {
    let Some(plan) = &record.plan else {
        return Ok(());
    };
    let repo = &record.build.repo;
    // Each line a queued task could be in, and how people name it.
    let mut lines: BTreeMap<String, String> = BTreeMap::new();
    for (_, planned) in tasks
        .iter()
        .zip(&plan.tasks)
        .filter(|(task, _)| task.status == TaskStatus::Queued)
    {
        for pool in &planned.resources {
            lines.insert(pool.clone(), format!("pool {pool}"));
        }
        if let Some(group) = &planned.concurrency {
            lines.insert(group_pool(repo, group), format!("group {group}"));
        }
    }
    for (pool, named) in lines {
        for waiting in app.store.waiting(&pool).await? {
            if waiting.build != record.build.id {
                continue;
            }
            if let Some(line) = message.tasks.iter_mut().find(|l| l.name == waiting.task) {
                line.status = format!("waiting for {named}");
            }
        }
    }
    Ok(())
}

/// What chat says of the build, with `tasks` as stored.
fn message(app: &App, record: &BuildRecord, tasks: &[TaskRecord]) -> BuildMessage {
    let planned = record.plan.as_ref().map_or(&[][..], |p| &p.tasks[..]);
    let lines = tasks
        .iter()
        .zip(planned)
        .map(|(task, planned)| TaskLine {
            name: task.name.clone(),
            status: task.status.as_str().to_owned(),
            exit_code: task.exit_code.filter(|code| *code != 0),
            allow_failure: planned.allow_failure,
            by_hand: planned.manual,
            step: planned.step.clone(),
        })
        .collect();
    let mut message = BuildMessage::new(
        &record.build,
        record.status,
        &record.author,
        &record.subject,
        lines,
        record.error.clone(),
        &app.config.public_url,
    );
    message.tag = record.kind == TriggerKind::Tag;
    message.note = record.note.clone();
    // A request built as its merge result says with what.
    let merged = record.plan.as_ref().and_then(|p| p.merged_with.as_ref());
    if let (Some(with), Some(about)) = (merged, &record.request) {
        let short: String = with.chars().take(10).collect();
        let merge = format!("built merged with {} at {short}", about.target_branch);
        message.note = Some(match message.note.take() {
            Some(note) => format!("{note}, {merge}"),
            None => merge,
        });
    }
    message.vars = record
        .vars
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    message
}

/// Adds the end of the log of the first task that failed (and was not allowed to).
async fn add_failure(
    app: &App,
    record: &BuildRecord,
    message: &mut BuildMessage,
) -> anyhow::Result<()> {
    if let Some(task) = message.failed_task().map(|t| t.name.clone()) {
        let (lines, _) = app
            .logs
            .tail(&record.build.repo, record.build.id, &task, FAILURE_LINES)
            .await?;
        message.failure = Some(FailureExcerpt {
            task,
            lines: log_excerpt(&lines, FAILURE_LINES, FAILURE_CHARS),
        });
    }
    Ok(())
}

/// Notifies the failure in `channel`, once: the failed task's last lines, and a mention of
/// its author when Kiln knows who they are in that chat. An edited card pings no one; this
/// message does. False if it could not be posted (it will be, by a later pass).
async fn notify_failure(
    app: &App,
    record: &BuildRecord,
    channel: &ChannelName,
    message: &mut BuildMessage,
) -> anyhow::Result<bool> {
    let Some(dialect) = app.chat.dialect(channel) else {
        return Ok(true);
    };
    let id = record.build.id;
    if !app.store.first_notification(id, channel).await? {
        return Ok(true);
    }
    let person = app.config.person(&record.author);
    let mention = person.and_then(|p| app.chat.mention(channel, p));
    message.mention = mention;
    let text = app.templates.failure(dialect, message)?;
    let buttons = Buttons::card(message);
    match app.chat.post(channel, &text, Some(&buttons), person).await {
        Ok(_) => Ok(true),
        Err(error) => {
            tracing::error!(build_id = %id, %channel, error = format!("{error:#}"), "cannot post a failure notification");
            app.store.forget_notification(id, channel).await?;
            Ok(false)
        }
    }
}

/// The channels that follow build `id` of `repo`, each with its subscriptions: those that
/// subscribe to the repository, and those the build was asked for in.
async fn followers(
    app: &App,
    id: BuildId,
    repo: &RepoName,
) -> anyhow::Result<BTreeMap<ChannelName, Vec<Subscription>>> {
    let (mut all, asked_in) = app.store.audience(repo, id).await?;
    for channel in asked_in {
        all.push(Subscription::new(channel, repo, None, Vec::new()));
    }
    for channel in app.chat.everywhere() {
        all.push(Subscription::new(
            channel,
            EVERY_REPOSITORY,
            None,
            Vec::new(),
        ));
    }
    let mut by_channel: BTreeMap<ChannelName, Vec<Subscription>> = BTreeMap::new();
    for subscription in all {
        by_channel
            .entry(subscription.channel.clone())
            .or_default()
            .push(subscription);
    }
    Ok(by_channel)
}

//! Commands, whatever front end they came through: parsed by [`kiln_shared::command`],
//! carried out, and recorded in the audit stream with who gave them and what came of it.

use kiln_shared::build::{BuildId, TaskStatus};
use kiln_shared::command::{COMMANDS, Command, Env, Target, parse, usage};
use kiln_shared::subscription::Subscription;
use kiln_shared::trigger::TriggerKind;
use kiln_shared::view::{log_excerpt, truncate};
use kiln_shared::wire::{BuildRef, BuildRequested};
use serde::Serialize;

use crate::app::App;
use crate::config::Repository;
use crate::scheduler::{self, Cancel};
use crate::{ingress, leases, promotion};

/// Builds `status` looks back over, newest first, to find the ones asked for.
const STATUS_LOOKBACK: u64 = 200;
/// Builds `status` shows.
const STATUS_SHOWN: usize = 10;
/// Lines `logs` shows unless told otherwise.
const DEFAULT_LOG_LINES: usize = 20;
/// How much of a log `logs` shows, in characters: Discord's messages hold 2,000.
const MAX_LOG_CHARS: usize = 1_600;
/// How much of an answer the audit stream keeps, in characters.
const MAX_AUDITED_REPLY_CHARS: usize = 300;

/// Commands anyone who can reach Kiln may give: they change nothing.
const OPEN_COMMANDS: [&str; 6] = [
    "help",
    "status",
    "logs",
    "subscriptions",
    "workers",
    "queue",
];

/// Who gave a command, and through what.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    /// Their name, for messages and the audit stream.
    pub name: &'a str,
    /// `api`, `slack`, `discord`, …
    pub via: &'a str,
    /// What permissions know them as: `<front end>:<user id>`.
    pub id: &'a str,
    /// An operator of this Kiln, who may do anything.
    pub operator: bool,
    /// The chat channel the command was given in (`discord:<id>`, `slack:<id>`), where
    /// `subscribe` sends events.
    pub channel: Option<&'a str>,
    /// The repository the forge says they may push to (a commenter on a pull request):
    /// there they may give any command.
    pub writes: Option<&'a str>,
    /// Their roles, as permissions name them (`discord:<role id>`).
    pub roles: &'a [String],
}

impl Actor<'_> {
    /// How records name them: their name and, unless they are an operator, the id a chat
    /// front end vouches for (names can be changed by their owner; ids cannot).
    pub fn signature(&self) -> String {
        if self.operator {
            self.name.to_owned()
        } else {
            format!("{} ({})", self.name, self.id)
        }
    }
}

/// What came of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Carried out.
    Done,
    /// Not a command, or not a valid one.
    Invalid,
    /// The person may not give it.
    Refused,
    /// Kiln could not carry it out (Redis or RabbitMQ unreachable, say).
    Failed,
}

/// The answer to a command, as text for the person who gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reply {
    pub outcome: Outcome,
    pub text: String,
}

impl Reply {
    pub(crate) fn done(text: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Done,
            text: text.into(),
        }
    }

    pub(crate) fn invalid(text: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Invalid,
            text: text.into(),
        }
    }

    pub(crate) fn refused(text: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Refused,
            text: text.into(),
        }
    }

    pub(crate) fn failed(text: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Failed,
            text: text.into(),
        }
    }
}

/// Carries out `text` for `actor`, records it in the audit stream, and answers.
pub async fn run(app: &App, actor: Actor<'_>, text: &str) -> Reply {
    let reply = match parse(text) {
        Err(error) => Reply::invalid(error.0),
        Ok(command) => carry_out(app, actor, &command)
            .await
            .unwrap_or_else(|error| Reply {
                outcome: Outcome::Failed,
                text: format!("Kiln could not do that just now: {error:#}"),
            }),
    };
    let outcome = serde_json::to_value(reply.outcome)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let command: String = text.chars().take(MAX_AUDITED_REPLY_CHARS).collect();
    let answer = truncate(&reply.text, MAX_AUDITED_REPLY_CHARS);
    let entry = [
        ("actor", actor.name),
        ("actor_id", actor.id),
        ("via", actor.via),
        ("command", command.as_str()),
        ("outcome", outcome.as_str()),
        ("reply", answer.as_str()),
    ];
    if let Err(error) = app.store.audit(&entry).await {
        tracing::error!(%error, actor = actor.name, command = text, "cannot audit a command");
    }
    tracing::info!(actor = actor.name, via = actor.via, command = text, %outcome, "command");
    reply
}

/// Why `actor` may not give `command`, if they may not.
async fn refusal(app: &App, actor: Actor<'_>, command: &Command) -> anyhow::Result<Option<String>> {
    // Approvals have their own gate, the repository's approvers, which binds operators too.
    if actor.operator
        || OPEN_COMMANDS.contains(&command.name())
        || matches!(command, Command::Approve { .. } | Command::Env(Env::List))
    {
        return Ok(None);
    }
    // Environments belong to no repository: any permission that names `env` will do.
    if let Command::Env(_) = command {
        if app.config.may_anywhere(actor.id, actor.roles, "env") {
            return Ok(None);
        }
        return Ok(Some(format!(
            "{} may not lease environments; a `[[permission]]` in Kiln's configuration must \
             give `{}` the command `env`.",
            actor.name, actor.id
        )));
    }
    let repo = match command {
        Command::Cancel { build } | Command::Retry { build, .. } => {
            match app.store.build(*build).await? {
                Some(record) => record.build.repo,
                // Not "allowed" either: the build may be created meanwhile.
                None => return Ok(Some(format!("There is no build #{build}."))),
            }
        }
        other => other.repo().unwrap_or_default().to_owned(),
    };
    if app.config.may(actor.id, actor.roles, command.name(), &repo)
        || actor.writes.is_some_and(|r| r.eq_ignore_ascii_case(&repo))
    {
        return Ok(None);
    }
    let forge_user = matches!(actor.via, "github" | "gitlab");
    Ok(Some(format!(
        "{} may not `{}` on {repo}; {}a `[[permission]]` in Kiln's configuration must name `{}`.",
        actor.name,
        command.name(),
        if forge_user {
            "they need push access to it, or "
        } else {
            ""
        },
        actor.id
    )))
}

async fn carry_out(app: &App, actor: Actor<'_>, command: &Command) -> anyhow::Result<Reply> {
    if let Some(why) = refusal(app, actor, command).await? {
        return Ok(Reply {
            outcome: Outcome::Refused,
            text: why,
        });
    }
    Ok(match command {
        Command::Help { command } => help(command.as_deref()),
        Command::Status { repo, branch } => status(app, repo.as_deref(), branch.as_deref()).await?,
        Command::Logs { build, task, lines } => {
            let lines = lines.map_or(DEFAULT_LOG_LINES, |n| n as usize);
            logs(app, *build, task.as_deref(), lines).await?
        }
        Command::Cancel { build } => {
            match scheduler::cancel_build(app, *build, &actor.signature()).await? {
                Cancel::Cancelled { tasks } => Reply::done(format!(
                    "Build #{build} cancelled, with {} unfinished task(s).",
                    tasks.len()
                )),
                Cancel::AlreadyEnded(status) => {
                    Reply::invalid(format!("Build #{build} has already ended: {status}."))
                }
                Cancel::NoSuchBuild => Reply::invalid(format!("There is no build #{build}.")),
            }
        }
        Command::Build { repo, target } => build(app, actor, repo, target).await?,
        Command::Queue => {
            let mut text = String::from("Jobs waiting, per platform:");
            for (platform, waiting, workers) in app.broker.job_queues().await? {
                text.push_str(&format!(
                    "\n{platform}: {waiting} waiting, {workers} worker(s) taking jobs"
                ));
            }
            Reply::done(text)
        }
        Command::Retry { build, failed_only } => retry(app, actor, *build, *failed_only).await?,
        Command::Promote {
            repo,
            commit,
            rollback,
        } => promotion::promote(app, actor, repo, commit.as_deref(), *rollback).await?,
        Command::Approve { promotion } => promotion::approve(app, actor, *promotion).await?,
        Command::Env(env) => leases::run(app, actor, env).await?,
        Command::Workers => {
            let workers = app.store.workers().await?;
            if workers.is_empty() {
                Reply::done("No worker is taking jobs.")
            } else {
                let lines: Vec<String> = workers
                    .iter()
                    .map(|w| format!("• {}", w.describe()))
                    .collect();
                Reply::done(format!("Workers:\n{}", lines.join("\n")))
            }
        }
        Command::Subscribe {
            repo,
            branch,
            events,
        } => subscribe(app, actor, repo, branch.as_deref(), events).await?,
        Command::Unsubscribe { repo, branch } => {
            let Some(channel) = actor.channel else {
                return Ok(Reply::invalid(NO_CHANNEL));
            };
            let gone = app
                .store
                .unsubscribe(channel, repo, branch.as_deref())
                .await?;
            if gone.is_empty() {
                Reply::invalid(format!(
                    "This channel has no subscription to {repo}{}.",
                    at(branch.as_deref())
                ))
            } else {
                let names: Vec<String> = gone.iter().map(Subscription::describe).collect();
                Reply::done(format!(
                    "This channel no longer follows {}.",
                    names.join(", ")
                ))
            }
        }
        Command::Subscriptions => {
            let Some(channel) = actor.channel else {
                return Ok(Reply::invalid(NO_CHANNEL));
            };
            let all = app.store.channel_subscriptions(channel).await?;
            let configured = app
                .config
                .discord
                .as_ref()
                .is_some_and(|d| channel == format!("discord:{}", d.channel_id));
            if configured {
                Reply::done(
                    "This channel follows every repository: Kiln's configuration names it \
                     (`[discord] channel_id`).",
                )
            } else if all.is_empty() {
                Reply::done(
                    "This channel follows no repository; `subscribe <owner/repo>` makes it.",
                )
            } else {
                let names: Vec<String> =
                    all.iter().map(|s| format!("• {}", s.describe())).collect();
                Reply::done(format!("This channel follows:\n{}", names.join("\n")))
            }
        }
    })
}

/// `build <repo> [branch | commit]`: the branch's head, or the commit on a branch that holds
/// it (the default branch first): a build always has a branch, which decides its caches,
/// images and secrets.
async fn build(app: &App, actor: Actor<'_>, repo: &str, target: &Target) -> anyhow::Result<Reply> {
    let Some(repository) = app.config.repository(repo) else {
        return Ok(Reply::invalid(format!("Kiln does not build {repo}.")));
    };
    let Some(clone_url) = clone_url_of(app, repository).await? else {
        return Ok(Reply::invalid(format!(
            "Kiln does not know where to fetch {repo} from yet: push to it once, or set its \
             `clone_url` in Kiln's configuration."
        )));
    };
    let Some(resolved) = app.mirrors.resolve(&clone_url, target).await? else {
        return Ok(Reply::invalid(match target {
            Target::Branch(branch) => format!("{repo} has no branch `{branch}`."),
            Target::Commit(commit) => format!("{repo} has no commit `{commit}`."),
        }));
    };
    let branch = ["master", "main"]
        .into_iter()
        .find(|default| resolved.branches.iter().any(|b| b == default))
        .map(str::to_owned)
        .or_else(|| resolved.branches.first().cloned());
    let Some(branch) = branch else {
        return Ok(Reply::invalid(format!(
            "Commit {} is on no branch of {repo}; Kiln builds branches.",
            resolved.commit
        )));
    };
    let name = repository.name.clone();
    let commit = resolved.commit.clone();
    let id = ingress::accept_command(
        app,
        actor.channel,
        BuildRequested {
            build: BuildRef {
                id: BuildId(0),
                repo: name,
                branch: branch.clone(),
                commit: commit.clone(),
            },
            clone_url,
            author: resolved.author,
            subject: resolved.subject,
            kind: TriggerKind::Command,
            changed_paths: None,
            reuse: None,
        },
    )
    .await?;
    let short: String = commit.chars().take(8).collect();
    Ok(Reply::done(format!(
        "Build #{id} of {repo} {branch} ({short}) is queued, for {}.",
        actor.name
    )))
}

/// What `subscribe` and its kin answer outside a chat channel.
const NO_CHANNEL: &str = "Subscriptions belong to chat channels: give this command in the Discord or Slack channel \
     that is to receive the events.";

/// `@branch`, or nothing.
fn at(branch: Option<&str>) -> String {
    branch.map(|b| format!("@{b}")).unwrap_or_default()
}

/// `subscribe <repo>[@branch] [events…]`: the channel the command was given in gets the
/// repository's build cards.
async fn subscribe(
    app: &App,
    actor: Actor<'_>,
    repo: &str,
    branch: Option<&str>,
    events: &[String],
) -> anyhow::Result<Reply> {
    let Some(channel) = actor.channel else {
        return Ok(Reply::invalid(NO_CHANNEL));
    };
    if let Some(why) = app.chat.unreachable(channel) {
        return Ok(Reply::invalid(why));
    }
    let Some(repository) = app.config.repository(repo) else {
        return Ok(Reply::invalid(format!("Kiln does not build {repo}.")));
    };
    let subscription = Subscription::new(
        channel,
        &repository.name,
        branch.map(str::to_owned),
        events.to_vec(),
    );
    let new = app.store.subscribe(&subscription).await?;
    let what = if subscription.events.is_empty() {
        "every build, its card edited as it runs".to_owned()
    } else {
        format!("builds that are {}", subscription.events.join(" or "))
    };
    Ok(Reply::done(format!(
        "This channel {} {}{}: {what}.",
        if new { "now follows" } else { "follows" },
        subscription.repo,
        at(branch)
    )))
}

/// `retry <build> [--failed]`: the same commit of the same branch, built again from the
/// start, or (`--failed`) with the tasks that passed taken as they are.
async fn retry(
    app: &App,
    actor: Actor<'_>,
    build: BuildId,
    failed_only: bool,
) -> anyhow::Result<Reply> {
    let Some(record) = app.store.build(build).await? else {
        return Ok(Reply::invalid(format!("There is no build #{build}.")));
    };
    if failed_only {
        if !record.status.is_final() {
            return Ok(Reply::invalid(format!(
                "Build #{build} is still {}: `retry --failed` re-runs what an ended build did \
                 not pass.",
                record.status
            )));
        }
        let tasks = match &record.plan {
            Some(plan) => app.store.tasks(build, plan).await?,
            None => Vec::new(),
        };
        if tasks.is_empty() || tasks.iter().all(|t| t.status == TaskStatus::Passed) {
            return Ok(Reply::invalid(format!(
                "Build #{build} has no task that did not pass; `retry {build}` builds it \
                 again from the start."
            )));
        }
    }
    let id = ingress::accept_command(
        app,
        actor.channel,
        BuildRequested {
            build: BuildRef {
                id: BuildId(0),
                ..record.build.clone()
            },
            clone_url: record.clone_url.clone(),
            author: record.author.clone(),
            subject: record.subject.clone(),
            // As the build it repeats: the same steps apply (`when: { event: … }`).
            kind: record.kind,
            changed_paths: record.changed_paths.clone(),
            reuse: failed_only.then_some(build),
        },
    )
    .await?;
    let what = if failed_only {
        format!("what did not pass in build #{build}")
    } else {
        format!("build #{build}")
    };
    Ok(Reply::done(format!(
        "Build #{id} runs {what} again ({} {}), for {}.",
        record.build.repo, record.build.branch, actor.name
    )))
}

/// Where to fetch `repository` from: its configured clone URL, else where the newest of its
/// recent builds fetched it from.
pub(crate) async fn clone_url_of(
    app: &App,
    repository: &Repository,
) -> anyhow::Result<Option<String>> {
    if let Some(url) = &repository.clone_url {
        return Ok(Some(url.clone()));
    }
    let recent = app.store.recent_builds(STATUS_LOOKBACK).await?;
    Ok(recent
        .into_iter()
        .find(|r| r.build.repo.eq_ignore_ascii_case(&repository.name) && !r.clone_url.is_empty())
        .map(|r| r.clone_url))
}

fn help(command: Option<&str>) -> Reply {
    match command {
        None => {
            let mut text = String::from("Kiln's commands:\n");
            for (_, usage, summary) in COMMANDS {
                text.push_str(&format!("`{usage}`: {summary}\n"));
            }
            Reply::done(text.trim_end())
        }
        Some(name) => match usage(name) {
            Some((usage, summary)) => Reply::done(format!("`{usage}`: {summary}")),
            None => match parse(name) {
                // The grammar's own message names the command that was meant.
                Err(error) => Reply::invalid(error.0),
                Ok(_) => Reply::invalid(format!("`{name}` is not a command")),
            },
        },
    }
}

async fn status(app: &App, repo: Option<&str>, branch: Option<&str>) -> anyhow::Result<Reply> {
    let recent = app.store.recent_builds(STATUS_LOOKBACK).await?;
    if recent.is_empty() {
        return Ok(Reply::done("No builds yet."));
    }
    let mut lines = Vec::new();
    for record in recent {
        let b = &record.build;
        let id = b.id;
        if repo.is_some_and(|r| !r.eq_ignore_ascii_case(&b.repo))
            || branch.is_some_and(|br| br != b.branch)
        {
            continue;
        }
        let commit: String = b.commit.chars().take(8).collect();
        lines.push(format!(
            "#{id} {} {} {commit} {}: {}",
            b.repo, b.branch, record.status, record.subject
        ));
        if lines.len() == STATUS_SHOWN {
            break;
        }
    }
    if lines.is_empty() {
        let what = match (repo, branch) {
            (Some(repo), Some(branch)) => format!(" of {repo} {branch}"),
            (Some(repo), None) => format!(" of {repo}"),
            _ => String::new(),
        };
        return Ok(Reply::done(format!("No recent builds{what}.")));
    }
    Ok(Reply::done(lines.join("\n")))
}

async fn logs(
    app: &App,
    build: BuildId,
    task: Option<&str>,
    lines: usize,
) -> anyhow::Result<Reply> {
    let Some(record) = app.store.build(build).await? else {
        return Ok(Reply::invalid(format!("There is no build #{build}.")));
    };
    let Some(plan) = &record.plan else {
        let why = record
            .error
            .as_deref()
            .unwrap_or("it has not been planned yet");
        return Ok(Reply::done(format!("Build #{build} has no tasks: {why}")));
    };
    let tasks = app.store.tasks(build, plan).await?;
    // Without a task named: the first that did not pass, else the last to run.
    let chosen = match task {
        Some(name) => tasks.iter().find(|t| t.name == name),
        None => tasks
            .iter()
            .find(|t| matches!(t.status, TaskStatus::Failed | TaskStatus::Errored))
            .or_else(|| tasks.iter().rev().find(|t| t.status != TaskStatus::Waiting)),
    };
    let Some(chosen) = chosen else {
        let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
        return Ok(Reply::invalid(match task {
            Some(name) => format!(
                "Build #{build} has no task `{name}`; its tasks: {}",
                names.join(", ")
            ),
            None => format!("No task of build #{build} has started yet."),
        }));
    };
    let (tail, total) = app.store.log_tail(build, &chosen.name, lines).await?;
    // In a code block, within what a chat message holds: the end is what matters.
    let excerpt = log_excerpt(&tail, lines, MAX_LOG_CHARS);
    let shown = excerpt.lines().count();
    let state = chosen
        .outcome
        .clone()
        .unwrap_or_else(|| chosen.status.to_string());
    Ok(Reply::done(format!(
        "Build #{build}, task `{}` ({state}), last {shown} of {total} line(s):\n```\n{excerpt}\n```",
        chosen.name,
    )))
}

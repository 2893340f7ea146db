//! Commands, whatever front end they came through: parsed by [`kiln_shared::command`],
//! checked against who may give them ([`kiln_shared::permission`]), carried out by their own
//! handler (one file each), and recorded in the audit stream with who gave them and what
//! came of it.
//!
//! A new command is a variant in `kiln_shared::command`, a file here, and one arm in
//! [`carry_out`]. Commands whose engine is larger than a handler (`promote`, `approve`,
//! `env`) are carried out by their own modules ([`crate::promotion`], [`crate::leases`]).

pub mod actor;
pub mod build;
pub mod cancel;
pub mod help;
pub mod logs;
pub mod queue;
pub mod reply;
pub mod retry;
pub mod status;
pub mod subscriptions;
pub mod workers;

use kiln_shared::command::{Command, parse};
use kiln_shared::permission::{Scope, scope};
use kiln_shared::view::truncate;

pub use actor::Actor;
pub use reply::{Outcome, Reply};

use crate::app::App;
use crate::{leases, promotion, requests};

/// How much of an answer the audit stream keeps, in characters.
const MAX_AUDITED_REPLY_CHARS: usize = 300;

/// Carries out `text` for `actor`, records it in the audit stream, and answers.
pub async fn run(app: &App, actor: Actor<'_>, text: &str) -> Reply {
    let reply = match parse(text) {
        Err(error) => Reply::invalid(error.0),
        Ok(command) => carry_out(app, actor, &command)
            .await
            .unwrap_or_else(|error| reply::could_not(&error)),
    };
    let outcome = reply.outcome.as_str();
    let command: String = text.chars().take(MAX_AUDITED_REPLY_CHARS).collect();
    let answer = truncate(&reply.text, MAX_AUDITED_REPLY_CHARS);
    let entry = [
        ("actor", actor.name),
        ("actor_id", actor.id),
        ("via", actor.via),
        ("command", command.as_str()),
        ("outcome", outcome),
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
    if actor.operator {
        return Ok(None);
    }
    let repo = match scope(command) {
        Scope::Open => return Ok(None),
        Scope::Environments => {
            return Ok((!app.config.may_anywhere(actor.id, actor.roles, "env"))
                .then(|| reply::may_not_lease(actor.name, actor.id)));
        }
        Scope::Repository(repo) => repo.into(),
        Scope::Build(build) => match app.store.build(build).await? {
            Some(record) => record.build.repo,
            // Not "allowed" either: the build may be created meanwhile.
            None => return Ok(Some(reply::no_such_build(build).text)),
        },
    };
    if app.config.may(actor.id, actor.roles, command.name(), &repo)
        || actor.writes.is_some_and(|r| r.eq_ignore_ascii_case(&repo))
    {
        return Ok(None);
    }
    let forge_user = matches!(actor.via, "github" | "gitlab");
    Ok(Some(reply::may_not(
        actor.name,
        actor.id,
        command.name(),
        &repo,
        forge_user,
    )))
}

/// Carries out `command` with its handler, once `actor` may give it.
async fn carry_out(app: &App, actor: Actor<'_>, command: &Command) -> anyhow::Result<Reply> {
    if let Some(why) = refusal(app, actor, command).await? {
        return Ok(Reply::refused(why));
    }
    Ok(match command {
        Command::Help { command } => help::help(command.as_deref()),
        Command::Status { repo, branch } => {
            status::status(app, repo.as_ref(), branch.as_ref()).await?
        }
        Command::Logs { build, task, lines } => {
            let lines = lines.map_or(logs::DEFAULT_LOG_LINES, |n| n as usize);
            logs::logs(app, *build, task.as_deref(), lines).await?
        }
        Command::Cancel { build } => cancel::cancel(app, actor, *build).await?,
        Command::Build {
            repo,
            target,
            vars,
            priority,
        } => build::build(app, actor, repo, target, vars, *priority).await?,
        Command::Queue => queue::queue(app).await?,
        Command::Retry {
            build,
            failed_only,
            task,
        } => retry::retry(app, actor, *build, *failed_only, task.as_deref()).await?,
        Command::Run { build, step } => retry::run(app, actor, *build, step).await?,
        Command::OkToTest { repo, number, head } => match app.config.repository(repo) {
            Some(repository) => Reply::done(
                requests::build_head(
                    app,
                    repository.forge,
                    repository,
                    (*number, head.as_deref()),
                    actor.channel,
                    actor.name,
                )
                .await?,
            ),
            None => reply::not_built(repo),
        },
        Command::Promote {
            repo,
            commit,
            rollback,
        } => promotion::promote(app, actor, repo, commit.as_ref(), *rollback).await?,
        Command::Approve { promotion } => promotion::approve(app, actor, *promotion).await?,
        Command::Env(env) => leases::run(app, actor, env).await?,
        Command::Workers => workers::workers(app).await?,
        Command::Subscribe {
            repo,
            branch,
            events,
        } => subscriptions::subscribe(app, actor, repo, branch.as_deref(), events).await?,
        Command::Unsubscribe { repo, branch } => {
            subscriptions::unsubscribe(app, actor, repo, branch.as_deref()).await?
        }
        Command::Subscriptions => subscriptions::subscriptions(app, actor).await?,
    })
}

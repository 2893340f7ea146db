//! `subscribe`, `unsubscribe` and `subscriptions`: which chat channels hear of which
//! repositories' builds.

use kiln_shared::ident::RepoName;
use kiln_shared::subscription::Subscription;

use super::actor::Actor;
use super::reply::{self, Reply};
use crate::app::App;

/// What `subscribe` and its kin answer outside a chat channel.
const NO_CHANNEL: &str = "Subscriptions belong to chat channels: give this command in the chat channel that is to \
     receive the events.";

/// `@branch`, or nothing.
fn at(branch: Option<&str>) -> String {
    branch.map(|b| format!("@{b}")).unwrap_or_default()
}

/// `subscribe <repo>[@branch] [events…]`: the channel the command was given in gets the
/// repository's build cards.
pub async fn subscribe(
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
        return Ok(reply::not_built(repo));
    };
    let subscription = Subscription::new(
        channel,
        &repository.name,
        branch.map(str::to_owned),
        events.to_vec(),
    );
    let new = app.store.subscribe(&subscription).await?;
    Ok(subscribed(&subscription, new))
}

fn subscribed(subscription: &Subscription, new: bool) -> Reply {
    let what = if subscription.events.is_empty() {
        "every build, its card edited as it runs".to_owned()
    } else {
        format!("builds that are {}", subscription.events.join(" or "))
    };
    Reply::done(format!(
        "This channel {} {}{}: {what}.",
        if new { "now follows" } else { "follows" },
        subscription.repo,
        at(subscription.branch.as_deref())
    ))
}

/// `unsubscribe <repo>[@branch]`: the channel stops following the repository.
pub async fn unsubscribe(
    app: &App,
    actor: Actor<'_>,
    repo: &RepoName,
    branch: Option<&str>,
) -> anyhow::Result<Reply> {
    let Some(channel) = actor.channel else {
        return Ok(Reply::invalid(NO_CHANNEL));
    };
    let gone = app.store.unsubscribe(channel, repo, branch).await?;
    Ok(unsubscribed(repo, branch, &gone))
}

fn unsubscribed(repo: &str, branch: Option<&str>, gone: &[Subscription]) -> Reply {
    if gone.is_empty() {
        Reply::invalid(format!(
            "This channel has no subscription to {repo}{}.",
            at(branch)
        ))
    } else {
        let names: Vec<String> = gone.iter().map(Subscription::describe).collect();
        Reply::done(format!(
            "This channel no longer follows {}.",
            names.join(", ")
        ))
    }
}

/// `subscriptions`: what the channel follows.
pub async fn subscriptions(app: &App, actor: Actor<'_>) -> anyhow::Result<Reply> {
    let Some(channel) = actor.channel else {
        return Ok(Reply::invalid(NO_CHANNEL));
    };
    let all = app.store.channel_subscriptions(channel).await?;
    let configured = app.chat.everywhere().any(|c| c == channel);
    Ok(followed(configured, &all))
}

fn followed(configured: bool, all: &[Subscription]) -> Reply {
    if configured {
        Reply::done(
            "This channel follows every repository: Kiln's configuration names it \
             (`[discord] channel_id`).",
        )
    } else if all.is_empty() {
        Reply::done("This channel follows no repository; `subscribe <owner/repo>` makes it.")
    } else {
        let names: Vec<String> = all.iter().map(|s| format!("• {}", s.describe())).collect();
        Reply::done(format!("This channel follows:\n{}", names.join("\n")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        let all = Subscription::new("slack:C1", "acme/app", None, Vec::new());
        let failed = Subscription::new(
            "slack:C1",
            "acme/app",
            Some("main".into()),
            vec!["failed".into(), "errored".into()],
        );
        insta::assert_snapshot!(subscribed(&all, true).text, @"This channel now follows acme/app: every build, its card edited as it runs.");
        insta::assert_snapshot!(subscribed(&failed, false).text, @"This channel follows acme/app@main: builds that are failed or errored.");
        insta::assert_snapshot!(unsubscribed("acme/app", Some("dev"), &[]).text, @"This channel has no subscription to acme/app@dev.");
        insta::assert_snapshot!(unsubscribed("acme/app", None, &[all.clone(), failed.clone()]).text, @"This channel no longer follows acme/app, acme/app@main (failed, errored).");
        insta::assert_snapshot!(followed(true, &[]).text, @"This channel follows every repository: Kiln's configuration names it (`[discord] channel_id`).");
        insta::assert_snapshot!(followed(false, &[]).text, @"This channel follows no repository; `subscribe <owner/repo>` makes it.");
        insta::assert_snapshot!(followed(false, &[all, failed]).text, @r"
            This channel follows:
            • acme/app
            • acme/app@main (failed, errored)
            ");
        insta::assert_snapshot!(NO_CHANNEL, @"Subscriptions belong to chat channels: give this command in the chat channel that is to receive the events.");
    }
}

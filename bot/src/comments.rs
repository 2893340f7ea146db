//! Commands in pull request (GitHub) and merge request (GitLab) comments: `/kiln build` builds
//! the request's branch, `/kiln ok-to-test` its head (a fork's request waits for it); the
//! other commands about the request's repository and its builds
//! work as in chat. The forge says who may: a commenter who may push to the repository may
//! give any of them; anyone else only what Kiln's `[[permission]]`s grant them, looking
//! included, since the answer is public. The answer is a comment on the request.
//!
//! The door verifies and claims the comment's delivery, then queues its command on the bot's
//! comments queue; any bot takes it from there.

use kiln_shared::command::{Command, OK_TO_TEST, parse};
use kiln_shared::trigger::Comment;
use kiln_shared::wire::CommentRequested;

use crate::app::App;
use crate::commands::{self, Actor};
use crate::config::Forge;
use crate::requests;

/// Carries out the command of a comment taken from the bot's queue and answers it on the
/// request, once: a command whose answer was posted is not carried out again when its
/// message comes again (a bot stopped before acknowledging it). One whose bot stopped before
/// answering is carried out again, by whichever bot takes it.
pub async fn answer(app: &App, requested: CommentRequested) -> anyhow::Result<()> {
    let CommentRequested {
        forge,
        delivery,
        comment,
    } = requested;
    let Some(door) = Forge::named(&forge) else {
        tracing::warn!(%forge, "a comment from a forge Kiln does not know; dropped");
        return Ok(());
    };
    if app.store.comment_answered(&forge, &delivery).await? {
        return Ok(());
    }
    let text = match carry_out(app, door, &comment).await {
        Ok(text) => text,
        Err(error) => format!("Kiln could not do that just now: {error:#}"),
    };
    let posted = app
        .forges
        .comment(door, &comment.repo, comment.number, &as_comment(&text))
        .await
        .map(drop);
    if let Err(error) = posted {
        tracing::error!(repo = %comment.repo, number = comment.number, error = format!("{error:#}"), "cannot answer a comment");
    }
    app.store.note_comment_answered(&forge, &delivery).await?;
    Ok(())
}

async fn carry_out(app: &App, forge: Forge, comment: &Comment) -> anyhow::Result<String> {
    let via = forge.as_str();
    let writer = app.forges.may_write(forge, comment).await?;
    let id = format!("{via}:{}", comment.author_id);
    let mut text = comment.command.clone();
    if let Some(rest) = text.strip_prefix(OK_TO_TEST)
        && (rest.is_empty() || rest.starts_with(' '))
    {
        let head = rest.trim().to_ascii_lowercase();
        let head = (!head.is_empty()).then_some(head.as_str());
        return ok_to_test(app, forge, comment, (writer, &id), head).await;
    }
    if text == "status" {
        text = format!("status {}", comment.repo);
    }
    // Only about the request's repository, and, without push access, only what Kiln's
    // permissions grant: a public request must not show another repository's builds.
    // `build` alone is the request's branch, found below.
    let probe = if text == "build" {
        format!("build {}", comment.repo)
    } else {
        text.clone()
    };
    let command = match parse(&probe) {
        Ok(command) => command,
        Err(error) => return Ok(error.0),
    };
    if !matches!(command, Command::Help { .. }) {
        let about = match &command {
            Command::Cancel { build }
            | Command::Retry { build, .. }
            | Command::Run { build, .. }
            | Command::Logs { build, .. } => app
                .store
                .build(*build)
                .await?
                .map(|record| record.build.repo),
            other => other.repo().cloned(),
        };
        if !about.is_some_and(|repo| repo.eq_ignore_ascii_case(&comment.repo)) {
            return Ok(format!(
                "Here Kiln takes commands about {} and its builds only.",
                comment.repo
            ));
        }
        if !writer && !app.config.may(&id, &[], command.name(), &comment.repo) {
            return Ok(format!(
                "{} may not `{}` on {}; they need push access to it, or a `[[permission]]` \
                 in Kiln's configuration must name `{id}`.",
                comment.author,
                command.name(),
                comment.repo
            ));
        }
    }
    if text == "build" {
        let request = app
            .forges
            .pull_request(forge, &comment.repo, comment.number)
            .await?;
        if request.from_fork {
            return Ok(format!(
                "This request comes from a fork: `/kiln {OK_TO_TEST}` from someone who may push \
                 to {} builds its head.",
                comment.repo
            ));
        }
        text = format!("build {} {}", comment.repo, request.branch);
    }
    // The request follows the builds asked for in it: their cards are comments there.
    let channel = app
        .forges
        .request_channel(forge, &comment.repo, comment.number);
    let actor = Actor {
        name: &comment.author,
        via,
        id: &id,
        operator: false,
        channel: Some(&channel),
        writes: writer.then_some(comment.repo.as_str()),
        roles: &[],
    };
    Ok(commands::run(app, actor, &text).await.text)
}

/// `/kiln ok-to-test [head]`: someone who may push to the repository (or whom a
/// `[[permission]]` grants `ok-to-test`) has the request's head built as it is now, or only
/// if it is still `head` ([`requests::build_head`]).
async fn ok_to_test(
    app: &App,
    forge: Forge,
    comment: &Comment,
    (writer, id): (bool, &str),
    head: Option<&str>,
) -> anyhow::Result<String> {
    let (name, number) = (&comment.repo, comment.number);
    let Some(repo) = app.config.repository(name) else {
        return Ok(format!("Kiln does not build {name}."));
    };
    if !writer && !app.config.may(id, &[], OK_TO_TEST, name) {
        return Ok(format!(
            "{} may not `{OK_TO_TEST}` on {name}; they need push access to it, or a \
             `[[permission]]` in Kiln's configuration must name `{id}`.",
            comment.author
        ));
    }
    // The request follows its build: the card is a comment there.
    let channel = app.forges.request_channel(forge, name, number);
    let request = (number, head);
    requests::build_head(app, forge, repo, request, Some(&channel), &comment.author).await
}

/// `text` as a comment that shows it as it is: in one code block, so that nothing in it (a
/// branch name, a commit subject, a log line) can mention anyone or make markup.
fn as_comment(text: &str) -> String {
    let lines: Vec<String> = text
        .lines()
        .filter(|line| line.trim() != "```")
        .map(|line| line.replace("```", "'''"))
        .collect();
    format!("```text\n{}\n```", lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_one_code_block() {
        let reply = "Build #3, task `unit` (failed):\n```\n@org/team <img src=x> ```\n```";
        assert_eq!(
            as_comment(reply),
            "```text\nBuild #3, task `unit` (failed):\n@org/team <img src=x> '''\n```"
        );
    }
}

//! Chat messages rendered by tera: one `Tera` per dialect, each escaping user text its own way.

use kiln_shared::view::BuildFinishedMessage;
use tera::{Context, Tera};

const BUILD_FINISHED: &str = "build_finished.discord.md";

/// The message templates, compiled once at start-up.
#[derive(Debug)]
pub struct Templates {
    discord: Tera,
}

/// Escapes text for Discord markdown: every formatting character gets a backslash, and an
/// `@` gets a zero-width space after it so `@everyone` and `@here` can never be mentions,
/// even where `allowed_mentions` is not set.
fn escape_discord(input: &str, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    for c in input.chars() {
        match c {
            '\\' | '*' | '_' | '~' | '`' | '|' | '>' | '#' | '[' | ']' | '(' | ')' | '<' | ':'
            | '-' => write!(out, "\\{c}")?,
            '@' => write!(out, "@\u{200B}")?,
            '\n' | '\r' => write!(out, " ")?,
            c => write!(out, "{c}")?,
        }
    }
    Ok(())
}

impl Templates {
    /// Compiles every template; a broken template stops the bot at start-up, not at the
    /// first build.
    pub fn new() -> tera::TeraResult<Self> {
        let mut discord = Tera::new();
        discord.autoescape_on([".discord.md"]);
        discord.set_escape_fn(escape_discord);
        discord.add_raw_template(
            BUILD_FINISHED,
            include_str!("../../templates/discord/build_finished.discord.md"),
        )?;
        Ok(Self { discord })
    }

    /// The Discord message for a finished build.
    pub fn build_finished(&self, message: &BuildFinishedMessage) -> tera::TeraResult<String> {
        let context = Context::from_serialize(message)?;
        Ok(self
            .discord
            .render(BUILD_FINISHED, &context)?
            .trim_end()
            .to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_shared::build::{BuildId, BuildStatus, TaskStatus};
    use kiln_shared::wire::{BuildFinished, BuildRef, TaskSummary};

    fn finished(status: BuildStatus, branch: &str, subject: &str, error: Option<&str>) -> String {
        let event = BuildFinished {
            build: BuildRef {
                id: BuildId(42),
                repo: "acme/api".into(),
                branch: branch.into(),
                commit: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c".into(),
            },
            status,
            author: "octocat".into(),
            subject: subject.into(),
            tasks: vec![
                TaskSummary {
                    name: "build".into(),
                    status: TaskStatus::Passed,
                    exit_code: Some(0),
                    allow_failure: false,
                },
                TaskSummary {
                    name: "lint".into(),
                    status: TaskStatus::Failed,
                    exit_code: Some(1),
                    allow_failure: true,
                },
                TaskSummary {
                    name: "test".into(),
                    status: TaskStatus::Failed,
                    exit_code: Some(3),
                    allow_failure: false,
                },
            ],
            error: error.map(Into::into),
        };
        let message = BuildFinishedMessage::new(&event, "http://kiln.test/");
        let text = Templates::new()
            .expect("templates compile")
            .build_finished(&message)
            .expect("renders");
        // Shown by name: an invisible character in a snapshot would hide what is tested.
        text.replace('\u{200B}', "{ZWSP}")
    }

    #[test]
    fn build_finished_discord() {
        insta::assert_snapshot!(finished(BuildStatus::Failed, "master", "Fix the parser", None), @"
    ❌ **acme/api** on master: build #42 **failed**
    0d1a26e67d Fix the parser (by octocat)
    • build: passed
    • lint: failed (exit code 1), allowed to fail
    • test: failed (exit code 3)
    http://kiln.test/builds/42
    ");
    }

    #[test]
    fn build_finished_discord_failure_mentions_the_author_and_shows_the_log() {
        let event = BuildFinished {
            build: BuildRef {
                id: BuildId(7),
                repo: "acme/api".into(),
                branch: "master".into(),
                commit: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c".into(),
            },
            status: BuildStatus::Failed,
            author: "octocat".into(),
            subject: "Break it".into(),
            tasks: vec![TaskSummary {
                name: "test".into(),
                status: TaskStatus::Failed,
                exit_code: Some(3),
                allow_failure: false,
            }],
            error: None,
        };
        let mut message = BuildFinishedMessage::new(&event, "http://kiln.test");
        let lines = ["ok 1", "```@everyone", "assertion failed: 2 == 3"].map(str::to_owned);
        message.failure = Some(kiln_shared::view::FailureExcerpt {
            task: "test".into(),
            lines: kiln_shared::view::log_excerpt(&lines, 15, 900),
        });
        message.mention = Some("<@123>".into());
        let text = Templates::new()
            .expect("templates compile")
            .build_finished(&message)
            .expect("renders");
        insta::assert_snapshot!(text, @"
        <@123> ❌ **acme/api** on master: build #7 **failed**
        0d1a26e67d Break it (by octocat)
        • test: failed (exit code 3)
        Last lines of test:
        ```
        ok 1
        '''@everyone
        assertion failed: 2 == 3
        ```
        http://kiln.test/builds/7
        ");
    }

    #[test]
    fn build_finished_discord_hostile() {
        let subject = format!(
            "@everyone **bold** `code` <script>alert(1)</script> {}",
            "x".repeat(300)
        );
        insta::assert_snapshot!(
            finished(BuildStatus::Passed, "feat/@here_[x](http://evil)", &subject, Some("line 1:\n> quote")),
            @r"
    ✅ **acme/api** on feat/@{ZWSP}here\_\[x\]\(http\://evil\): build #42 **passed**
    0d1a26e67d @{ZWSP}everyone \*\*bold\*\* \`code\` \<script\>alert\(1\)\</script\> xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx… (by octocat)
    • build: passed
    • lint: failed (exit code 1), allowed to fail
    • test: failed (exit code 3)
    line 1\: \> quote
    http://kiln.test/builds/42
    "
        );
    }
}

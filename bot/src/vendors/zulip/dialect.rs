//! Zulip's markdown: its escaping and its templates.
//!
//! Zulip has no buttons: a card links to the build and its logs, and names the commands a
//! reader can give Kiln by mentioning it.

use crate::notify::render::Dialect;

/// Zulip's dialect.
pub static DIALECT: Dialect = Dialect {
    name: "zulip",
    escape,
    card: include_str!("templates/build.zulip.md"),
    failure: include_str!("templates/build_failed.zulip.md"),
    promotion: include_str!("templates/promotion.zulip.md"),
};

/// Escapes text for Zulip's markdown: the punctuation its markdown reads gets a backslash;
/// an `@` (mentions: `@**all**`), a `~` (`~~strike~~`) and a `$` (`$$math$$`) get a
/// zero-width space after them, which no syntax of Zulip's survives; a line break becomes a
/// space, so no line can start a quote or a list.
pub fn escape(input: &str, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    for c in input.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '(' | ')' | '>' | '#' | '-' | '+' | '!' => {
                write!(out, "\\{c}")?;
            }
            '@' | '~' | '$' => write!(out, "{c}\u{200B}")?,
            '\n' | '\r' => write!(out, " ")?,
            c => write!(out, "{c}")?,
        }
    }
    Ok(())
}

/// `text`, which Kiln wrote, with every mention made inert (`@**user**`, `@_**user**`,
/// `@*group*`): a command's answer may quote what a user typed.
pub fn inert_mentions(text: &str) -> String {
    text.replace("@*", "@\u{200B}*").replace("@_", "@\u{200B}_")
}

#[cfg(test)]
mod tests {
    use kiln_shared::build::{BuildId, BuildStatus, TaskStatus};
    use kiln_shared::view::{BuildMessage, FailureExcerpt, TaskLine, log_excerpt};
    use kiln_shared::wire::BuildRef;

    use super::*;
    use crate::notify::render::Templates;

    fn message(subject: &str, branch: &str) -> BuildMessage {
        let build = BuildRef {
            id: BuildId(42),
            repo: "acme/api".into(),
            branch: branch.into(),
            commit: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c".into(),
        };
        let task = |name: &str, status: TaskStatus, code: i64| TaskLine {
            name: name.into(),
            status: status.as_str().into(),
            exit_code: (code != 0).then_some(code),
            allow_failure: false,
            by_hand: false,
            step: String::new(),
        };
        BuildMessage::new(
            &build,
            BuildStatus::Failed,
            "octocat",
            subject,
            vec![
                task("build", TaskStatus::Passed, 0),
                task("test", TaskStatus::Failed, 3),
            ],
            None,
            "http://kiln.test/",
        )
    }

    /// Shown by name: an invisible character in a snapshot would hide what is tested.
    fn shown(text: String) -> String {
        text.replace('\u{200B}', "{ZWSP}")
    }

    fn templates() -> Templates {
        Templates::new([&DIALECT]).expect("compiles")
    }

    #[test]
    fn card() {
        let card = templates()
            .card(&DIALECT, &message("Fix the parser", "master"))
            .expect("renders");
        insta::assert_snapshot!(shown(card), @r"
            ❌ **acme/api** on master: build #42 **failed**
            `0d1a26e67d` Fix the parser (by octocat)
            * build: passed
            * test: failed (exit code 3)

            [Build #42](http://kiln.test/builds/42) · [logs](http://kiln.test/builds/42/logs) · `logs 42` · `retry 42`
            ");
    }

    #[test]
    fn hostile_input_neither_mentions_formats_nor_links() {
        let subject = format!(
            "@**all** @_**everyone** ~~gone~~ $$x$$ **bold** `code` [x](http://evil) #**general** > quote\n* item {}",
            "x".repeat(300)
        );
        let card = templates()
            .card(
                &DIALECT,
                &message(&subject, "feat/@**channel**_[x](http://evil)"),
            )
            .expect("renders");
        insta::assert_snapshot!(shown(card), @r"
            ❌ **acme/api** on feat/@{ZWSP}\*\*channel\*\*\_\[x\]\(http://evil\): build #42 **failed**
            `0d1a26e67d` @{ZWSP}\*\*all\*\* @{ZWSP}\_\*\*everyone\*\* ~{ZWSP}~{ZWSP}gone~{ZWSP}~{ZWSP} ${ZWSP}${ZWSP}x${ZWSP}${ZWSP} \*\*bold\*\* \`code\` \[x\]\(http://evil\) \#\*\*general\*\* \> quote (by octocat)
            * build: passed
            * test: failed (exit code 3)

            [Build #42](http://kiln.test/builds/42) · [logs](http://kiln.test/builds/42/logs) · `logs 42` · `retry 42`
            ");
    }

    #[test]
    fn failure_mentions_its_author_once_and_quotes_the_log_in_a_block() {
        let mut message = message("Break it", "master");
        let lines = ["ok 1", "```@**all**", "assertion failed: 2 == 3"].map(str::to_owned);
        message.failure = Some(FailureExcerpt {
            task: "test".into(),
            lines: log_excerpt(&lines, 15, 900),
        });
        message.mention = Some("@**Ada Lovelace|12**".into());
        let text = templates().failure(&DIALECT, &message).expect("renders");
        insta::assert_snapshot!(shown(text), @r"
            @**Ada Lovelace|12** ❌ **acme/api** on master: build #42 **failed**
            `0d1a26e67d` Break it (by octocat)
            * build: passed
            * test: failed (exit code 3)

            [Build #42](http://kiln.test/builds/42) · [logs](http://kiln.test/builds/42/logs) · `logs 42` · `retry 42`


            Last lines of test:
            ```
            ok 1
            '''@**all**
            assertion failed: 2 == 3
            ```
            ");
    }

    #[test]
    fn answers_cannot_mention() {
        insta::assert_snapshot!(
            shown(inert_mentions("`@**all**` @_**ada** @*ops* may not `build` acme/api@master")),
            @"`@{ZWSP}**all**` @{ZWSP}_**ada** @{ZWSP}*ops* may not `build` acme/api@master"
        );
    }
}

//! Chat messages rendered by tera: one `Tera` per dialect, each escaping user text its own way.

use kiln_shared::view::{BuildMessage, PromotionMessage};
use tera::{Context, Tera};

use crate::slack;

/// The chat dialects Kiln writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Discord's markdown.
    Discord,
    /// Slack's mrkdwn.
    Slack,
    /// GitHub's and GitLab's markdown, in request comments.
    Forge,
}

/// The message templates, compiled once at start-up.
#[derive(Debug)]
pub struct Templates {
    discord: Tera,
    slack: Tera,
    forge: Tera,
    /// The web console's page, HTML-escaped.
    html: Tera,
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

/// Escapes text for Slack mrkdwn: `&`, `<` and `>` are its only control characters, so
/// escaped text can neither mention `<!channel>`, make a link nor start a quote. (Slack has
/// no escape for `*`, `_` or `` ` ``: a subject can still make itself bold.)
fn escape_slack(input: &str, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    write!(out, "{}", slack::escape(input))
}

/// Escapes text for GitHub's and GitLab's markdown: every punctuation character markdown
/// reads gets a backslash, `<`, `>` and `&` become entities (no HTML), and an `@` gets a
/// zero-width space after it, so no user, team or group is mentioned.
fn escape_forge(input: &str, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    for c in input.chars() {
        match c {
            '\\' | '*' | '_' | '~' | '`' | '|' | '#' | '[' | ']' | '(' | ')' | ':' | '-' | '+'
            | '!' => write!(out, "\\{c}")?,
            '<' => write!(out, "&lt;")?,
            '>' => write!(out, "&gt;")?,
            '&' => write!(out, "&amp;")?,
            '@' => write!(out, "@\u{200B}")?,
            '\n' | '\r' => write!(out, " ")?,
            c => write!(out, "{c}")?,
        }
    }
    Ok(())
}

/// One dialect's templates: a build's card, and the notification of its failure.
fn dialect(
    suffix: &'static str,
    escape: fn(&str, &mut dyn std::io::Write) -> std::io::Result<()>,
    [card, failed, promotion]: [&str; 3],
) -> tera::TeraResult<Tera> {
    let mut tera = Tera::new();
    tera.autoescape_on([suffix]);
    tera.set_escape_fn(escape);
    tera.add_raw_templates([
        (format!("build{suffix}"), card),
        (format!("build_failed{suffix}"), failed),
        (format!("promotion{suffix}"), promotion),
    ])?;
    Ok(tera)
}

impl Templates {
    /// Compiles every template; a broken template stops the bot at start-up, not at the
    /// first build.
    pub fn new() -> tera::TeraResult<Self> {
        Ok(Self {
            discord: dialect(
                ".discord.md",
                escape_discord,
                [
                    include_str!("../../templates/discord/build.discord.md"),
                    include_str!("../../templates/discord/build_failed.discord.md"),
                    include_str!("../../templates/discord/promotion.discord.md"),
                ],
            )?,
            slack: dialect(
                ".slack.md",
                escape_slack,
                [
                    include_str!("../../templates/slack/build.slack.md"),
                    include_str!("../../templates/slack/build_failed.slack.md"),
                    include_str!("../../templates/slack/promotion.slack.md"),
                ],
            )?,
            forge: dialect(
                ".forge.md",
                escape_forge,
                [
                    include_str!("../../templates/forge/build.forge.md"),
                    include_str!("../../templates/forge/build_failed.forge.md"),
                    include_str!("../../templates/forge/promotion.forge.md"),
                ],
            )?,
            html: {
                // tera escapes `.html` templates for HTML by default.
                let mut html = Tera::new();
                html.add_raw_templates([
                    (
                        "build.html",
                        include_str!("../../templates/html/build.html"),
                    ),
                    (
                        "console.html",
                        include_str!("../../templates/html/console.html"),
                    ),
                ])?;
                html
            },
        })
    }

    /// The web console's page for `page`.
    pub fn console(&self, page: &impl serde::Serialize) -> tera::TeraResult<String> {
        self.html
            .render("console.html", &Context::from_serialize(page)?)
    }

    /// A build's card, as it is now.
    pub fn card(&self, dialect: Dialect, message: &BuildMessage) -> tera::TeraResult<String> {
        self.render(dialect, "build", message)
    }

    /// The notification of a build's failure.
    pub fn failure(&self, dialect: Dialect, message: &BuildMessage) -> tera::TeraResult<String> {
        self.render(dialect, "build_failed", message)
    }

    /// A promotion's card.
    pub fn promotion(
        &self,
        dialect: Dialect,
        message: &PromotionMessage,
    ) -> tera::TeraResult<String> {
        self.render(dialect, "promotion", message)
    }

    fn render(
        &self,
        dialect: Dialect,
        name: &str,
        message: &impl serde::Serialize,
    ) -> tera::TeraResult<String> {
        let (tera, suffix) = match dialect {
            Dialect::Discord => (&self.discord, ".discord.md"),
            Dialect::Slack => (&self.slack, ".slack.md"),
            Dialect::Forge => (&self.forge, ".forge.md"),
        };
        let context = Context::from_serialize(message)?;
        Ok(tera
            .render(&format!("{name}{suffix}"), &context)?
            .trim_end()
            .to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_shared::build::{BuildId, BuildStatus, TaskStatus};
    use kiln_shared::view::{FailureExcerpt, TaskLine, log_excerpt};
    use kiln_shared::wire::BuildRef;

    fn task(name: &str, status: TaskStatus, code: i64, allow_failure: bool) -> TaskLine {
        TaskLine {
            name: name.into(),
            status: status.as_str().into(),
            exit_code: (code != 0).then_some(code),
            allow_failure,
        }
    }

    fn message(
        status: BuildStatus,
        branch: &str,
        subject: &str,
        error: Option<&str>,
    ) -> BuildMessage {
        let build = BuildRef {
            id: BuildId(42),
            repo: "acme/api".into(),
            branch: branch.into(),
            commit: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c".into(),
        };
        let tasks = vec![
            task("build", TaskStatus::Passed, 0, false),
            task("lint", TaskStatus::Failed, 1, true),
            task("test", TaskStatus::Failed, 3, false),
        ];
        BuildMessage::new(
            &build,
            status,
            "octocat",
            subject,
            tasks,
            error.map(Into::into),
            "http://kiln.test/",
        )
    }

    /// A failure's message: the end of a log that tries to break out of its block, and a
    /// mention.
    fn failure(dialect: Dialect) -> String {
        let mut message = message(BuildStatus::Failed, "master", "Break it", None);
        let lines = [
            "ok 1",
            "```@everyone <!channel>",
            "assertion failed: 2 == 3",
        ]
        .map(str::to_owned);
        message.failure = Some(FailureExcerpt {
            task: "test".into(),
            lines: log_excerpt(&lines, 15, 900),
        });
        message.mention = Some("<@123>".into());
        shown(
            Templates::new()
                .expect("compiles")
                .failure(dialect, &message)
                .expect("renders"),
        )
    }

    fn card(dialect: Dialect, message: &BuildMessage) -> String {
        shown(
            Templates::new()
                .expect("compiles")
                .card(dialect, message)
                .expect("renders"),
        )
    }

    /// Shown by name: an invisible character in a snapshot would hide what is tested.
    fn shown(text: String) -> String {
        text.replace('\u{200B}', "{ZWSP}")
    }

    /// User text that tries to mention everyone, format, link and break lines.
    fn hostile() -> BuildMessage {
        let subject = format!(
            "@everyone <!here> **bold** `code` <script>alert(1)</script> & {}",
            "x".repeat(300)
        );
        message(
            BuildStatus::Passed,
            "feat/@here_[x](http://evil)",
            &subject,
            Some("line 1:\n> quote"),
        )
    }

    #[test]
    fn card_discord() {
        insta::assert_snapshot!(card(Dialect::Discord, &message(BuildStatus::Failed, "master", "Fix the parser", None)), @"
        ❌ **acme/api** on master: build #42 **failed**
        0d1a26e67d Fix the parser (by octocat)
        • build: passed
        • lint: failed (exit code 1), allowed to fail
        • test: failed (exit code 3)
        ");
    }

    #[test]
    fn card_discord_running() {
        let mut running = message(BuildStatus::Running, "master", "Fix the parser", None);
        running.tasks[1].status = "running".into();
        running.tasks[1].exit_code = None;
        running.tasks[2].status = "waiting".into();
        running.tasks[2].exit_code = None;
        insta::assert_snapshot!(card(Dialect::Discord, &running), @"
        🔄 **acme/api** on master: build #42 **running**
        0d1a26e67d Fix the parser (by octocat)
        • build: passed
        • lint: running
        • test: waiting
        ");
    }

    #[test]
    fn card_discord_hostile() {
        insta::assert_snapshot!(card(Dialect::Discord, &hostile()), @r"
        ✅ **acme/api** on feat/@{ZWSP}here\_\[x\]\(http\://evil\): build #42 **passed**
        0d1a26e67d @{ZWSP}everyone \<!here\> \*\*bold\*\* \`code\` \<script\>alert\(1\)\</script\> & xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx… (by octocat)
        • build: passed
        • lint: failed (exit code 1), allowed to fail
        • test: failed (exit code 3)
        line 1\: \> quote
        ");
    }

    #[test]
    fn card_with_reports() {
        use kiln_shared::view::{Report, ReportLine, Verdict};
        let mut message = message(BuildStatus::Passed, "master", "Ship it", None);
        message.reports = [
            (
                "security-scan",
                Verdict::Failed,
                "2 known <!here> @everyone vulnerabilities",
            ),
            (
                "perf",
                Verdict::Neutral,
                "p99 unchanged\nsecond line dropped",
            ),
        ]
        .iter()
        .map(|(reporter, verdict, summary)| {
            ReportLine::from(&Report {
                reporter: (*reporter).into(),
                verdict: *verdict,
                summary: (*summary).into(),
            })
        })
        .collect();
        insta::assert_snapshot!(card(Dialect::Discord, &message), @r"
        ✅ **acme/api** on master: build #42 **passed**
        0d1a26e67d Ship it (by octocat)
        • build: passed
        • lint: failed (exit code 1), allowed to fail
        • test: failed (exit code 3)
        ❌ security\-scan: 2 known \<!here\> @{ZWSP}everyone vulnerabilities
        ➖ perf: p99 unchanged
        ");
        insta::assert_snapshot!(card(Dialect::Slack, &message), @"
        ✅ *acme/api* on master: build #42 *passed*
        `0d1a26e67d` Ship it (by octocat)
        • build: passed
        • lint: failed (exit code 1), allowed to fail
        • test: failed (exit code 3)
        ❌ security-scan: 2 known &lt;!here&gt; @everyone vulnerabilities
        ➖ perf: p99 unchanged
        ");
    }

    #[test]
    fn card_slack() {
        insta::assert_snapshot!(card(Dialect::Slack, &message(BuildStatus::Failed, "master", "Fix the parser", None)), @"
        ❌ *acme/api* on master: build #42 *failed*
        `0d1a26e67d` Fix the parser (by octocat)
        • build: passed
        • lint: failed (exit code 1), allowed to fail
        • test: failed (exit code 3)
        ");
    }

    #[test]
    fn card_slack_hostile() {
        insta::assert_snapshot!(card(Dialect::Slack, &hostile()), @"
        ✅ *acme/api* on feat/@here_[x](http://evil): build #42 *passed*
        `0d1a26e67d` @everyone &lt;!here&gt; **bold** `code` &lt;script&gt;alert(1)&lt;/script&gt; &amp; xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx… (by octocat)
        • build: passed
        • lint: failed (exit code 1), allowed to fail
        • test: failed (exit code 3)
        line 1:
        &gt; quote
        ");
    }

    #[test]
    fn failure_discord() {
        insta::assert_snapshot!(failure(Dialect::Discord), @"
        <@123> ❌ **acme/api** on master: build #42 **failed**
        0d1a26e67d Break it (by octocat)
        • build: passed
        • lint: failed (exit code 1), allowed to fail
        • test: failed (exit code 3)
        Last lines of test:
        ```
        ok 1
        '''@everyone <!channel>
        assertion failed: 2 == 3
        ```
        http://kiln.test/builds/42
        ");
    }

    #[test]
    fn card_forge_hostile() {
        insta::assert_snapshot!(card(Dialect::Forge, &hostile()), @r"
        ✅ **acme/api** on feat/@{ZWSP}here\_\[x\]\(http\://evil\): build #42 **passed**
        0d1a26e67d @{ZWSP}everyone &lt;\!here&gt; \*\*bold\*\* \`code\` &lt;script&gt;alert\(1\)&lt;/script&gt; &amp; xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx… (by octocat)
        - build: passed
        - lint: failed (exit code 1), allowed to fail
        - test: failed (exit code 3)
        line 1\: &gt; quote

        [Build #42](http://kiln.test/builds/42) · [logs](http://kiln.test/builds/42/logs)
        ");
    }

    #[test]
    fn failure_forge() {
        insta::assert_snapshot!(failure(Dialect::Forge), @"
        <@123> ❌ **acme/api** on master: build #42 **failed**
        0d1a26e67d Break it (by octocat)
        - build: passed
        - lint: failed (exit code 1), allowed to fail
        - test: failed (exit code 3)

        [Build #42](http://kiln.test/builds/42) · [logs](http://kiln.test/builds/42/logs)

        Last lines of test:
        ```
        ok 1
        '''@everyone <!channel>
        assertion failed: 2 == 3
        ```
        ");
    }

    #[test]
    fn console_hostile() {
        #[derive(serde::Serialize)]
        struct Page {
            operator: &'static str,
            command: &'static str,
            builds: Vec<BuildMessage>,
        }
        let page = Page {
            operator: "carol",
            command: "\"><script>",
            builds: vec![hostile()],
        };
        let html = Templates::new()
            .expect("compiles")
            .console(&page)
            .expect("renders");
        let body = html.split("<body>").nth(1).expect("a body");
        insta::assert_snapshot!(body, @r#"

        <h1>Kiln</h1>

        <p>Signed in as carol.
        <form class="inline" method="post" action="/console/logout"><button>Sign out</button></form>
        <a href="/console">Refresh</a></p>
        <form class="command" method="post" action="/console">
        <input name="command" value="&quot;&gt;&lt;script&gt;" placeholder="status acme/api" autofocus aria-label="command">
        <button>Run</button>
        </form>

        <h2>Recent builds</h2>
        <section class="card passed">
        <h3>✅ acme/api on feat/@here_[x](http://evil): build #42 passed</h3>
        <p><code>0d1a26e67d</code> @everyone &lt;!here&gt; **bold** `code` &lt;script&gt;alert(1)&lt;/script&gt; &amp; xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx… (by octocat)</p>
        <ul>
        <li>build: passed</li>
        <li>lint: failed (exit code 1), allowed to fail</li>
        <li>test: failed (exit code 3)</li>
        </ul>
        <p class="error">line 1:
        &gt; quote</p>
        <p><a href="http://kiln.test/builds/42">the build's record</a> · <a href="http://kiln.test/builds/42/logs">its logs</a></p>
        </section>


        </body>
        </html>
        "#);
    }

    #[test]
    fn failure_slack() {
        insta::assert_snapshot!(failure(Dialect::Slack), @"
        <@123> ❌ *acme/api* on master: build #42 *failed*
        `0d1a26e67d` Break it (by octocat)
        • build: passed
        • lint: failed (exit code 1), allowed to fail
        • test: failed (exit code 3)
        Last lines of test:
        ```
        ok 1
        '''@everyone &lt;!channel&gt;
        assertion failed: 2 == 3
        ```
        <http://kiln.test/builds/42|Build #42>
        ");
    }

    fn promotion(status: &str) -> PromotionMessage {
        PromotionMessage {
            id: 3,
            repo: "acme/api".into(),
            branch: "production".into(),
            short_commit: "0d1a26e6".into(),
            rollback: false,
            build_id: 42,
            build_url: "http://kiln.test/builds/42".into(),
            requester: "alice <!here> @everyone".into(),
            approvers: vec!["bob".into()],
            required: 2,
            status: status.into(),
            icon: "⏳",
            detail: None,
            started: None,
        }
    }

    #[test]
    fn promotion_cards() {
        let templates = Templates::new().expect("compiles");
        let render = |dialect, message: &PromotionMessage| {
            shown(templates.promotion(dialect, message).expect("renders"))
        };
        insta::assert_snapshot!(render(Dialect::Slack, &promotion("awaiting approval")), @"
        ⏳ *acme/api*: promotion #3 of `production` to `0d1a26e6` *awaiting approval*
        Build #42 passed; asked for by alice &lt;!here&gt; @everyone; 1 of 2 approval(s): bob
        `approve 3`, or the button below.
        ");
        let mut promoted = promotion("promoted");
        promoted.approvers.push("carol".into());
        promoted.started = Some(43);
        insta::assert_snapshot!(render(Dialect::Discord, &promoted), @r"
        ⏳ **acme/api**: promotion #3 of production to 0d1a26e6 **promoted**
        Build #42 passed; asked for by alice \<!here\> @{ZWSP}everyone; 2 of 2 approval(s): bob, carol
        Build #43 runs production now.
        ");
        let mut rejected = promotion("rejected");
        rejected.detail = Some("`production` moved".into());
        insta::assert_snapshot!(render(Dialect::Forge, &rejected), @r"
        ⏳ **acme/api**: promotion #3 of production to 0d1a26e6 **rejected**
        Build #42 passed; asked for by alice &lt;\!here&gt; @{ZWSP}everyone; 1 of 2 approval(s): bob
        \`production\` moved
        ");
    }
}

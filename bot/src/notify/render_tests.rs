//! Snapshots of every dialect's messages, hostile input included, and of the console.

use super::render::{Dialect, Templates};
use crate::vendors;
use kiln_shared::build::{BuildId, BuildStatus, TaskStatus};
use kiln_shared::view::{BuildMessage, PromotionMessage};
use kiln_shared::view::{FailureExcerpt, TaskLine, log_excerpt};
use kiln_shared::wire::BuildRef;

fn task(name: &str, status: TaskStatus, code: i64, allow_failure: bool) -> TaskLine {
    TaskLine {
        name: name.into(),
        status: status.as_str().into(),
        exit_code: (code != 0).then_some(code),
        allow_failure,
        by_hand: false,
        step: String::new(),
    }
}

fn message(status: BuildStatus, branch: &str, subject: &str, error: Option<&str>) -> BuildMessage {
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
fn failure(dialect: &Dialect) -> String {
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
        Templates::new(vendors::DIALECTS)
            .expect("compiles")
            .failure(dialect, &message)
            .expect("renders"),
    )
}

fn card(dialect: &Dialect, message: &BuildMessage) -> String {
    shown(
        Templates::new(vendors::DIALECTS)
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
    insta::assert_snapshot!(card(&vendors::discord::DIALECT, &message(BuildStatus::Failed, "master", "Fix the parser", None)), @"
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
    insta::assert_snapshot!(card(&vendors::discord::DIALECT, &running), @"
    🔄 **acme/api** on master: build #42 **running**
    0d1a26e67d Fix the parser (by octocat)
    • build: passed
    • lint: running
    • test: waiting
    ");
}

#[test]
fn card_discord_hostile() {
    insta::assert_snapshot!(card(&vendors::discord::DIALECT, &hostile()), @r"
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
    insta::assert_snapshot!(card(&vendors::discord::DIALECT, &message), @r"
    ✅ **acme/api** on master: build #42 **passed**
    0d1a26e67d Ship it (by octocat)
    • build: passed
    • lint: failed (exit code 1), allowed to fail
    • test: failed (exit code 3)
    ❌ security\-scan: 2 known \<!here\> @{ZWSP}everyone vulnerabilities
    ➖ perf: p99 unchanged
    ");
    insta::assert_snapshot!(card(&vendors::slack::DIALECT, &message), @"
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
    insta::assert_snapshot!(card(&vendors::slack::DIALECT, &message(BuildStatus::Failed, "master", "Fix the parser", None)), @"
    ❌ *acme/api* on master: build #42 *failed*
    `0d1a26e67d` Fix the parser (by octocat)
    • build: passed
    • lint: failed (exit code 1), allowed to fail
    • test: failed (exit code 3)
    ");
}

#[test]
fn card_slack_hostile() {
    insta::assert_snapshot!(card(&vendors::slack::DIALECT, &hostile()), @"
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
    insta::assert_snapshot!(failure(&vendors::discord::DIALECT), @"
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
    insta::assert_snapshot!(card(&vendors::commonmark::DIALECT, &hostile()), @r"
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
    insta::assert_snapshot!(failure(&vendors::commonmark::DIALECT), @"
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
        who: serde_json::Value,
        title: &'static str,
        operator: &'static str,
        command: &'static str,
        builds: Vec<serde_json::Value>,
    }
    let page = Page {
        who: serde_json::json!({ "name": "carol\"><script>" }),
        title: "Console",
        operator: "carol",
        command: "\"><script>",
        builds: vec![serde_json::json!({
            "build": hostile(),
            "commands": [{ "label": "Run", "command": "run 42 \"><script>" }],
        })],
    };
    let html = Templates::new(vendors::DIALECTS)
        .expect("compiles")
        .console(&page)
        .expect("renders");
    let body = html.split("<body>").nth(1).expect("a body");
    insta::assert_snapshot!(body, @r#"

    <header class="top">
    <a class="brand" href="/">Kiln</a>
    <nav><a href="/">Builds</a> <a href="/workers">Workers</a> <a href="/console">Console</a></nav>
    <span class="who">carol&quot;&gt;&lt;script&gt;
    <form class="inline" method="post" action="/logout"><button>Sign out</button></form></span>
    </header>
    <main>

    <h1>Console</h1>

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
    <p><a href="http://kiln.test/builds/42">the build's page</a> · <a href="http://kiln.test/builds/42/logs">its logs</a></p>
    <div class="actions"><form class="inline" method="post" action="/console"><input type="hidden" name="command" value="run 42 &quot;&gt;&lt;script&gt;"><button title="run 42 &quot;&gt;&lt;script&gt;">Run</button></form>
    </div>

    </section>



    </main>
    </body>
    </html>
    "#);
}

#[test]
fn failure_slack() {
    insta::assert_snapshot!(failure(&vendors::slack::DIALECT), @"
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
    let templates = Templates::new(vendors::DIALECTS).expect("compiles");
    let render = |dialect, message: &PromotionMessage| {
        shown(templates.promotion(dialect, message).expect("renders"))
    };
    insta::assert_snapshot!(render(&vendors::slack::DIALECT, &promotion("awaiting approval")), @"
    ⏳ *acme/api*: promotion #3 of `production` to `0d1a26e6` *awaiting approval*
    Build #42 passed; asked for by alice &lt;!here&gt; @everyone; 1 of 2 approval(s): bob
    `approve 3`, or the button below.
    ");
    let mut promoted = promotion("promoted");
    promoted.approvers.push("carol".into());
    promoted.started = Some(43);
    insta::assert_snapshot!(render(&vendors::discord::DIALECT, &promoted), @r"
    ⏳ **acme/api**: promotion #3 of production to 0d1a26e6 **promoted**
    Build #42 passed; asked for by alice \<!here\> @{ZWSP}everyone; 2 of 2 approval(s): bob, carol
    Build #43 runs production now.
    ");
    let mut rejected = promotion("rejected");
    rejected.detail = Some("`production` moved".into());
    insta::assert_snapshot!(render(&vendors::commonmark::DIALECT, &rejected), @r"
    ⏳ **acme/api**: promotion #3 of production to 0d1a26e6 **rejected**
    Build #42 passed; asked for by alice &lt;\!here&gt; @{ZWSP}everyone; 1 of 2 approval(s): bob
    \`production\` moved
    ");
}

/// A tag's build, started with a note and variables, one of which tries to mention and
/// format: each dialect says it is a tag, and escapes the variables as user text.
fn tagged() -> BuildMessage {
    let mut message = message(BuildStatus::Passed, "v1.2.0", "Release", None);
    message.tag = true;
    message.note = Some("found by reconciliation".into());
    message.vars = vec!["DEPLOY_TO=eu-west".into(), "WHY=@everyone **now**".into()];
    message.tasks.truncate(1);
    message
}

#[test]
fn card_of_a_tag_with_a_note_and_variables() {
    insta::assert_snapshot!(card(&vendors::discord::DIALECT, &tagged()), @r"
    ✅ **acme/api** at tag v1.2.0: build #42 **passed**
    0d1a26e67d Release (by octocat)
    found by reconciliation
    with DEPLOY\_TO=eu\-west, WHY=@{ZWSP}everyone \*\*now\*\*
    • build: passed
    ");
    insta::assert_snapshot!(card(&vendors::slack::DIALECT, &tagged()), @"
    ✅ *acme/api* at tag v1.2.0: build #42 *passed*
    `0d1a26e67d` Release (by octocat)
    found by reconciliation
    with DEPLOY_TO=eu-west, WHY=@everyone **now**
    • build: passed
    ");
    insta::assert_snapshot!(card(&vendors::zulip::DIALECT, &tagged()), @r"
    ✅ **acme/api** at tag v1.2.0: build #42 **passed**
    `0d1a26e67d` Release (by octocat)
    found by reconciliation
    with DEPLOY\_TO=eu\-west, WHY=@{ZWSP}everyone \*\*now\*\*
    * build: passed

    [Build #42](http://kiln.test/builds/42) · [logs](http://kiln.test/builds/42/logs) · `logs 42` · `retry 42`
    ");
}

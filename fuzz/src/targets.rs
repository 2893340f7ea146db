//! The fuzz targets: every parser that reads input from outside Kiln, each fed bytes as its
//! door receives them. A target fails by panicking; an `Err` is the parser doing its job.
//!
//! Seeds are real inputs: the vendors' payloads in `tests/fixtures` (see its SOURCES.md),
//! the README's pipeline, chat commands as people type them.

use kiln_bot::vendors::discord::interactions::Interaction;
use kiln_bot::vendors::github::{payload as github, signature as github_signature};
use kiln_bot::vendors::gitlab::payload as gitlab;
use kiln_bot::vendors::slack::{forms, signature as slack_signature};
use kiln_bot::vendors::zulip::door::ZulipCommand;
use kiln_shared::build::{BuildId, BuildStatus, TaskStatus};
use kiln_shared::plan::Plan;
use kiln_shared::spec::Trigger;
use kiln_shared::trigger::TriggerKind;
use kiln_shared::view::{BuildMessage, FailureExcerpt, TaskLine, log_excerpt};
use kiln_shared::wire::{self, BuildRef, CommentRequested, Event, JobRequested, PushHeld};

/// One parser under fuzzing.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    /// Real inputs mutations start from.
    pub seeds: &'static [&'static [u8]],
    /// Tokens of the input's language, spliced in by mutations.
    pub tokens: &'static [&'static str],
    /// Feeds it one input; panics on a bug.
    pub run: fn(&[u8]),
}

const JSON_TOKENS: &[&str] = &[
    "null",
    "true",
    "false",
    "0",
    "-1",
    "1e999",
    "-0",
    "18446744073709551616",
    "\"\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "[]",
    "{}",
    "[[[[[[[[",
    "{\"a\":",
    ",",
    ":",
    "\"ref\"",
    "\"refs/heads/\"",
    "\"refs/tags/\"",
    "\"after\"",
    "\"deleted\"",
    "\"commits\"",
    "\"repository\"",
    "\"full_name\"",
    "\"action\"",
    "\"comment\"",
    "\"body\"",
    "\"/kiln ",
];

const YAML_TOKENS: &[&str] = &[
    "steps:",
    "stages:",
    "images:",
    "needs:",
    "when:",
    "run:",
    "image:",
    "platforms:",
    "shards:",
    "services:",
    "timeout:",
    "retry:",
    "artifacts:",
    "cache:",
    "runner: shell",
    "environment:",
    "on_stop:",
    "capabilities:",
    "read_only:",
    "network: egress",
    "matrix:",
    "&a ",
    "*a",
    "<<: *a",
    "!!str ",
    "!!binary ",
    "? ",
    "- ",
    ": ",
    "[",
    "]",
    "{",
    "}",
    "|",
    ">",
    "#",
    "'",
    "\"",
    "\n  ",
    "\n",
    "~",
    "0x10",
    "1e9",
    "99999999999999999999",
    "24h",
    "linux/amd64",
    "windows/amd64",
    "{{ branch }}",
    "{{",
    "}}",
    "**",
    "*",
];

const COMMAND_TOKENS: &[&str] = &[
    "build ",
    "status ",
    "logs ",
    "retry ",
    "cancel ",
    "promote ",
    "approve ",
    "env ",
    "request ",
    "release ",
    "extend ",
    "subscribe ",
    "unsubscribe ",
    "workers",
    "help",
    "acme/api ",
    "master ",
    "--lines ",
    "--failed",
    "for ",
    "2h ",
    "0 ",
    "-1 ",
    "99999999999999999999 ",
    "/kiln ",
    "kiln ",
    "\u{200b}",
    "\t",
];

const FORM_TOKENS: &[&str] = &[
    "&",
    "=",
    "%",
    "%ZZ",
    "%00",
    "+",
    "command=%2Fkiln",
    "text=",
    "user_id=",
    "payload=",
    "response_url=",
    "team_id=",
    "channel_id=",
    "%7B",
    "%7D",
    "%22",
];

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "spec",
        seeds: &[
            include_bytes!("../seeds/spec/readme.yml"),
            include_bytes!("../seeds/spec/small.yml"),
        ],
        tokens: YAML_TOKENS,
        run: spec,
    },
    Target {
        name: "command",
        seeds: &[
            b"build acme/api master",
            b"/kiln logs 12 test --lines 40",
            b"retry 7 --failed",
            b"promote acme/api 0d1a26e",
            b"env request device-lab for 2h",
            b"subscribe acme/api failed",
            b"status acme/api release/1.2",
        ],
        tokens: COMMAND_TOKENS,
        run: command,
    },
    Target {
        name: "github_payload",
        seeds: &[
            include_bytes!("../../tests/fixtures/github-push.json"),
            include_bytes!("../../tests/fixtures/github-push-tag.json"),
            include_bytes!("../../tests/fixtures/github-push-branch-delete.json"),
            include_bytes!("../../tests/fixtures/github-push-tag-delete.json"),
            include_bytes!("../../tests/fixtures/github-ping.json"),
            include_bytes!("../../tests/fixtures/github-issue_comment-created-on-pr.json"),
            include_bytes!("../../tests/fixtures/github-issue_comment-created-on-issue.json"),
            include_bytes!("../../tests/fixtures/github-pull_request-closed.json"),
        ],
        tokens: JSON_TOKENS,
        run: github_payload,
    },
    Target {
        name: "gitlab_payload",
        seeds: &[
            include_bytes!("../../tests/fixtures/gitlab-push.json"),
            include_bytes!("../../tests/fixtures/gitlab-push-capture.json"),
            include_bytes!("../../tests/fixtures/gitlab-push-branch-delete-capture.json"),
            include_bytes!("../../tests/fixtures/gitlab-tag_push.json"),
            include_bytes!("../../tests/fixtures/gitlab-merge_request.json"),
            include_bytes!("../../tests/fixtures/gitlab-merge_request-merge-capture.json"),
            include_bytes!("../../tests/fixtures/gitlab-note-merge_request.json"),
        ],
        tokens: JSON_TOKENS,
        run: gitlab_payload,
    },
    Target {
        name: "signatures",
        seeds: &[
            b"sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17\0Hello, World!",
            b"v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503\x001531420618\0token=x&text=build",
        ],
        tokens: &["sha256=", "v0=", "\0", "0", "ff", "1531420618"],
        run: signatures,
    },
    Target {
        name: "slack_form",
        seeds: &[
            include_bytes!("../../tests/fixtures/slack-slash-command.txt"),
            include_bytes!("../seeds/slack/action.txt"),
        ],
        tokens: FORM_TOKENS,
        run: slack_form,
    },
    Target {
        name: "discord_interaction",
        seeds: &[
            include_bytes!("../../tests/fixtures/discord-interaction-command.json"),
            include_bytes!("../../tests/fixtures/discord-interaction-ping.json"),
        ],
        tokens: JSON_TOKENS,
        run: discord_interaction,
    },
    Target {
        name: "zulip_outgoing",
        seeds: &[include_bytes!("../../tests/fixtures/zulip-outgoing-webhook.json")],
        tokens: JSON_TOKENS,
        run: zulip_outgoing,
    },
    Target {
        name: "wire",
        seeds: &[
            include_bytes!("../seeds/wire/task_finished.json"),
            include_bytes!("../seeds/wire/job.json"),
            include_bytes!("../seeds/wire/comment.json"),
            include_bytes!("../seeds/wire/push_held.json"),
        ],
        tokens: JSON_TOKENS,
        run: wire_messages,
    },
    Target {
        name: "templates",
        seeds: &[
            b"master\0Fix the build\0octocat\0\0test\0ok 1\nassertion failed\n",
            b"release/*\0```@everyone <!channel> **bold**\0Mona <m@x>\0no \"docker\"\0a`b\0\x1b[31mred\x1b[0m",
        ],
        tokens: &["\0", "@everyone", "<!channel>", "<@123>", "```", "**", "_", "~", "|", "\n", "{{", "{%", "\u{202e}"],
        run: templates,
    },
];

fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// `.kiln.yml`: parsed and planned for a push and a tag, as a build would.
fn spec(data: &[u8]) {
    let text = text(data);
    for kind in [TriggerKind::Push, TriggerKind::Tag] {
        let trigger = Trigger {
            branch: "master",
            kind,
            changed_paths: Some(&[]),
            vars: &kiln_shared::vars::NONE,
        };
        let _ = Plan::from_spec_text(&text, &trigger);
    }
}

/// A chat command as someone typed it.
fn command(data: &[u8]) {
    let _ = kiln_shared::command::parse(&text(data));
}

/// A GitHub delivery's body, under each event Kiln reads.
fn github_payload(data: &[u8]) {
    for event in ["push", "issue_comment", "pull_request", "ping", "create"] {
        let _ = github::translate(event, data);
    }
}

/// A GitLab delivery's body, under each event Kiln reads.
fn gitlab_payload(data: &[u8]) {
    for event in [
        "Push Hook",
        "Tag Push Hook",
        "Note Hook",
        "Merge Request Hook",
        "Job Hook",
    ] {
        let _ = gitlab::translate(event, data);
    }
}

/// GitHub's, GitLab's and Slack's checks of a request's signature or token, on headers and
/// bodies split out of the input at NUL bytes.
fn signatures(data: &[u8]) {
    let mut parts = data.splitn(3, |b| *b == 0);
    let header = text(parts.next().unwrap_or_default()).into_owned();
    let second = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let secret = b"It's a Secret to Everybody";
    let _ = github_signature::verify_signature(secret, second, &header);
    let _ = gitlab::verify_token(secret, &header);
    let timestamp = text(second);
    let _ = slack_signature::verify(secret, &timestamp, body, &header, 1_531_420_618);
    let _ = slack_signature::verify(secret, &timestamp, body, &header, u64::MAX);
}

/// A form Slack posts: a slash command and a button's click.
fn slack_form(data: &[u8]) {
    if let Ok(command) = forms::slash_command(data) {
        let _ = kiln_shared::command::parse(&command.text);
    }
    if let Ok(click) = forms::block_actions(data) {
        for action in &click.actions {
            let _ = kiln_shared::command::parse(action.value.as_deref().unwrap_or_default());
        }
    }
}

/// A Discord interaction's body, and what Kiln reads of it.
fn discord_interaction(data: &[u8]) {
    if let Ok(interaction) = serde_json::from_slice::<Interaction>(data) {
        if let Some(command) = interaction.command_text() {
            let _ = kiln_shared::command::parse(&command);
        }
        let _ = interaction.roles();
        let _ = interaction.user();
    }
}

/// A Zulip outgoing webhook's body.
fn zulip_outgoing(data: &[u8]) {
    if let Ok((_, command)) = ZulipCommand::read(data) {
        let _ = kiln_shared::command::parse(&command.text);
    }
}

/// Messages from the broker, which a worker's credentials may publish.
fn wire_messages(data: &[u8]) {
    let _ = wire::decode::<Event>(data);
    let _ = wire::decode::<JobRequested>(data);
    let _ = wire::decode::<PushHeld>(data);
    let _ = wire::decode::<CommentRequested>(data);
    let _ = wire::decode_work(data);
}

/// A card and a failure notification in every chat dialect, from a commit's branch,
/// subject and author, an error, a task's name and its log, split out of the input at NUL
/// bytes: none of them may break a template.
fn templates(data: &[u8]) {
    let text = text(data);
    let mut fields = text.split('\0');
    let mut next = || fields.next().unwrap_or_default().to_owned();
    let (branch, subject, author, error, task) = (next(), next(), next(), next(), next());
    let log: Vec<String> = next().lines().map(str::to_owned).collect();
    let build = BuildRef {
        id: BuildId(7),
        repo: "acme/api".into(),
        branch: branch.as_str().into(),
        commit: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c".into(),
    };
    let tasks = vec![TaskLine {
        name: task.clone(),
        status: TaskStatus::Failed.as_str().into(),
        exit_code: Some(1),
        allow_failure: false,
        by_hand: false,
        step: String::new(),
    }];
    let error = (!error.is_empty()).then_some(error);
    let mut message = BuildMessage::new(
        &build,
        BuildStatus::Failed,
        &author,
        &subject,
        tasks,
        error,
        "http://kiln.test/",
    );
    message.failure = Some(FailureExcerpt {
        task,
        lines: log_excerpt(&log, 15, 900),
    });
    let templates = templates_once();
    for dialect in kiln_bot::vendors::DIALECTS {
        templates
            .card(dialect, &message)
            .expect("every card renders");
        templates
            .failure(dialect, &message)
            .expect("every failure renders");
    }
}

/// The templates, compiled once per process.
fn templates_once() -> &'static kiln_bot::notify::render::Templates {
    static TEMPLATES: std::sync::OnceLock<kiln_bot::notify::render::Templates> =
        std::sync::OnceLock::new();
    TEMPLATES.get_or_init(|| {
        kiln_bot::notify::render::Templates::new(kiln_bot::vendors::DIALECTS)
            .expect("the templates compile")
    })
}

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeds are real inputs: each is taken by its parser, so mutations start deep.
    #[test]
    fn the_seeds_parse() {
        for seed in target("wire").expect("wire").seeds {
            let text = String::from_utf8_lossy(seed);
            let ok = wire::decode::<Event>(seed).is_ok()
                || wire::decode_work(seed).is_ok()
                || wire::decode::<CommentRequested>(seed).is_ok()
                || wire::decode::<PushHeld>(seed).is_ok();
            assert!(ok, "{text}");
        }
        for seed in target("spec").expect("spec").seeds {
            let text = String::from_utf8_lossy(seed);
            let trigger = Trigger {
                branch: "master",
                kind: TriggerKind::Push,
                changed_paths: None,
                vars: &kiln_shared::vars::NONE,
            };
            Plan::from_spec_text(&text, &trigger).expect("the seed plans");
        }
        for seed in target("command").expect("command").seeds {
            let text = String::from_utf8_lossy(seed);
            kiln_shared::command::parse(&text).expect("the seed parses");
        }
        for seed in target("slack_form").expect("slack").seeds {
            assert!(forms::slash_command(seed).is_ok() || forms::block_actions(seed).is_ok());
        }
        for seed in target("github_payload").expect("github").seeds {
            assert!(serde_json::from_slice::<serde_json::Value>(seed).is_ok());
        }
        for seed in target("templates").expect("templates").seeds {
            templates(seed);
        }
    }

    #[test]
    fn target_names_are_unique() {
        let mut names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TARGETS.len());
    }
}

//! The answer to a command: what came of it, and the text for the person who gave it.

use kiln_shared::build::BuildId;
use serde::Serialize;

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

impl Outcome {
    /// How the audit stream names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Invalid => "invalid",
            Self::Refused => "refused",
            Self::Failed => "failed",
        }
    }
}

/// The answer to a command, as text for the person who gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reply {
    pub outcome: Outcome,
    pub text: String,
    /// The build the command started, if it started one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<BuildId>,
}

impl Reply {
    pub fn done(text: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Done,
            text: text.into(),
            started: None,
        }
    }

    /// Carried out: build `id` started.
    pub fn started(id: BuildId, text: impl Into<String>) -> Self {
        Self {
            started: Some(id),
            ..Self::done(text)
        }
    }

    pub fn invalid(text: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Invalid,
            text: text.into(),
            started: None,
        }
    }

    pub fn refused(text: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Refused,
            text: text.into(),
            started: None,
        }
    }

    pub fn failed(text: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Failed,
            text: text.into(),
            started: None,
        }
    }
}

/// Kiln could not carry a command out: a service it needs did not answer.
pub fn could_not(error: &anyhow::Error) -> Reply {
    Reply::failed(format!("Kiln could not do that just now: {error:#}"))
}

/// A command named a build that does not exist.
pub fn no_such_build(build: BuildId) -> Reply {
    Reply::invalid(format!("There is no build #{build}."))
}

/// A command named a repository Kiln does not build.
pub fn not_built(repo: &str) -> Reply {
    Reply::invalid(format!("Kiln does not build {repo}."))
}

/// Why `name` (known to permissions as `id`) may not lease environments.
pub fn may_not_lease(name: &str, id: &str) -> String {
    format!(
        "{name} may not lease environments; a `[[permission]]` in Kiln's configuration must \
         give `{id}` the command `env`."
    )
}

/// Why `name` (known to permissions as `id`) may not give `command` on `repo`; a forge's
/// user may also be given it by push access.
pub fn may_not(name: &str, id: &str, command: &str, repo: &str, forge_user: bool) -> String {
    format!(
        "{name} may not `{command}` on {repo}; {}a `[[permission]]` in Kiln's configuration \
         must name `{id}`.",
        if forge_user {
            "they need push access to it, or "
        } else {
            ""
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_what_would_allow_it() {
        insta::assert_snapshot!(
            may_not("ada", "discord:42", "build", "acme/app", false),
            @"ada may not `build` on acme/app; a `[[permission]]` in Kiln's configuration must name `discord:42`."
        );
        insta::assert_snapshot!(
            may_not("`@everyone`", "github:mallory", "promote", "acme/app", true),
            @"`@everyone` may not `promote` on acme/app; they need push access to it, or a `[[permission]]` in Kiln's configuration must name `github:mallory`."
        );
        insta::assert_snapshot!(
            may_not_lease("ada", "slack:U1"),
            @"ada may not lease environments; a `[[permission]]` in Kiln's configuration must give `slack:U1` the command `env`."
        );
    }

    #[test]
    fn a_failure_and_a_missing_build_say_so() {
        let error = anyhow::anyhow!("Redis is away").context("cannot read build #7");
        insta::assert_snapshot!(could_not(&error).text, @"Kiln could not do that just now: cannot read build #7: Redis is away");
        assert_eq!(could_not(&error).outcome, Outcome::Failed);
        insta::assert_snapshot!(no_such_build(BuildId(9)).text, @"There is no build #9.");
        insta::assert_snapshot!(not_built("acme/<script>").text, @"Kiln does not build acme/<script>.");
    }
}

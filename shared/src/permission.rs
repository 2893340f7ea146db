//! Who may give a command: what each command needs of the person who gives it. Pure; the
//! bot looks up a build's repository and the configured `[[permission]]`s.

use crate::build::BuildId;
use crate::command::{Command, Env};

/// What a command needs of the person who gives it, operators aside (they may do anything).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Anyone who can reach Kiln: the command changes nothing, or has its own gate
    /// (`approve` is checked against the repository's approvers, which bind operators too).
    Open,
    /// A permission that names `env`, on any repository: environments belong to none.
    Environments,
    /// A permission for the command on this repository, or push access to it.
    Repository(&'a str),
    /// As [`Scope::Repository`], on the repository of this build.
    Build(BuildId),
}

/// Commands anyone who can reach Kiln may give: they change nothing.
pub const OPEN_COMMANDS: [&str; 6] = [
    "help",
    "status",
    "logs",
    "subscriptions",
    "workers",
    "queue",
];

/// What `command` needs of the person who gives it.
pub fn scope(command: &Command) -> Scope<'_> {
    match command {
        Command::Approve { .. } | Command::Env(Env::List) => Scope::Open,
        c if OPEN_COMMANDS.contains(&c.name()) => Scope::Open,
        Command::Env(_) => Scope::Environments,
        Command::Cancel { build } | Command::Retry { build, .. } | Command::Run { build, .. } => {
            Scope::Build(*build)
        }
        other => Scope::Repository(other.repo().map_or("", |repo| repo.as_str())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::parse;

    #[track_caller]
    fn check(text: &str, expect: Scope<'_>) {
        let command = parse(text).expect("a command");
        assert_eq!(scope(&command), expect, "{text}");
    }

    #[test]
    fn each_command_has_its_scope() {
        check("help", Scope::Open);
        check("status acme/app", Scope::Open);
        check("logs 7", Scope::Open);
        check("subscriptions", Scope::Open);
        check("workers", Scope::Open);
        check("queue", Scope::Open);
        check("approve 3", Scope::Open);
        check("env list", Scope::Open);
        check("env request lab", Scope::Environments);
        check("env release 4", Scope::Environments);
        check("cancel 12", Scope::Build(BuildId(12)));
        check("retry 12 --failed", Scope::Build(BuildId(12)));
        check("build acme/app", Scope::Repository("acme/app"));
        check("subscribe acme/app@main", Scope::Repository("acme/app"));
        check("unsubscribe acme/app", Scope::Repository("acme/app"));
        check("promote acme/app", Scope::Repository("acme/app"));
    }
}

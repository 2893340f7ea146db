//! The one command grammar of every front end (Discord, Slack, the web console, PR comments):
//! text in, a typed [`Command`] out, or a [`CommandError`] that says what was wrong and, for a
//! misspelt command, which one was meant.
//!
//! ```text
//! build <owner/repo> [branch | commit]     status [owner/repo] [branch]
//! logs <build> [task] [--lines N]          cancel <build>
//! retry <build> [--failed]                 help [command]
//! subscribe <owner/repo>[@branch or pattern] [passed|failed|errored|cancelled|requested …]
//! unsubscribe <owner/repo>[@branch]        subscriptions      workers      queue
//! promote <owner/repo> [commit] [--rollback]                    approve <promotion>
//! env request <pool> [branch] [for 2h]     env list    env extend <lease> [1h]
//! env release <lease>
//! ```
//!
//! A leading `/`, and a leading `kiln` (as in a PR comment, `/kiln build …`), are optional. A
//! build is written `12` or `#12`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::build::BuildId;
use crate::ident::{BranchName, CommitId, RepoName};
use crate::lease::LeaseId;
use crate::pattern::is_branch_pattern;
use crate::priority::Priority;
use crate::promotion::PromotionId;

/// Every command, its usage and what it does: the source of `help` and of suggestions.
pub const COMMANDS: [(&str, &str, &str); 16] = [
    (
        "build",
        "build <owner/repo> [branch | commit] [KEY=VALUE …] [--priority high|normal]",
        "builds a branch (default `master`) or a commit, with variables its tasks see; a \
         high-priority build's tasks start before those of builds already waiting",
    ),
    (
        "status",
        "status [owner/repo] [branch]",
        "shows the latest builds, of a repository or a branch",
    ),
    (
        "logs",
        "logs <build> [task] [--lines N]",
        "shows the last lines of a build's log, or of one task's",
    ),
    ("cancel", "cancel <build>", "stops a build and its tasks"),
    (
        "retry",
        "retry <build> [task] [--failed]",
        "builds the same commit again; with a task, only it and what needs it; with \
         --failed, only what failed",
    ),
    (
        "run",
        "run <build> <step>",
        "runs a step run by hand (`when: { manual: true }`), in a new build",
    ),
    (
        OK_TO_TEST,
        "ok-to-test <owner/repo> <request> [head]",
        "builds a pull or merge request's head, a fork's too (without secrets)",
    ),
    (
        "subscribe",
        "subscribe <owner/repo>[@branch] [events…]",
        "sends a repository's build events to this channel",
    ),
    (
        "unsubscribe",
        "unsubscribe <owner/repo>[@branch]",
        "stops sending them",
    ),
    (
        "subscriptions",
        "subscriptions",
        "lists this channel's subscriptions",
    ),
    (
        "promote",
        "promote <owner/repo> [commit] [--rollback]",
        "fast-forwards `production` to the newest passed commit of `master` (or the one \
         named), once approved; with --rollback, back to the commit promoted before",
    ),
    (
        "approve",
        "approve <promotion>",
        "approves someone else's promotion",
    ),
    (
        "env",
        "env request <pool> [branch] [for 2h] | list | extend <lease> [1h] | release <lease>",
        "leases a test environment from a pool, lists leases, extends or releases one",
    ),
    ("workers", "workers", "lists the workers and what they run"),
    ("queue", "queue", "shows the jobs waiting, per platform"),
    ("help", "help [command]", "explains the commands"),
];

/// The build events a subscription may ask for.
pub const SUBSCRIBABLE_EVENTS: [&str; 5] =
    ["requested", "passed", "failed", "errored", "cancelled"];

/// The most lines `logs --lines` shows: chat messages are short.
pub const MAX_LOG_LINES: u32 = 500;

/// What a build command builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Branch(BranchName),
    /// A commit id, 7 to 40 hexadecimal digits.
    Commit(CommitId),
}

/// A command, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Build {
        repo: RepoName,
        target: Target,
        /// `KEY=VALUE` words: variables its tasks see.
        vars: BTreeMap<String, String>,
        /// `--priority`: the repository's default for the branch when not given.
        priority: Option<Priority>,
    },
    Status {
        repo: Option<RepoName>,
        branch: Option<BranchName>,
    },
    Logs {
        build: BuildId,
        task: Option<String>,
        lines: Option<u32>,
    },
    Cancel {
        build: BuildId,
    },
    Retry {
        build: BuildId,
        failed_only: bool,
        /// Only this task (or step) and what needs it; the rest as it passed.
        task: Option<String>,
    },
    /// A step run by hand, run in a new build that takes the rest as it passed.
    Run {
        build: BuildId,
        step: String,
    },
    /// A pull (merge) request's head built on this word: a fork's waits for it.
    OkToTest {
        repo: RepoName,
        number: u64,
        /// The head looked at (a commit id or its prefix): nothing is built if the head
        /// has moved since.
        head: Option<String>,
    },
    Subscribe {
        repo: RepoName,
        branch: Option<String>,
        /// Empty: every event.
        events: Vec<String>,
    },
    Unsubscribe {
        repo: RepoName,
        branch: Option<String>,
    },
    Subscriptions,
    Promote {
        repo: RepoName,
        /// A commit id or its prefix; the newest that may be promoted when absent.
        commit: Option<CommitId>,
        rollback: bool,
    },
    Approve {
        promotion: PromotionId,
    },
    Env(Env),
    Workers,
    Queue,
    Help {
        command: Option<String>,
    },
}

impl Command {
    /// The command's name, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Build { .. } => "build",
            Self::Status { .. } => "status",
            Self::Logs { .. } => "logs",
            Self::Cancel { .. } => "cancel",
            Self::Retry { .. } => "retry",
            Self::Run { .. } => "run",
            Self::OkToTest { .. } => OK_TO_TEST,
            Self::Subscribe { .. } => "subscribe",
            Self::Unsubscribe { .. } => "unsubscribe",
            Self::Subscriptions => "subscriptions",
            Self::Promote { .. } => "promote",
            Self::Approve { .. } => "approve",
            Self::Env(_) => "env",
            Self::Workers => "workers",
            Self::Queue => "queue",
            Self::Help { .. } => "help",
        }
    }

    /// The repository the command acts on, if it names one: what permissions are checked
    /// against.
    pub fn repo(&self) -> Option<&RepoName> {
        match self {
            Self::Build { repo, .. }
            | Self::OkToTest { repo, .. }
            | Self::Subscribe { repo, .. }
            | Self::Unsubscribe { repo, .. }
            | Self::Promote { repo, .. } => Some(repo),
            Self::Status { repo, .. } => repo.as_ref(),
            _ => None,
        }
    }
}

/// What `env` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Env {
    Request {
        pool: String,
        /// The branch whose image a `docker` pool starts; its default when absent.
        branch: Option<BranchName>,
        /// The pool's default when absent.
        length: Option<Duration>,
    },
    List,
    Extend {
        lease: LeaseId,
        by: Duration,
    },
    Release {
        lease: LeaseId,
    },
}

/// How much `env extend` adds unless told.
pub const DEFAULT_EXTENSION: Duration = Duration::from_secs(60 * 60);

/// The word that has a pull (merge) request's head built: a fork's waits for it.
pub const OK_TO_TEST: &str = "ok-to-test";

/// Why a text is not a command; the message is for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError(pub String);

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CommandError {}

/// Parses a command as someone typed it.
pub fn parse(text: &str) -> Result<Command, CommandError> {
    let mut words: Vec<&str> = text.split_whitespace().collect();
    if let Some(first) = words.first_mut() {
        *first = first.strip_prefix('/').unwrap_or(first);
    }
    if words
        .first()
        .is_some_and(|w| w.eq_ignore_ascii_case("kiln"))
    {
        words.remove(0);
    }
    let Some((&name, args)) = words.split_first() else {
        return Err(CommandError(
            "no command given; try `help` for the list".into(),
        ));
    };
    let name = name.to_ascii_lowercase();
    let mut args = Args::new(&name, args);
    let command = match name.as_str() {
        "build" => {
            let priority = args.option_value("--priority")?;
            let priority = priority
                .map(|word| {
                    Priority::parse(word).ok_or_else(|| {
                        args.usage_error(&format!("`{word}` is not a priority (high or normal)"))
                    })
                })
                .transpose()?;
            let repo = args.repo()?;
            let vars = args.assignments()?;
            let target = match args.optional() {
                None => Target::Branch("master".into()),
                Some(word) if is_commit(word) => Target::Commit(word.to_ascii_lowercase().into()),
                Some(word) => Target::Branch(branch(word)?),
            };
            Command::Build {
                repo,
                target,
                vars,
                priority,
            }
        }
        "status" => {
            let repo = args.optional().map(checked_repo).transpose()?;
            let branch = args.optional().map(branch).transpose()?;
            Command::Status { repo, branch }
        }
        "logs" => {
            let lines = args.option_value("--lines")?;
            let lines = lines
                .map(|n| match n.parse::<u32>() {
                    Ok(n) if (1..=MAX_LOG_LINES).contains(&n) => Ok(n),
                    _ => Err(CommandError(format!(
                        "`--lines` takes a number from 1 to {MAX_LOG_LINES}, not `{n}`"
                    ))),
                })
                .transpose()?;
            let build = args.build()?;
            let task = args.optional().map(str::to_owned);
            Command::Logs { build, task, lines }
        }
        "cancel" => Command::Cancel {
            build: args.build()?,
        },
        "retry" => {
            let failed_only = args.flag("--failed");
            let build = args.build()?;
            let task = args.optional().map(str::to_owned);
            if failed_only && task.is_some() {
                return Err(args.usage_error("a task or `--failed`, not both"));
            }
            Command::Retry {
                build,
                failed_only,
                task,
            }
        }
        OK_TO_TEST => {
            let repo = args.repo()?;
            let word = args.required("a request's number")?;
            let number = word.trim_start_matches(['#', '!']).parse::<u64>().ok();
            let Some(number) = number.filter(|n| *n > 0) else {
                return Err(args.usage_error(&format!("`{word}` is not a request's number")));
            };
            let head = args.optional().map(str::to_ascii_lowercase);
            if head.as_deref().is_some_and(|h| !is_commit(h)) {
                return Err(args.usage_error("the head is a commit id of 7 to 40 hex digits"));
            }
            Command::OkToTest { repo, number, head }
        }
        "run" => Command::Run {
            build: args.build()?,
            step: args.required("a step")?.to_owned(),
        },
        "subscribe" => {
            let (repo, branch) = args.repo_and_branch()?;
            let mut events = Vec::new();
            while let Some(event) = args.optional() {
                let event = event.to_ascii_lowercase();
                if !SUBSCRIBABLE_EVENTS.contains(&event.as_str()) {
                    return Err(CommandError(format!(
                        "`{event}` is not an event; choose from {}",
                        SUBSCRIBABLE_EVENTS.join(", ")
                    )));
                }
                if !events.contains(&event) {
                    events.push(event);
                }
            }
            Command::Subscribe {
                repo,
                branch,
                events,
            }
        }
        "unsubscribe" => {
            let (repo, branch) = args.repo_and_branch()?;
            Command::Unsubscribe { repo, branch }
        }
        "subscriptions" => Command::Subscriptions,
        "promote" => {
            let rollback = args.flag("--rollback");
            let repo = args.repo()?;
            let commit = match args.optional() {
                None => None,
                Some(_) if rollback => {
                    return Err(args.usage_error(
                        "`--rollback` goes to the commit promoted before; it takes no commit",
                    ));
                }
                Some(word) if is_commit(word) => Some(word.to_ascii_lowercase().into()),
                Some(word) => {
                    return Err(args.usage_error(&format!(
                        "`{}` is not a commit id (7 to 40 hexadecimal digits)",
                        word.chars().take(40).collect::<String>()
                    )));
                }
            };
            Command::Promote {
                repo,
                commit,
                rollback,
            }
        }
        "env" => Command::Env(env(&mut args)?),
        "approve" => {
            let word = args.required("a promotion number")?;
            let promotion = word
                .trim_start_matches('#')
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .map(PromotionId)
                .ok_or_else(|| args.usage_error(&format!("`{word}` is not a promotion number")))?;
            Command::Approve { promotion }
        }
        "workers" => Command::Workers,
        "queue" => Command::Queue,
        "help" => {
            let command = args
                .optional()
                .map(|c| c.trim_start_matches('/').to_ascii_lowercase());
            Command::Help { command }
        }
        unknown => return Err(unknown_command(unknown)),
    };
    args.done()?;
    Ok(command)
}

/// `env …`, after its name.
fn env(args: &mut Args<'_>) -> Result<Env, CommandError> {
    let verb = args.required("`request`, `list`, `extend` or `release`")?;
    Ok(match verb.to_ascii_lowercase().as_str() {
        "request" => {
            let pool = args.required("a pool")?;
            if !is_name(pool) {
                return Err(args.usage_error(&format!("`{pool}` is not a pool's name")));
            }
            let mut branch_word = None;
            let mut length = None;
            while let Some(word) = args.optional() {
                if word.eq_ignore_ascii_case("for") {
                    let text = args.required("a length after `for`, e.g. `for 2h`")?;
                    length = Some(duration(args, text)?);
                } else if branch_word.is_none() && length.is_none() {
                    branch_word = Some(branch(word)?);
                } else {
                    return Err(args.usage_error(&format!("`{word}` is one word too many")));
                }
            }
            Env::Request {
                pool: pool.to_owned(),
                branch: branch_word,
                length,
            }
        }
        "list" => Env::List,
        "extend" => {
            let lease = lease(args)?;
            let by = match args.optional() {
                Some(text) => duration(args, text)?,
                None => DEFAULT_EXTENSION,
            };
            Env::Extend { lease, by }
        }
        "release" => Env::Release {
            lease: lease(args)?,
        },
        other => {
            let shown: String = other.chars().take(40).collect();
            return Err(args.usage_error(&format!("`env {shown}` is not something env does")));
        }
    })
}

fn lease(args: &mut Args<'_>) -> Result<LeaseId, CommandError> {
    let word = args.required("a lease number")?;
    word.trim_start_matches('#')
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .map(LeaseId)
        .ok_or_else(|| args.usage_error(&format!("`{word}` is not a lease number")))
}

/// A length such as `2h`, `90m` or `1h30m`: at least a second.
fn duration(args: &Args<'_>, text: &str) -> Result<Duration, CommandError> {
    humantime::parse_duration(text)
        .ok()
        .filter(|d| *d >= Duration::from_secs(1))
        .ok_or_else(|| {
            let shown: String = text.chars().take(40).collect();
            args.usage_error(&format!("`{shown}` is not a length such as `2h` or `30m`"))
        })
}

/// A pool's name: letters, digits, `-`, `_` and `.`.
pub fn is_name(word: &str) -> bool {
    !word.is_empty()
        && word.len() <= 64
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// The usage line and summary of `name`, if it is a command.
pub fn usage(name: &str) -> Option<(&'static str, &'static str)> {
    COMMANDS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, usage, summary)| (*usage, *summary))
}

fn unknown_command(word: &str) -> CommandError {
    let names = COMMANDS.iter().map(|(name, _, _)| *name);
    // A command it begins (`sub`), else the nearest by edits (`canel`), if near enough.
    let meant = names
        .clone()
        .find(|name| word.len() >= 2 && name.starts_with(word))
        .or_else(|| {
            names
                .map(|name| (strsim::damerau_levenshtein(word, name), name))
                .min()
                .filter(|(distance, _)| *distance <= 2)
                .map(|(_, name)| name)
        });
    let shown: String = word.chars().take(40).collect();
    match meant {
        Some(name) => CommandError(format!(
            "`{shown}` is not a command; did you mean `{name}`? Try `help {name}`"
        )),
        None => CommandError(format!(
            "`{shown}` is not a command; try `help` for the list"
        )),
    }
}

/// The words after the command's name, taken in order.
struct Args<'a> {
    command: &'a str,
    words: Vec<&'a str>,
}

impl<'a> Args<'a> {
    fn new(command: &'a str, words: &[&'a str]) -> Self {
        Self {
            command,
            words: words.to_vec(),
        }
    }

    fn usage_error(&self, what: &str) -> CommandError {
        let usage = usage(self.command).map_or("", |(usage, _)| usage);
        CommandError(format!("{what}; usage: `{usage}`"))
    }

    /// Takes `--name` if present.
    fn flag(&mut self, name: &str) -> bool {
        let before = self.words.len();
        self.words.retain(|w| *w != name);
        self.words.len() != before
    }

    /// Takes `--name value` (or `--name=value`) if present.
    fn option_value(&mut self, name: &str) -> Result<Option<&'a str>, CommandError> {
        let prefix = format!("{name}=");
        if let Some(i) = self.words.iter().position(|w| w.starts_with(&prefix)) {
            let word = self.words.remove(i);
            return Ok(Some(&word[prefix.len()..]));
        }
        let Some(i) = self.words.iter().position(|w| *w == name) else {
            return Ok(None);
        };
        if i + 1 >= self.words.len() {
            return Err(self.usage_error(&format!("`{name}` needs a value")));
        }
        let value = self.words.remove(i + 1);
        self.words.remove(i);
        Ok(Some(value))
    }

    /// Takes every `KEY=VALUE` word: a build's variables.
    fn assignments(&mut self) -> Result<BTreeMap<String, String>, CommandError> {
        let mut vars = BTreeMap::new();
        let mut error = None;
        self.words
            .retain(|word| match crate::vars::assignment(word) {
                None => true,
                Some(Ok((name, value))) => {
                    vars.insert(name, value);
                    false
                }
                Some(Err(why)) => {
                    error.get_or_insert(why);
                    false
                }
            });
        if let Some(why) = error {
            return Err(self.usage_error(&why));
        }
        crate::vars::check(&vars).map_err(|why| self.usage_error(&why))?;
        Ok(vars)
    }

    fn optional(&mut self) -> Option<&'a str> {
        (!self.words.is_empty()).then(|| self.words.remove(0))
    }

    fn required(&mut self, what: &str) -> Result<&'a str, CommandError> {
        self.optional()
            .ok_or_else(|| self.usage_error(&format!("`{}` needs {what}", self.command)))
    }

    fn repo(&mut self) -> Result<RepoName, CommandError> {
        checked_repo(self.required("a repository")?)
    }

    /// `owner/repo` or `owner/repo@branch`, where the branch may be a pattern (`release/*`).
    fn repo_and_branch(&mut self) -> Result<(RepoName, Option<String>), CommandError> {
        let word = self.required("a repository")?;
        match word.split_once('@') {
            Some((repo, pattern)) => Ok((checked_repo(repo)?, Some(branch_pattern(pattern)?))),
            None => Ok((checked_repo(word)?, None)),
        }
    }

    fn build(&mut self) -> Result<BuildId, CommandError> {
        let word = self.required("a build number")?;
        word.trim_start_matches('#')
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .map(BuildId)
            .ok_or_else(|| self.usage_error(&format!("`{word}` is not a build number")))
    }

    fn done(&self) -> Result<(), CommandError> {
        if let Some(extra) = self.words.first() {
            let shown: String = extra.chars().take(40).collect();
            return Err(self.usage_error(&format!("`{shown}` is one word too many")));
        }
        Ok(())
    }
}

fn checked_repo(word: &str) -> Result<RepoName, CommandError> {
    let mut parts = word.split('/');
    let ok = matches!((parts.next(), parts.next(), parts.next()), (Some(owner), Some(name), None)
        if !owner.is_empty() && !name.is_empty()
            && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)));
    if ok {
        Ok(word.into())
    } else {
        let shown: String = word.chars().take(60).collect();
        Err(CommandError(format!(
            "`{shown}` is not a repository; write it owner/name, e.g. acme/api"
        )))
    }
}

/// A branch name as git allows it (the common rules: no spaces, control characters, `..`,
/// `~^:?*[\`, or a leading `-`).
fn branch(word: &str) -> Result<BranchName, CommandError> {
    if crate::ident::is_branch_name(word) {
        Ok(word.into())
    } else {
        let shown: String = word.chars().take(60).collect();
        Err(CommandError(format!("`{shown}` is not a branch name")))
    }
}

/// A branch name, or a pattern of them as `when: { branch: … }` takes (`*`, `**`, `?`,
/// `[…]`).
fn branch_pattern(word: &str) -> Result<String, CommandError> {
    let wild = |c: char| "*?[]".contains(c);
    if !word.contains(wild) {
        return branch(word).map(String::from);
    }
    let literal: String = word
        .chars()
        .map(|c| if wild(c) { 'x' } else { c })
        .collect();
    if branch(&literal).is_ok() && is_branch_pattern(word) {
        Ok(word.to_owned())
    } else {
        let shown: String = word.chars().take(60).collect();
        Err(CommandError(format!(
            "`{shown}` is not a branch name or pattern"
        )))
    }
}

fn is_commit(word: &str) -> bool {
    (7..=40).contains(&word.len()) && word.chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Command {
        parse(text).unwrap_or_else(|e| panic!("`{text}`: {e}"))
    }

    fn err(text: &str) -> String {
        parse(text).expect_err(text).0
    }

    #[test]
    fn a_builds_variables_are_checked() {
        assert!(err("build acme/api KILN_TAG=v1").contains("Kiln's own"));
        assert!(err("build acme/api master A-B=1").contains("not a variable name"));
        assert!(err("build acme/api master x y").contains("one word too many"));
    }

    #[test]
    fn env_leases_name_pools_branches_and_lengths() {
        let hour = Duration::from_secs(3600);
        assert_eq!(
            ok("env request device-lab"),
            Command::Env(Env::Request {
                pool: "device-lab".into(),
                branch: None,
                length: None,
            })
        );
        assert_eq!(
            ok("/env request review feature/x for 2h"),
            Command::Env(Env::Request {
                pool: "review".into(),
                branch: Some("feature/x".into()),
                length: Some(2 * hour),
            })
        );
        assert_eq!(
            ok("env request review for 90m"),
            Command::Env(Env::Request {
                pool: "review".into(),
                branch: None,
                length: Some(Duration::from_secs(90 * 60)),
            })
        );
        assert_eq!(ok("env list"), Command::Env(Env::List));
        assert_eq!(
            ok("env extend #3"),
            Command::Env(Env::Extend {
                lease: LeaseId(3),
                by: DEFAULT_EXTENSION,
            })
        );
        assert_eq!(
            ok("env release 3"),
            Command::Env(Env::Release { lease: LeaseId(3) })
        );
        assert!(err("env").contains("needs `request`"));
        assert!(err("env request lab for soon").contains("`soon` is not a length"));
        assert!(err("env request lab for").contains("a length after `for`"));
        assert!(err("env request lab for 2h extra").contains("one word too many"));
        assert!(err("env request l@b").contains("not a pool's name"));
        assert!(err("env borrow lab").contains("`env borrow` is not something env does"));
        assert!(err("env extend x").contains("`x` is not a lease number"));
    }

    #[test]
    fn promotions_name_commits_and_numbers() {
        assert!(err("promote acme/api master").contains("`master` is not a commit id"));
        assert!(err("promote acme/api abcdef1 --rollback").contains("takes no commit"));
        assert!(err("approve").contains("needs a promotion number"));
        assert!(err("approve P3").contains("`P3` is not a promotion number"));
        assert!(err("aprove 3").contains("did you mean `approve`?"));
    }

    #[test]
    fn parses_every_command() {
        let table: Vec<(&str, Command)> = vec![
            (
                "/build acme/api",
                Command::Build {
                    repo: "acme/api".into(),
                    target: Target::Branch("master".into()),
                    vars: BTreeMap::new(),
                    priority: None,
                },
            ),
            (
                "/kiln build acme/api feature/x",
                Command::Build {
                    repo: "acme/api".into(),
                    target: Target::Branch("feature/x".into()),
                    vars: BTreeMap::new(),
                    priority: None,
                },
            ),
            (
                "build acme/api 1A2B3C4D",
                Command::Build {
                    repo: "acme/api".into(),
                    target: Target::Commit("1a2b3c4d".into()),
                    vars: BTreeMap::new(),
                    priority: None,
                },
            ),
            (
                "build acme/api DEPLOY_TO=eu-west release/1 DRY_RUN=",
                Command::Build {
                    repo: "acme/api".into(),
                    target: Target::Branch("release/1".into()),
                    vars: BTreeMap::from([
                        ("DEPLOY_TO".into(), "eu-west".into()),
                        ("DRY_RUN".into(), String::new()),
                    ]),
                    priority: None,
                },
            ),
            (
                "build acme/api --priority HIGH hotfix/1",
                Command::Build {
                    repo: "acme/api".into(),
                    target: Target::Branch("hotfix/1".into()),
                    vars: BTreeMap::new(),
                    priority: Some(Priority::High),
                },
            ),
            (
                "status",
                Command::Status {
                    repo: None,
                    branch: None,
                },
            ),
            (
                "/promote acme/api",
                Command::Promote {
                    repo: "acme/api".into(),
                    commit: None,
                    rollback: false,
                },
            ),
            (
                "promote acme/api 1A2B3C4D",
                Command::Promote {
                    repo: "acme/api".into(),
                    commit: Some("1a2b3c4d".into()),
                    rollback: false,
                },
            ),
            (
                "promote --rollback acme/api",
                Command::Promote {
                    repo: "acme/api".into(),
                    commit: None,
                    rollback: true,
                },
            ),
            (
                "approve #4",
                Command::Approve {
                    promotion: PromotionId(4),
                },
            ),
            (
                "STATUS acme/api master",
                Command::Status {
                    repo: Some("acme/api".into()),
                    branch: Some("master".into()),
                },
            ),
            (
                "logs #12 unit.linux-amd64.1 --lines 20",
                Command::Logs {
                    build: BuildId(12),
                    task: Some("unit.linux-amd64.1".into()),
                    lines: Some(20),
                },
            ),
            (
                "logs --lines=5 3",
                Command::Logs {
                    build: BuildId(3),
                    task: None,
                    lines: Some(5),
                },
            ),
            ("cancel 7", Command::Cancel { build: BuildId(7) }),
            (
                "retry --failed #7",
                Command::Retry {
                    build: BuildId(7),
                    failed_only: true,
                    task: None,
                },
            ),
            (
                "retry 7 deploy",
                Command::Retry {
                    build: BuildId(7),
                    failed_only: false,
                    task: Some("deploy".into()),
                },
            ),
            (
                "ok-to-test acme/api #8",
                Command::OkToTest {
                    repo: "acme/api".into(),
                    number: 8,
                    head: None,
                },
            ),
            (
                "ok-to-test acme/api 8 ABC1234",
                Command::OkToTest {
                    repo: "acme/api".into(),
                    number: 8,
                    head: Some("abc1234".into()),
                },
            ),
            (
                "run #7 deploy",
                Command::Run {
                    build: BuildId(7),
                    step: "deploy".into(),
                },
            ),
            (
                "subscribe acme/api@master failed errored failed",
                Command::Subscribe {
                    repo: "acme/api".into(),
                    branch: Some("master".into()),
                    events: vec!["failed".into(), "errored".into()],
                },
            ),
            (
                "subscribe acme/api@release/** failed",
                Command::Subscribe {
                    repo: "acme/api".into(),
                    branch: Some("release/**".into()),
                    events: vec!["failed".into()],
                },
            ),
            (
                "unsubscribe acme/api",
                Command::Unsubscribe {
                    repo: "acme/api".into(),
                    branch: None,
                },
            ),
            ("subscriptions", Command::Subscriptions),
            ("workers", Command::Workers),
            ("queue", Command::Queue),
            (
                "help /cancel",
                Command::Help {
                    command: Some("cancel".into()),
                },
            ),
        ];
        for (text, expected) in table {
            assert_eq!(ok(text), expected, "{text}");
        }
    }

    #[test]
    fn says_what_is_wrong_and_what_was_meant() {
        let table = [
            ("", "no command given"),
            ("/biuld acme/api", "did you mean `build`?"),
            ("canel 3", "did you mean `cancel`?"),
            ("sub acme/api", "did you mean `subscribe`?"),
            ("deploy everything", "try `help` for the list"),
            (
                "build",
                "`build` needs a repository; usage: `build <owner/repo>",
            ),
            ("build api", "write it owner/name"),
            ("build acme/api two words", "`words` is one word too many"),
            ("build acme/api ../etc", "not a branch name"),
            ("build acme/api --priority soon", "`soon` is not a priority"),
            ("build acme/api --priority", "`--priority` needs a value"),
            ("cancel twelve", "`twelve` is not a build number"),
            ("cancel #0", "not a build number"),
            ("logs 3 --lines", "`--lines` needs a value"),
            ("logs 3 --lines 100000", "from 1 to 500"),
            (
                "subscribe acme/api everything",
                "`everything` is not an event",
            ),
            ("subscribe acme/api@rel[", "not a branch name or pattern"),
            ("subscribe acme/api@../*", "not a branch name or pattern"),
        ];
        for (text, needle) in table {
            let message = err(text);
            assert!(
                message.contains(needle),
                "`{text}`: `{message}` lacks `{needle}`"
            );
        }
    }

    #[test]
    fn every_command_has_help() {
        for (name, usage_line, _) in COMMANDS {
            assert!(usage_line.starts_with(name));
            assert!(usage(name).is_some());
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,120}") {
            let _ = parse(&text);
        }

        #[test]
        fn never_panics_on_commandish_input(
            text in "(/|kiln |build |logs |retry |subscribe |--lines|--failed|#|[0-9]{1,3}|acme/api|@|=| ){0,12}"
        ) {
            let _ = parse(&text);
        }
    }
}

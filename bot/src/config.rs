//! The bot's configuration file (TOML): which repositories Kiln builds, and where it reports.
//!
//! ```toml
//! public_url = "https://kiln.example.com"
//!
//! [[repository]]
//! name = "acme/api"
//! webhook_secret = "…"
//! # forge = "gitlab"                                     # default: github
//! # clone_url = "https://git.example.com/acme/api.git"   # default: the webhook's
//! # Which branches may use each secret a step names; the values are on the workers.
//! secrets = { DEPLOY_TOKEN = ["master"], NPM_TOKEN = ["*", "release/**"] }
//! # Linux capabilities its steps' containers may ask for (`capabilities:`); none by default.
//! capabilities = ["CHOWN", "SETUID", "SETGID"]
//!
//! [repository.promote]         # `promote`: fast-forwards production to a passed master commit
//! approvals = 2                # from approvers other than the one who asked
//! approvers = ["slack:U2CERLKJA", "discord:1100000000000000050"]   # users or roles
//! requires = ["deploy-staging"]   # steps that must have passed, besides the whole build
//! # approval_ttl = "24h"  from = "master"  to = "production"
//! # push_url = "git@github.com:acme/api.git"   # default: the clone URL; the bot's git pushes
//!
//! [discord]
//! token = "…"
//! channel_id = 123456789012345678
//!
//! [github]                     # commit statuses; GitHub Enterprise: api_url = "https://…/api/v3"
//! token = "…"
//!
//! [gitlab]                     # commit statuses
//! token = "…"
//! url = "https://gitlab.example.com"   # default: https://gitlab.com
//!
//! [[operator]]                 # may do anything through the HTTP API
//! name = "alice"
//! token = "…"                  # sent as `Authorization: Bearer …`
//!
//! [slack]
//! signing_secret = "…"         # the Slack app's, for its slash commands
//! teams = ["T0001"]            # the workspaces it takes commands from; default: any
//!
//! [[person]]                   # commit authors in chat: mentioned when their build fails
//! names = ["octocat", "Mona Lisa Octocat"]
//! discord = 123456789012345678
//!
//! [[permission]]               # who may give commands that change things, and where
//! users = ["slack:U2CERLKJA"]  # <front end>:<user id>
//! roles = ["discord:1100000000000000050"]   # everyone with a Discord role
//! commands = ["cancel"]        # or ["*"]; help, status and logs need no permission
//! repos = ["acme/*"]           # default: every repository
//!
//! [[pool]]                     # test environments: `env request <pool>`
//! name = "device-lab"
//! kind = "static"              # hosts Kiln only hands out
//! hosts = ["lab-1.example.com", "lab-2.example.com"]
//! # default_ttl = "2h"  max_ttl = "8h"
//!
//! [[pool]]
//! name = "review"
//! kind = "docker"              # a container per lease, started by a worker of `platform`
//! image = "registry.example.com/acme/api:{{ branch_slug }}"   # the branch's image
//! capacity = 3
//! ports = [8080]               # published on the worker's advertised host
//! # command = ["serve", "--port", "8080"]
//! # platform = "linux/amd64"
//!
//! [registry]                   # where workers keep artifacts: `GET /builds/<id>/artifacts`
//! address = "registry.example.com:5000"
//! auth = "/etc/kiln/registry.json"   # a Docker config.json: reads artifacts, writes logs
//!
//! [workers]
//! reclaim_after = "30s"        # a worker unheard for this long loses its jobs to others
//!
//! [retention]                  # per repository too: [repository.retention]
//! builds = "90d"               # an ended build's records and logs, then they expire
//! logs_in_redis = "7d"         # a log's stream once archived (to the registry, or:)
//! # archive_dir = "/var/lib/kiln/logs"   # where logs are archived without a [registry]
//! ```
//!
//! Policy lives here, never in the repository under test: a commit cannot make Kiln build a
//! repository it was not told to build.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use kiln_shared::ident::{BranchName, RepoName};
use kiln_shared::pattern::branch_matches;
use kiln_shared::plan::Plan;
use kiln_shared::platform::Platform;
use kiln_shared::priority::Priority;
use kiln_shared::trigger::TriggerKind;
use secrecy::SecretString;
use serde::Deserialize;

mod access;
mod retention;
mod schedule;
mod secret;

pub use access::{Access, OAuthApp};
pub use retention::{Kept, Retention, RetentionOverride};
pub use schedule::When;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The address people reach the bot at; links in chat messages start with it.
    #[serde(default = "default_public_url")]
    pub public_url: String,
    /// The repositories Kiln builds.
    #[serde(default, rename = "repository")]
    pub repositories: Vec<Repository>,
    /// Where build results are posted on Discord; no section, no Discord.
    #[serde(default)]
    pub discord: Option<Discord>,
    /// Who may act on builds through the HTTP API (cancel them).
    #[serde(default, rename = "operator")]
    pub operators: Vec<Operator>,
    /// Slack's slash commands; no section, no Slack.
    #[serde(default)]
    pub slack: Option<Slack>,
    /// Zulip's outgoing webhook bot; no section, no Zulip.
    #[serde(default)]
    pub zulip: Option<Zulip>,
    /// Who may give which commands that change things, on which repositories.
    #[serde(default, rename = "permission")]
    pub permissions: Vec<Permission>,
    /// Commit authors and who they are in chat, for failure notifications.
    #[serde(default, rename = "person")]
    pub people: Vec<Person>,
    /// GitHub's REST API, for commit statuses; no section, no statuses on GitHub.
    #[serde(default)]
    pub github: Option<GitHub>,
    /// GitLab's REST API, for commit statuses; no section, no statuses on GitLab.
    #[serde(default)]
    pub gitlab: Option<GitLab>,
    /// The pools test environments are leased from.
    #[serde(default, rename = "pool")]
    pub pools: Vec<Pool>,
    /// The installation's registry, where workers keep artifacts.
    #[serde(default)]
    pub registry: Option<Registry>,
    /// How the bot watches over workers.
    #[serde(default)]
    pub workers: Workers,
    /// How long ended builds' records and logs are kept.
    #[serde(default)]
    pub retention: Retention,
    /// How the bot finds pushes whose webhooks never came.
    #[serde(default)]
    pub reconcile: Reconcile,
    /// How often repositories' files are read for their schedules.
    #[serde(default)]
    pub schedules: Schedules,
    /// Who may read the web pages, logs and artifacts.
    #[serde(default)]
    pub access: Access,
}

/// Reconciliation: every `every`, the bot compares each repository's branch heads (fetched
/// into its mirror) with the newest build of each branch, and builds a head that was pushed
/// but never built.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reconcile {
    /// How often; `0s` turns reconciliation off.
    #[serde(default = "default_reconcile_every", with = "humantime_serde")]
    pub every: Duration,
}

/// How schedules named in repositories' `.kiln.yml` are found.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedules {
    /// How often each repository's `.kiln.yml` on its default branch is read again; `0s`
    /// reads none (only the configuration's schedules run).
    #[serde(default = "default_read_every", with = "humantime_serde")]
    pub read_every: Duration,
}

impl Default for Schedules {
    fn default() -> Self {
        Self {
            read_every: default_read_every(),
        }
    }
}

fn default_read_every() -> Duration {
    Duration::from_secs(60)
}

impl Default for Reconcile {
    fn default() -> Self {
        Self {
            every: default_reconcile_every(),
        }
    }
}

fn default_reconcile_every() -> Duration {
    Duration::from_secs(5 * 60)
}

/// How the bot watches over workers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workers {
    /// How long a worker may go unheard (it says it is there every 10 s) before the bot
    /// takes back the jobs it holds: each ends errored and runs again, as its next attempt,
    /// on another worker (if its retries allow), and the silent worker's late result is
    /// ignored. At least 20 s.
    #[serde(default = "default_reclaim_after", with = "humantime_serde")]
    pub reclaim_after: Duration,
}

impl Default for Workers {
    fn default() -> Self {
        Self {
            reclaim_after: default_reclaim_after(),
        }
    }
}

fn default_reclaim_after() -> Duration {
    Duration::from_secs(30)
}

/// The installation's registry, as the bot reads artifacts from it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// `host[:port]`, as workers are given it (`--registry`).
    pub address: String,
    /// A Docker `config.json` with credentials for it.
    #[serde(default)]
    pub auth: Option<std::path::PathBuf>,
}

/// What a pool lends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolKind {
    /// Hosts that exist already; Kiln hands them out and takes them back.
    Static,
    /// A container per lease, started by a worker of the pool's platform on its own Docker
    /// engine; the bot never talks to Docker.
    Docker,
}

/// A pool of test environments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub name: String,
    pub kind: PoolKind,
    /// `static`: the hosts, one per lease.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// `docker`: how many containers at once.
    #[serde(default)]
    pub capacity: u32,
    /// `docker`: the image, where `{{ branch }}` and `{{ branch_slug }}` are the branch asked
    /// for (the default branch when none is).
    #[serde(default)]
    pub image: Option<String>,
    /// `docker`: the command, when not the image's.
    #[serde(default)]
    pub command: Vec<String>,
    /// `docker`: the container's TCP ports, each published on a free port of the host of the
    /// worker that starts it (its advertised host, which the lease's answer names).
    #[serde(default)]
    pub ports: Vec<u16>,
    /// `docker`: whose workers start its containers (the jobs queue of that platform).
    #[serde(default)]
    pub platform: Platform,
    /// How long a lease runs unless asked otherwise.
    #[serde(default = "default_lease", with = "humantime_serde")]
    pub default_ttl: Duration,
    /// The longest a lease runs, asked for or extended.
    #[serde(default = "max_lease", with = "humantime_serde")]
    pub max_ttl: Duration,
}

impl Pool {
    /// A static pool of one slot with no host: a concurrency group's.
    pub fn one_at_a_time(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            kind: PoolKind::Static,
            hosts: vec![String::new()],
            capacity: 1,
            image: None,
            command: Vec::new(),
            ports: Vec::new(),
            platform: Platform::default(),
            default_ttl: default_lease(),
            max_ttl: max_lease(),
        }
    }

    /// How many leases it holds at once.
    pub fn capacity(&self) -> u32 {
        match self.kind {
            PoolKind::Static => u32::try_from(self.hosts.len()).unwrap_or(u32::MAX),
            PoolKind::Docker => self.capacity,
        }
    }
}

fn default_lease() -> Duration {
    Duration::from_secs(2 * 60 * 60)
}

fn max_lease() -> Duration {
    Duration::from_secs(8 * 60 * 60)
}

/// Another team's job that reports its verdict on a repository's builds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reporter {
    /// How cards name its verdicts, e.g. `security-scan`.
    pub name: String,
    /// Sent as `Authorization: Bearer …`; good for this repository only.
    #[serde(deserialize_with = "secret::secret")]
    pub token: SecretString,
}

/// The forge a repository lives on.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Forge {
    #[default]
    GitHub,
    GitLab,
}

impl Forge {
    /// Every forge Kiln knows.
    pub const ALL: [Self; 2] = [Self::GitHub, Self::GitLab];

    /// How Kiln's configuration, channel names and records name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GitHub => "github",
            Self::GitLab => "gitlab",
        }
    }

    /// The forge named `name` (as [`Self::as_str`] names it).
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

/// GitHub's REST API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitHub {
    /// A token that may write commit statuses on the repositories.
    #[serde(deserialize_with = "secret::secret")]
    pub token: SecretString,
    /// Replaces `https://api.github.com`: GitHub Enterprise, a proxy, a fake in tests.
    #[serde(default)]
    pub api_url: Option<String>,
}

/// GitLab's REST API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitLab {
    /// A token with the `api` scope on the projects.
    #[serde(deserialize_with = "secret::secret")]
    pub token: SecretString,
    /// The instance; `http://` only for tests.
    #[serde(default = "default_gitlab_url")]
    pub url: String,
}

fn default_gitlab_url() -> String {
    "https://gitlab.com".into()
}

/// A commit author, and their chat accounts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Person {
    /// The names the forge gives as a commit's author (a GitHub login, a git author name).
    pub names: Vec<String>,
    /// Their Discord user id.
    #[serde(default)]
    pub discord: Option<u64>,
    /// Their Slack member id (`U…`).
    #[serde(default)]
    pub slack: Option<String>,
    /// How Zulip's mentions name them: `Full Name|user id`, as in `@**Ada Lovelace|12**`.
    #[serde(default)]
    pub zulip: Option<String>,
}

/// Zulip, through an outgoing webhook bot: mentioned in a stream or sent a direct message,
/// it posts the command to Kiln.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zulip {
    /// The Zulip server, e.g. `https://chat.example.com`.
    pub url: String,
    /// The bot's email address: its name in the REST API.
    pub bot_email: String,
    /// The outgoing webhook's token: every command Zulip posts carries it.
    #[serde(deserialize_with = "secret::secret")]
    pub token: SecretString,
    /// The bot's API key: with it, Kiln posts build cards to the streams' topics that
    /// subscribe, and answers that take long.
    #[serde(default, deserialize_with = "secret::optional")]
    pub api_key: Option<SecretString>,
}

/// Slack, through its slash commands.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slack {
    /// The app's signing secret: every request from Slack is signed with it.
    #[serde(deserialize_with = "secret::secret")]
    pub signing_secret: SecretString,
    /// The workspaces (team ids) whose commands Kiln takes; any, when empty.
    #[serde(default)]
    pub teams: Vec<String>,
    /// The app's bot token (`xoxb-…`): with it, Kiln posts build cards to the channels that
    /// subscribe.
    #[serde(default, deserialize_with = "secret::optional")]
    pub bot_token: Option<SecretString>,
    /// Replaces `https://slack.com/api` in every Web API call; for a proxy, or a fake in tests.
    #[serde(default)]
    pub api_url: Option<String>,
}

/// Some people's right to give some commands on some repositories.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permission {
    /// `<front end>:<user id>`, e.g. `slack:U2CERLKJA`.
    #[serde(default)]
    pub users: Vec<String>,
    /// `<front end>:<role id>`: everyone with the role, e.g. `discord:1100000000000000050`.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Command names, or `*` for all.
    pub commands: Vec<String>,
    /// Repository patterns (`acme/*`); every repository when absent.
    #[serde(default = "every_repository")]
    pub repos: Vec<String>,
}

fn every_repository() -> Vec<String> {
    vec!["*/*".into()]
}

/// Someone who may act on builds through the HTTP API, with the token they present.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    /// Who they are, as build records and chat messages name them.
    pub name: String,
    #[serde(deserialize_with = "secret::secret")]
    pub token: SecretString,
}

/// The one of `holders` whose token is `token`. Every token is compared, in constant time,
/// so the answer's timing tells nothing about them.
fn holder_of<'a, T>(
    holders: &'a [T],
    token: &str,
    token_of: impl Fn(&T) -> &SecretString,
) -> Option<&'a T> {
    use secrecy::ExposeSecret;
    use subtle::ConstantTimeEq;
    let mut found = None;
    for holder in holders {
        if bool::from(
            token_of(holder)
                .expose_secret()
                .as_bytes()
                .ct_eq(token.as_bytes()),
        ) {
            found = Some(holder);
        }
    }
    found
}

/// Links must work on the machine itself when nothing else is configured.
fn default_public_url() -> String {
    "http://127.0.0.1:8080".into()
}

/// One repository Kiln builds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repository {
    /// `owner/name`, as the forge spells it.
    pub name: RepoName,
    /// The secret the forge signs this repository's webhooks with.
    #[serde(deserialize_with = "secret::secret")]
    pub webhook_secret: SecretString,
    /// Where to fetch commits from; when absent, the clone URL the webhook names.
    #[serde(default)]
    pub clone_url: Option<String>,
    /// The forge it lives on, where its commit statuses go.
    #[serde(default)]
    pub forge: Forge,
    /// Who may report their verdict on its builds (`POST /api/reports`).
    #[serde(default, rename = "reporter")]
    pub reporters: Vec<Reporter>,
    /// For each secret a step may name, the branches (patterns, as in `when`) whose builds
    /// may use it. A secret not listed here is refused on every branch.
    #[serde(default)]
    pub secrets: BTreeMap<String, Vec<String>>,
    /// The Linux capabilities (e.g. `CHOWN`, `NET_BIND_SERVICE`) its steps may ask for in
    /// `capabilities`; a step's container gets none otherwise.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// How its production branch is promoted; no section, no `promote`.
    #[serde(default)]
    pub promote: Option<Promote>,
    /// Its own retention rules, in place of `[retention]`'s.
    #[serde(default)]
    pub retention: Option<RetentionOverride>,
    /// Branches (patterns, as in `when`) reconciliation builds even if no webhook ever told
    /// Kiln of them; a branch Kiln was told of is reconciled whatever this says.
    #[serde(default)]
    pub reconcile_branches: Vec<String>,
    /// Whether a newer push to a branch cancels the branch's older builds still running;
    /// never on `master`, `main` or the branches of `promote` unless
    /// `interruptible_default_branch`.
    #[serde(default)]
    pub interruptible: bool,
    /// Whether `interruptible` holds on `master`, `main` and the branches of `promote` too.
    #[serde(default)]
    pub interruptible_default_branch: bool,
    /// Owners of forks (GitHub logins, GitLab namespaces) whose pull (merge) requests are
    /// built without a writer's `/kiln ok-to-test`: who can push to the fork, whoever opened
    /// the request.
    #[serde(default)]
    pub trusted_authors: Vec<String>,
    /// Whether a pull or merge request is built as its head merged with its target branch
    /// (as the target is when the build is planned), rather than as its head alone.
    #[serde(default)]
    pub build_merge_result: bool,
    /// Builds started by the clock (`[[repository.schedule]]`).
    #[serde(default, rename = "schedule")]
    pub schedules: Vec<Schedule>,
    /// Branches (patterns, as in `when`) whose builds are of high priority: their tasks
    /// start before those of normal builds already waiting for the same platform.
    #[serde(default)]
    pub high_priority_branches: Vec<String>,
    /// The priority of a pushed tag's build.
    #[serde(default = "high")]
    pub tag_priority: Priority,
}

fn high() -> Priority {
    Priority::High
}

/// A build of a branch's head started by the clock, as event `schedule`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Its name, unique in the repository: on the build's card and in `status`.
    pub name: String,
    /// When: a cron expression of five fields (minute to day of week), or six with seconds
    /// first.
    pub cron: String,
    /// The branch built.
    #[serde(default = "default_from")]
    pub branch: BranchName,
    /// Variables its builds' tasks see, as `build … KEY=VALUE` gives them.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// The time zone `cron` is read in (an IANA name, `Europe/Berlin`).
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Read from the default branch's `.kiln.yml`, not from this configuration.
    #[serde(skip)]
    pub from_file: bool,
}

impl Repository {
    /// The priority of its builds of `kind` on `branch` (a tag's name for a tag's build),
    /// unless someone asks for another (`build … --priority`).
    pub fn priority_of(&self, kind: TriggerKind, branch: &str) -> Priority {
        match kind {
            TriggerKind::Tag => self.tag_priority,
            _ if self
                .high_priority_branches
                .iter()
                .any(|pattern| branch_matches(pattern, branch)) =>
            {
                Priority::High
            }
            _ => Priority::Normal,
        }
    }

    /// Whether a request from a fork owned by `owner` is built without a writer's
    /// `ok-to-test`.
    pub fn trusts(&self, owner: &str) -> bool {
        self.trusted_authors
            .iter()
            .any(|trusted| trusted.eq_ignore_ascii_case(owner))
    }

    /// Whether a newer push to `branch` cancels its older builds still running.
    pub fn interrupts(&self, branch: &str) -> bool {
        let promoted = self
            .promote
            .as_ref()
            .is_some_and(|p| p.from == branch || p.to == branch);
        let default = promoted || ["master", "main"].contains(&branch);
        self.interruptible && (self.interruptible_default_branch || !default)
    }
}

impl Schedule {
    /// What the installation notes its due times under: its name, or `file:<name>` for a
    /// file's (no name has a `:`), so that a file's never takes over the configuration's.
    pub fn key(&self) -> String {
        if self.from_file {
            format!("file:{}", self.name)
        } else {
            self.name.clone()
        }
    }

    /// When it is due, or why its `cron` or `timezone` is not a time.
    pub fn when(&self) -> Result<When, String> {
        When::of(self)
    }
}

fn default_timezone() -> String {
    "UTC".to_owned()
}

/// The gates of a repository's promotions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promote {
    /// The branch whose passed commits may be promoted.
    #[serde(default = "default_from")]
    pub from: BranchName,
    /// The branch that is moved, by fast-forward only.
    #[serde(default = "default_to")]
    pub to: BranchName,
    /// Approvals needed from people other than the one who asked.
    #[serde(default)]
    pub approvals: u32,
    /// Who may approve: `<front end>:<user id>`, or a role as permissions name it.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Steps that must have passed in the commit's build (a step allowed to fail counts
    /// only if it passed).
    #[serde(default)]
    pub requires: Vec<String>,
    /// How long an approval counts, and how long a promotion waits for the next one.
    #[serde(default = "default_approval_ttl", with = "humantime_serde")]
    pub approval_ttl: Duration,
    /// Where the bot pushes the branch; the clone URL when absent. Its credentials are the
    /// bot's git's (an SSH key, a credential helper), never in this file.
    #[serde(default)]
    pub push_url: Option<String>,
}

fn default_from() -> BranchName {
    "master".into()
}

fn default_to() -> BranchName {
    "production".into()
}

fn default_approval_ttl() -> Duration {
    Duration::from_secs(24 * 60 * 60)
}

impl Repository {
    /// The reporter whose token is `token`. Every token is compared, in constant time.
    pub fn reporter(&self, token: &str) -> Option<&Reporter> {
        holder_of(&self.reporters, token, |r| &r.token)
    }

    /// Why a build of `branch` may not run `plan`, if a task uses a secret the branch may not.
    pub fn refuse_secrets(&self, plan: &Plan, branch: &str) -> Option<String> {
        let task = plan.tasks.iter().find_map(|task| {
            let refused = task.secrets.iter().find(|secret| {
                !self
                    .secrets
                    .get(*secret)
                    .is_some_and(|branches| branches.iter().any(|p| branch_matches(p, branch)))
            })?;
            Some((task, refused))
        });
        let (task, secret) = task?;
        Some(match self.secrets.get(secret) {
            None => format!(
                "step `{}` uses the secret `{secret}`, which Kiln's configuration does not \
                 list for {}",
                task.step, self.name
            ),
            Some(_) => format!(
                "step `{}` uses the secret `{secret}`, which Kiln's configuration does not \
                 allow on branch `{branch}`",
                task.step
            ),
        })
    }

    /// Why `plan` may not run, if a task asks for a capability the repository may not use.
    pub fn refuse_capabilities(&self, plan: &Plan) -> Option<String> {
        refuse_capabilities(plan, &self.capabilities, &self.name)
    }
}

/// Why `plan` may not run, if a task asks for a capability not in `allowed`.
pub fn refuse_capabilities(plan: &Plan, allowed: &[String], repo: &str) -> Option<String> {
    plan.tasks.iter().find_map(|task| {
        let refused = task.capabilities.iter().find(|c| !allowed.contains(c))?;
        Some(format!(
            "step `{}` asks for the capability `{refused}`, which Kiln's configuration does \
             not allow for {repo} (`capabilities` of its [[repository]])",
            task.step
        ))
    })
}

/// Discord, through its REST API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discord {
    /// The bot user's token.
    #[serde(deserialize_with = "secret::secret")]
    pub token: SecretString,
    /// The channel build results are posted to.
    pub channel_id: u64,
    /// Replaces `https://discord.com` in every request; for a proxy, or a fake in tests.
    #[serde(default)]
    pub api_url: Option<String>,
    /// The application's public key (hex, from the Developer Portal): with it, Kiln takes
    /// slash commands at `/discord/interactions`.
    #[serde(default)]
    pub public_key: Option<String>,
    /// The application's id, needed to answer slash commands.
    #[serde(default)]
    pub application_id: Option<u64>,
    /// The servers (guild ids) whose slash commands Kiln takes, direct messages never; any
    /// server and direct messages, when empty.
    #[serde(default)]
    pub guilds: Vec<u64>,
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in the configuration {}", path.display()))
    }

    /// What the configuration sets up, in one line: `2 repositories (acme/api, acme/web);
    /// chat: Slack, Discord; forges: GitHub; 1 pool; registry registry.example.com:5000`.
    pub fn summary(&self) -> String {
        let names: Vec<&str> = self.repositories.iter().map(|r| r.name.as_str()).collect();
        let mut parts = vec![format!(
            "{} repositor{} ({})",
            names.len(),
            if names.len() == 1 { "y" } else { "ies" },
            names.join(", ")
        )];
        let configured = |what: &str, names: &[(&str, bool)]| {
            let on: Vec<&str> = names
                .iter()
                .filter(|(_, on)| *on)
                .map(|(n, _)| *n)
                .collect();
            (!on.is_empty()).then(|| format!("{what}{}", on.join(", ")))
        };
        let chats = [
            ("Discord", self.discord.is_some()),
            ("Slack", self.slack.is_some()),
            ("Zulip", self.zulip.is_some()),
        ];
        let forges = [
            ("GitHub", self.github.is_some()),
            ("GitLab", self.gitlab.is_some()),
        ];
        parts.extend(configured("chat: ", &chats));
        parts.extend(configured("statuses on ", &forges));
        if !self.pools.is_empty() {
            parts.push(format!("{} pool(s)", self.pools.len()));
        }
        if let Some(registry) = &self.registry {
            parts.push(format!("registry {}", registry.address));
        }
        parts.join("; ")
    }

    /// Parses and checks configuration text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let config: Self = toml::from_str(text)?;
        anyhow::ensure!(
            config.workers.reclaim_after >= 2 * kiln_shared::presence::HEARTBEAT,
            "[workers] reclaim_after is at least {} s: a worker says it is there every {} s",
            (2 * kiln_shared::presence::HEARTBEAT).as_secs(),
            kiln_shared::presence::HEARTBEAT.as_secs(),
        );
        for (i, repo) in config.repositories.iter().enumerate() {
            anyhow::ensure!(
                repo.name.split('/').count() == 2 && !repo.name.starts_with('/'),
                "repository `{}` must be written owner/name",
                repo.name
            );
            anyhow::ensure!(
                !config.repositories[..i].iter().any(|r| r.name == repo.name),
                "repository `{}` is listed twice",
                repo.name
            );
            for (j, schedule) in repo.schedules.iter().enumerate() {
                let at = format!(
                    "[[repository.schedule]] `{}` of {}",
                    schedule.name, repo.name
                );
                anyhow::ensure!(
                    !repo.schedules[..j].iter().any(|s| s.name == schedule.name),
                    "{at} is listed twice"
                );
                schedule
                    .when()
                    .map_err(|why| anyhow::anyhow!("{at}: {why}"))?;
                kiln_shared::vars::check(&schedule.vars)
                    .map_err(|why| anyhow::anyhow!("{at}: {why}"))?;
            }
            if let Some(promote) = &repo.promote {
                anyhow::ensure!(
                    promote.from != promote.to,
                    "[repository.promote] of {}: `from` and `to` are the same branch",
                    repo.name
                );
                anyhow::ensure!(
                    promote.approvals == 0 || !promote.approvers.is_empty(),
                    "[repository.promote] of {} needs {} approval(s) but names no approvers",
                    repo.name,
                    promote.approvals,
                );
                anyhow::ensure!(
                    promote.approval_ttl >= Duration::from_secs(1),
                    "[repository.promote] of {}: `approval_ttl` is at least a second",
                    repo.name
                );
            }
            if let Some(unknown) = repo
                .capabilities
                .iter()
                .find(|c| !kiln_shared::spec::CAPABILITIES.contains(&c.as_str()))
            {
                anyhow::bail!(
                    "`capabilities` of {}: `{unknown}` is not a Linux capability (write it \
                     without `CAP_`, e.g. `CHOWN`)",
                    repo.name
                );
            }
            for (j, reporter) in repo.reporters.iter().enumerate() {
                use secrecy::ExposeSecret;
                anyhow::ensure!(
                    !reporter.name.is_empty()
                        && reporter.name.len() <= 40
                        && reporter
                            .name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
                    "reporter `{}` of {}: a name is letters, digits, `-`, `_` and `.`",
                    reporter.name,
                    repo.name
                );
                anyhow::ensure!(
                    reporter.token.expose_secret().len() >= 16,
                    "reporter `{}` of {} needs a token of at least 16 characters",
                    reporter.name,
                    repo.name
                );
                anyhow::ensure!(
                    !repo.reporters[..j].iter().any(|r| r.name == reporter.name),
                    "reporter `{}` of {} is listed twice",
                    reporter.name,
                    repo.name
                );
            }
        }
        if let Some(discord) = &config.discord {
            anyhow::ensure!(
                discord.public_key.is_some() == discord.application_id.is_some(),
                "[discord] needs both `public_key` and `application_id` to take slash commands"
            );
            if let Some(key) = &discord.public_key {
                anyhow::ensure!(
                    key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()),
                    "[discord] `public_key` must be the 64 hexadecimal digits the Developer \
                     Portal shows"
                );
            }
        }
        for permission in &config.permissions {
            for command in &permission.commands {
                anyhow::ensure!(
                    command == "*" || kiln_shared::command::usage(command).is_some(),
                    "a permission names `{command}`, which is not a command"
                );
            }
            for user in &permission.users {
                anyhow::ensure!(
                    user.split_once(':')
                        .is_some_and(|(f, id)| !f.is_empty() && !id.is_empty()),
                    "a permission names user `{user}`; write it <front end>:<id>, e.g. slack:U2CERLKJA"
                );
            }
            for role in &permission.roles {
                anyhow::ensure!(
                    role.strip_prefix("discord:")
                        .is_some_and(|id| id.parse::<u64>().is_ok()),
                    "a permission names role `{role}`; write it discord:<role id>"
                );
            }
            anyhow::ensure!(
                !permission.users.is_empty() || !permission.roles.is_empty(),
                "a permission names neither users nor roles"
            );
        }
        for (i, pool) in config.pools.iter().enumerate() {
            let name = &pool.name;
            anyhow::ensure!(
                kiln_shared::command::is_name(name),
                "pool `{name}`: a name is letters, digits, `-`, `_` and `.`"
            );
            anyhow::ensure!(
                !config.pools[..i].iter().any(|p| &p.name == name),
                "pool `{name}` is listed twice"
            );
            anyhow::ensure!(
                pool.default_ttl <= pool.max_ttl,
                "pool `{name}`: `default_ttl` is longer than `max_ttl`"
            );
            match pool.kind {
                PoolKind::Static => anyhow::ensure!(
                    !pool.hosts.is_empty() && pool.image.is_none() && pool.capacity == 0,
                    "pool `{name}` is static: it names `hosts`, and no `image` or `capacity`"
                ),
                PoolKind::Docker => {
                    anyhow::ensure!(
                        pool.hosts.is_empty() && pool.image.is_some() && pool.capacity > 0,
                        "pool `{name}` is docker: it names an `image` and a `capacity`, and no `hosts`"
                    );
                    anyhow::ensure!(
                        pool.platform.has_containers(),
                        "pool `{name}` is docker: its platform {} runs no containers",
                        pool.platform
                    );
                }
            }
        }
        for (i, operator) in config.operators.iter().enumerate() {
            use secrecy::ExposeSecret;
            anyhow::ensure!(
                operator.token.expose_secret().len() >= 16,
                "operator `{}` needs a token of at least 16 characters",
                operator.name
            );
            anyhow::ensure!(
                !config.operators[..i]
                    .iter()
                    .any(|o| o.name == operator.name),
                "operator `{}` is listed twice",
                operator.name
            );
        }
        Ok(config)
    }

    /// The operator whose token is `token`. Every token is compared, in constant time, so
    /// the answer's timing tells nothing about them.
    pub fn operator(&self, token: &str) -> Option<&Operator> {
        holder_of(&self.operators, token, |o| &o.token)
    }

    /// Whether `user` (`<front end>:<id>`) may give `command` on `repo`.
    pub fn may(&self, user: &str, roles: &[String], command: &str, repo: &str) -> bool {
        let repo = repo.to_ascii_lowercase();
        self.permissions.iter().any(|p| {
            (p.users.iter().any(|u| u == user) || p.roles.iter().any(|r| roles.contains(r)))
                && p.commands.iter().any(|c| c == "*" || c == command)
                && p.repos
                    .iter()
                    .any(|pattern| branch_matches(&pattern.to_ascii_lowercase(), &repo))
        })
    }

    /// Whether `user` may give `command` on some repository or other: for commands that
    /// concern none.
    pub fn may_anywhere(&self, user: &str, roles: &[String], command: &str) -> bool {
        self.permissions.iter().any(|p| {
            (p.users.iter().any(|u| u == user) || p.roles.iter().any(|r| roles.contains(r)))
                && p.commands.iter().any(|c| c == "*" || c == command)
        })
    }

    /// Who is behind `id` (`discord:<user id>`, `slack:<member id>`): `person:<first name>`
    /// when a `[[person]]` names that account, so one person's accounts count as one; the id
    /// itself otherwise.
    pub fn person_key(&self, id: &str) -> String {
        let person = match id.split_once(':') {
            Some(("discord", user)) => self
                .people
                .iter()
                .find(|p| p.discord.is_some_and(|d| d.to_string() == user)),
            Some(("slack", user)) => self
                .people
                .iter()
                .find(|p| p.slack.as_deref() == Some(user)),
            _ => None,
        };
        match person.and_then(|p| p.names.first()) {
            Some(name) => format!("person:{name}"),
            None => id.to_owned(),
        }
    }

    /// The person a commit `author` is, if Kiln's configuration says.
    pub fn person(&self, author: &str) -> Option<&Person> {
        self.people
            .iter()
            .find(|p| p.names.iter().any(|n| n.eq_ignore_ascii_case(author)))
    }

    /// The pool called `name`.
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// The repository called `name`, compared as forges do: without regard to case.
    pub fn repository(&self, name: &str) -> Option<&Repository> {
        self.repositories
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(name))
    }

    /// Whether reconciliation builds `branch` of repository `name` though no webhook told
    /// Kiln of it.
    pub fn reconciles_unknown(&self, name: &str, branch: &str) -> bool {
        self.repository(name).is_some_and(|r| {
            r.reconcile_branches
                .iter()
                .any(|pattern| branch_matches(pattern, branch))
        })
    }

    /// How long repository `name`'s ended builds are kept.
    pub fn retention_of(&self, name: &str) -> Kept {
        let own = self.repository(name).and_then(|r| r.retention.as_ref());
        self.retention.for_repository(own)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    const EXAMPLE: &str = include_str!("../../deploy/kiln-bot.example.toml");

    /// The example with every `# key = value` and `# [section]` line set.
    fn everything_set(example: &str) -> String {
        let is_code = |rest: &str| {
            let section = rest.starts_with('[')
                && rest.ends_with(']')
                && rest
                    .trim_matches(['[', ']'])
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '.');
            let key = rest.split_once(" = ").is_some_and(|(key, _)| {
                !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            });
            section || key
        };
        example
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if is_code(rest) => rest,
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_example_configuration_is_sound_as_it_is_and_with_every_key_set() {
        let plain = Config::parse(EXAMPLE).expect("the example as it is");
        assert_eq!(plain.summary(), "1 repository (acme/api)");
        let full = everything_set(EXAMPLE);
        let config = Config::parse(&full).unwrap_or_else(|e| panic!("{e:#}\n{full}"));
        assert_eq!(
            config.summary(),
            "1 repository (acme/api); chat: Discord, Slack, Zulip; statuses on GitHub, \
             GitLab; 2 pool(s); registry registry.example.com:5000"
        );
        let repository = &config.repositories[0];
        assert_eq!(repository.reporters.len(), 1);
        assert!(repository.promote.is_some());
        assert_eq!(config.operators.len(), 1);
        assert_eq!(config.permissions.len(), 1);
        assert_eq!(config.people.len(), 1);
        assert_eq!(config.workers.reclaim_after, Duration::from_secs(30));
    }

    #[test]
    fn parses_a_full_file() {
        let config = Config::parse(
            r#"
public_url = "https://kiln.example.com"
[[repository]]
name = "acme/api"
webhook_secret = "s3cret"
[[repository]]
name = "acme/web"
webhook_secret = "other"
clone_url = "file:///srv/web.git"
[discord]
token = "t"
channel_id = 42
"#,
        )
        .expect("valid");
        let api = config
            .repository("Acme/API")
            .expect("found regardless of case");
        assert_eq!(api.webhook_secret.expose_secret(), "s3cret");
        assert_eq!(api.clone_url, None);
        assert_eq!(config.discord.as_ref().map(|d| d.channel_id), Some(42));
        assert!(config.repository("acme/other").is_none());
        // Secrets never reach logs.
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn refuses_mistakes() {
        let check = |text: &str, needle: &str| {
            let e = format!("{:#}", Config::parse(text).expect_err("refused"));
            assert!(e.contains(needle), "`{e}` should mention `{needle}`");
        };
        check("public_uri = 'x'", "unknown field `public_uri`");
        check(
            "[[repository]]\nname = 'api'\nwebhook_secret = 's'",
            "owner/name",
        );
        check(
            "[[repository]]\nname = 'a/b'\nwebhook_secret = 's'\n[[repository]]\nname = 'a/b'\nwebhook_secret = 't'",
            "listed twice",
        );
        check("[[repository]]\nname = 'a/b'", "webhook_secret");
        check("[[operator]]\nname = 'al'\ntoken = 'short'", "at least 16");
        let schedule = |fields: &str| {
            format!(
                "[[repository]]\nname = 'a/b'\nwebhook_secret = 's'\n\
                 [[repository.schedule]]\nname = 'nightly'\n{fields}"
            )
        };
        check(
            &schedule("cron = '0 25 * * *'"),
            "[[repository.schedule]] `nightly` of a/b: `0 25 * * *` is not a cron expression",
        );
        check(
            &schedule("cron = '0 2 * * *'\ntimezone = 'Nowhere'"),
            "`Nowhere` is not a time zone",
        );
        check(
            &schedule("cron = '0 2 * * *'\nvars = { KILN_TAG = 'x' }"),
            "`KILN_TAG` is Kiln's own variable",
        );
    }

    #[test]
    fn secrets_are_refused_unless_allowed_on_the_branch() {
        let config = Config::parse(
            "[[repository]]\nname = 'acme/api'\nwebhook_secret = 's'\n\
             secrets = { DEPLOY = ['master'], NPM = ['release/**'] }",
        )
        .expect("valid");
        let repo = config.repository("acme/api").expect("repo");
        let plan = |secrets: &str| {
            let spec = format!("steps:\n  ship: {{ image: i, run: x, secrets: [{secrets}] }}\n");
            let trigger = kiln_shared::spec::Trigger {
                branch: "x",
                kind: kiln_shared::trigger::TriggerKind::Push,
                changed_paths: None,
                vars: &kiln_shared::vars::NONE,
            };
            Plan::from_spec_text(&spec, &trigger).expect("valid")
        };
        assert_eq!(repo.refuse_secrets(&plan("DEPLOY"), "master"), None);
        assert_eq!(repo.refuse_secrets(&plan("NPM"), "release/1/2"), None);
        let refused = |secrets: &str, branch: &str| {
            repo.refuse_secrets(&plan(secrets), branch)
                .expect("refused")
        };
        assert!(refused("DEPLOY", "feature").contains("not allow on branch `feature`"));
        assert!(refused("DEPLOY, NPM", "master").contains("`NPM`"));
        assert!(refused("OTHER", "master").contains("does not list for acme/api"));
    }

    #[test]
    fn permissions_name_users_roles_commands_and_repositories() {
        let config = Config::parse(
            "[[permission]]\nusers = ['slack:U1']\ncommands = ['cancel']\nrepos = ['acme/*']\n\
             [[permission]]\nusers = ['slack:U2']\ncommands = ['*']\n\
             [[permission]]\nroles = ['discord:77']\ncommands = ['retry']",
        )
        .expect("valid");
        let none: &[String] = &[];
        assert!(config.may("slack:U1", none, "cancel", "acme/api"));
        assert!(config.may("slack:U1", none, "cancel", "Acme/API"));
        assert!(!config.may("slack:U1", none, "cancel", "other/api"));
        assert!(!config.may("slack:U1", none, "build", "acme/api"));
        assert!(!config.may("discord:U1", none, "cancel", "acme/api"));
        assert!(config.may("slack:U2", none, "build", "any/where"));
        let moderator = ["discord:77".to_owned()];
        assert!(config.may("discord:5", &moderator, "retry", "acme/api"));
        assert!(!config.may("discord:5", &moderator, "cancel", "acme/api"));
        assert!(!config.may("discord:5", &["discord:78".to_owned()], "retry", "acme/api"));
        let refused = |text: &str| format!("{:#}", Config::parse(text).expect_err("refused"));
        assert!(
            refused("[[permission]]\nusers = ['slack:U1']\ncommands = ['deploy']")
                .contains("`deploy`, which is not a command")
        );
        assert!(
            refused("[[permission]]\nroles = ['admins']\ncommands = ['cancel']")
                .contains("write it discord:<role id>")
        );
        assert!(
            refused("[[permission]]\ncommands = ['cancel']").contains("neither users nor roles")
        );
        assert!(
            refused("[[permission]]\nusers = ['U1']\ncommands = ['cancel']")
                .contains("<front end>:<id>")
        );
    }

    #[test]
    fn promotions_have_defaults_and_sane_gates() {
        let config = Config::parse(
            "[[repository]]\nname = 'acme/api'\nwebhook_secret = 's'\n\
             [repository.promote]\napprovals = 1\napprovers = ['slack:U1']\napproval_ttl = '2h'",
        )
        .expect("valid");
        let promote = config
            .repository("acme/api")
            .and_then(|r| r.promote.as_ref())
            .expect("promote");
        assert_eq!(
            (promote.from.as_str(), promote.to.as_str()),
            ("master", "production")
        );
        assert_eq!(promote.approval_ttl, Duration::from_secs(7200));
        let refused = |promote: &str| {
            let text = format!(
                "[[repository]]\nname = 'acme/api'\nwebhook_secret = 's'\n[repository.promote]\n{promote}"
            );
            format!("{:#}", Config::parse(&text).expect_err("refused"))
        };
        assert!(refused("approvals = 2").contains("names no approvers"));
        assert!(refused("to = 'master'").contains("the same branch"));
        assert!(refused("approval_ttl = 'soon'").contains("approval_ttl"));
    }

    #[test]
    fn one_persons_accounts_are_one_person() {
        let config =
            Config::parse("[[person]]\nnames = ['ann', 'Ann Lee']\ndiscord = 42\nslack = 'U1'")
                .expect("valid");
        assert_eq!(config.person_key("discord:42"), "person:ann");
        assert_eq!(config.person_key("slack:U1"), "person:ann");
        assert_eq!(config.person_key("slack:U2"), "slack:U2");
        assert_eq!(config.person_key("operator:ann"), "operator:ann");
    }

    #[test]
    fn finds_operators_by_token() {
        let config = Config::parse(
            "[[operator]]\nname = 'alice'\ntoken = 'alice-token-0123456789'\n\
             [[operator]]\nname = 'bob'\ntoken = 'bob-token-0123456789ab'",
        )
        .expect("valid");
        let name = |token: &str| config.operator(token).map(|o| o.name.as_str());
        assert_eq!(name("bob-token-0123456789ab"), Some("bob"));
        assert_eq!(name("alice-token-0123456789"), Some("alice"));
        assert_eq!(name("alice-token-012345678"), None);
        assert_eq!(name(""), None);
        assert!(!format!("{config:?}").contains("alice-token"));
    }

    #[test]
    fn a_docker_pool_is_started_by_workers_of_a_platform_with_containers() {
        let pool = |extra: &str| {
            format!(
                "[[pool]]\nname = 'review'\nkind = 'docker'\nimage = 'i'\ncapacity = 1\n{extra}"
            )
        };
        let config = Config::parse(&pool("")).expect("valid");
        assert_eq!(config.pools[0].platform, Platform::LinuxAmd64);
        let config = Config::parse(&pool("platform = 'linux/arm64'")).expect("valid");
        assert_eq!(config.pools[0].platform, Platform::LinuxArm64);
        let e = format!(
            "{:#}",
            Config::parse(&pool("platform = 'macos/arm64'")).expect_err("refused")
        );
        assert!(
            e.contains("its platform macos/arm64 runs no containers"),
            "{e}"
        );
    }
}

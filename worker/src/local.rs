//! `kiln-worker run`: a repository's pipeline on this machine, with no broker, Redis or bot.
//!
//! The same planner, graph rules and runners as a build on the servers: tasks run in Docker
//! when an engine answers (else in the shell), each in a fresh copy of the working tree
//! (tracked and untracked files, ignored ones left out), as many at once as there are slots.
//! A task's log is shown when it fails; the exit status says whether the pipeline passed.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use kiln_shared::build::{BuildId, BuildStatus, TaskOutcome, TaskStatus};
use kiln_shared::plan::{Plan, PlannedTask};
use kiln_shared::platform::Platform;
use kiln_shared::spec::{Runner, SPEC_FILE, Trigger};
use kiln_shared::trigger::TriggerKind;
use kiln_shared::walk::Walk;
use kiln_shared::wire::{Artifact, BuildRef, JobRequested};
use tokio::process::Command;
use tokio::task::JoinSet;

use crate::artifacts::ArtifactStore;
use crate::blobs::Blobs;
use crate::cache::Caches;
use crate::docker::{DockerRunner, Registries};
use crate::lines::{LogLine, LogSink};
use crate::secrets::Secrets;
use crate::task::{self, Tools};

/// The most lines of a failed task's log printed; the rest is summarised.
const SHOWN_LOG_LINES: usize = 200;

/// How a local run is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// A directory in the repository to run; its top level holds `.kiln.yml`.
    pub dir: PathBuf,
    /// How many tasks run at once.
    pub slots: usize,
    /// Run every task in the shell, even when Docker answers.
    pub shell_only: bool,
    /// Where artifacts and caches are kept between runs.
    pub store_dir: PathBuf,
}

/// How a local run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub status: BuildStatus,
    /// Each task's end, in plan order; tasks this machine cannot run are skipped.
    pub tasks: Vec<(String, TaskStatus)>,
}

/// A task's log kept in memory, to show if it fails.
#[derive(Debug, Default)]
struct MemoryLog(Mutex<Vec<LogLine>>);

impl LogSink for MemoryLog {
    async fn write(&self, lines: &[LogLine]) {
        if let Ok(mut kept) = self.0.lock() {
            kept.extend_from_slice(lines);
        }
    }
}

/// Plans and runs the pipeline of the repository around `options.dir`.
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let root = git(&options.dir, &["rev-parse", "--show-toplevel"])
        .await
        .with_context(|| format!("{} is not in a git repository", options.dir.display()))?;
    let root = PathBuf::from(root);
    let text = tokio::fs::read_to_string(root.join(SPEC_FILE))
        .await
        .with_context(|| format!("cannot read {SPEC_FILE} in {}", root.display()))?;
    let branch = git(&root, &["branch", "--show-current"])
        .await
        .unwrap_or_default();
    let commit = git(&root, &["rev-parse", "HEAD"]).await.unwrap_or_default();
    let trigger = Trigger {
        branch: if branch.is_empty() { "local" } else { &branch },
        kind: TriggerKind::Push,
        changed_paths: None,
        vars: &kiln_shared::vars::NONE,
    };
    let plan = Plan::from_spec_text(&text, &trigger)?;

    let docker = if options.shell_only {
        None
    } else {
        match DockerRunner::connect("kiln-local", Registries::default(), None).await {
            Ok(docker) if docker.is_up().await => Some(docker),
            _ => None,
        }
    };
    let view = View::new(docker.is_some());
    let build = BuildRef {
        id: BuildId(0),
        repo: root
            .file_name()
            .map_or_else(|| "local".into(), |n| n.to_string_lossy().into_owned())
            .into(),
        branch: trigger.branch.to_owned().into(),
        commit: commit.into(),
    };
    let files = tracked_files(&root).await?;
    let scratch = tempfile::Builder::new()
        .prefix("kiln-run-")
        .tempdir()
        .context("cannot make a scratch directory")?;

    let store = options.store_dir.clone();
    let artifacts = ArtifactStore::Directory(Blobs::new(store.join("artifacts")));
    let caches = Caches::new(store.join("cache"));
    // On a laptop, secrets come from the environment: KILN_SECRET_<NAME>.
    let secrets = Secrets::new(None);
    let mut kept: BTreeMap<String, Vec<Artifact>> = BTreeMap::new();
    let mut statuses: BTreeMap<String, TaskStatus> = BTreeMap::new();
    let mut walk = Walk::new(&plan);
    let mut ready: Vec<(&PlannedTask, u32)> = plan.roots().map(|t| (t, 1)).collect();
    let mut running = JoinSet::new();
    loop {
        while running.len() < options.slots.max(1) && !ready.is_empty() {
            let (task, attempt) = ready.remove(0);
            if let Some(reason) = cannot_run(task, docker.is_some()) {
                view.skipped(&task.name, &reason);
                statuses.insert(task.name.clone(), TaskStatus::Skipped);
                skip_rest(&mut walk, &view, &mut statuses, &task.name);
                continue;
            }
            let inputs = task
                .needs
                .iter()
                .filter_map(|need| kept.get(need))
                .flatten()
                .cloned()
                .collect();
            let job = JobRequested::for_task(&build, TriggerKind::Push, "", task, attempt, inputs);
            let workdir = scratch.path().join(format!("{}-{attempt}", task.name));
            copy_files(&root, &files, &workdir).await?;
            let (docker, artifacts, caches, secrets) = (
                docker.clone(),
                artifacts.clone(),
                caches.clone(),
                secrets.clone(),
            );
            let bar = view.started(&task.name, attempt);
            running.spawn(async move {
                let started = Instant::now();
                let log = MemoryLog::default();
                // The developer's own machine and repository: tasks run as they would.
                let sandbox = crate::shell::Sandbox::none();
                let tools = Tools {
                    docker: docker.as_ref(),
                    artifacts: &artifacts,
                    caches: &caches,
                    secrets: &secrets,
                    sandbox: &sandbox,
                    shell_without_docker: true,
                };
                let ran = task::run(tools, &job, &workdir, &log).await;
                let _ = tokio::fs::remove_dir_all(&workdir).await;
                let lines = log.0.into_inner().unwrap_or_default();
                (job.task, attempt, ran, lines, started.elapsed(), bar)
            });
        }
        let Some(ended) = running.join_next().await else {
            break;
        };
        let (name, attempt, ran, lines, took, bar) = ended.context("a task panicked")?;
        let outcome = ran.outcome;
        let Some(task) = plan.task(&name) else {
            continue;
        };
        view.ended(bar, &name, &outcome, took);
        if outcome != TaskOutcome::Passed {
            view.log(&name, &lines);
        }
        if task.retries(&outcome, attempt) {
            ready.push((task, attempt + 1));
            continue;
        }
        statuses.insert(name.clone(), outcome.status());
        kept.insert(name.clone(), ran.artifacts);
        let unblocks = task.unblocks(&outcome);
        let advance = walk.finish(&name, unblocks);
        ready.extend(advance.ready.into_iter().map(|t| (t, 1)));
        for skipped in advance.skipped {
            view.skipped(&skipped.name, &format!("`{name}` did not pass"));
            statuses.insert(skipped.name.clone(), TaskStatus::Skipped);
        }
    }

    let tasks: Vec<(String, TaskStatus)> = plan
        .tasks
        .iter()
        .map(|t| {
            let status = statuses
                .get(&t.name)
                .copied()
                .unwrap_or(TaskStatus::Skipped);
            (t.name.clone(), status)
        })
        .collect();
    let status = BuildStatus::from_finished_tasks(plan.tasks.iter().zip(&tasks).map(
        |(planned, (_, status))| match status {
            TaskStatus::Failed | TaskStatus::Errored if planned.allow_failure => TaskStatus::Passed,
            other => *other,
        },
    ));
    view.summary(&tasks, status);
    Ok(Report { status, tasks })
}

/// Marks what depends on a task that could not run as skipped.
fn skip_rest(
    walk: &mut Walk,
    view: &View,
    statuses: &mut BTreeMap<String, TaskStatus>,
    name: &str,
) {
    for skipped in walk.finish(name, false).skipped {
        view.skipped(&skipped.name, &format!("`{name}` did not run"));
        statuses.insert(skipped.name.clone(), TaskStatus::Skipped);
    }
}

/// Why this machine cannot run `task`, if it cannot.
fn cannot_run(task: &PlannedTask, have_docker: bool) -> Option<String> {
    let native = Platform::native();
    let emulated = have_docker && task.runner == Runner::Docker && task.platform.has_containers();
    (Some(task.platform) != native && !emulated)
        .then(|| format!("needs a {} machine", task.platform))
}

async fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .await
        .context("cannot run git")?;
    if !output.status.success() {
        bail!("{}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The working tree's files: tracked and untracked, not ignored.
async fn tracked_files(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let output = Command::new("git")
        .arg("-C")
        .arg(root)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output()
        .await
        .context("cannot run git")?;
    if !output.status.success() {
        bail!(
            "git ls-files failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output
        .stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
        .collect())
}

/// Copies `files` of `root` into a fresh `dest`; files deleted from the tree are left out.
async fn copy_files(root: &Path, files: &[PathBuf], dest: &Path) -> anyhow::Result<()> {
    for file in files {
        let from = root.join(file);
        if !tokio::fs::try_exists(&from).await.unwrap_or(false) {
            continue;
        }
        let to = dest.join(file);
        if let Some(parent) = to.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::copy(&from, &to)
            .await
            .with_context(|| format!("cannot copy {}", from.display()))?;
    }
    tokio::fs::create_dir_all(dest).await?;
    Ok(())
}

/// What the person at the terminal sees: live spinners on a terminal, plain lines otherwise.
struct View {
    bars: Option<MultiProgress>,
}

impl View {
    fn new(docker: bool) -> Self {
        let bars = std::io::stderr().is_terminal().then(MultiProgress::new);
        let view = Self { bars };
        view.say(if docker {
            "running in Docker".to_owned()
        } else {
            "no Docker engine: running every task in the shell".to_owned()
        });
        view
    }

    fn say(&self, line: String) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    fn started(&self, name: &str, attempt: u32) -> Option<ProgressBar> {
        let again = if attempt > 1 {
            format!(" (attempt {attempt})")
        } else {
            String::new()
        };
        match &self.bars {
            Some(bars) => {
                let bar = bars.add(ProgressBar::new_spinner());
                if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
                    bar.set_style(style);
                }
                bar.set_message(format!("{name}{again}"));
                bar.enable_steady_tick(Duration::from_millis(120));
                Some(bar)
            }
            None => {
                eprintln!("▶ {name}{again} started");
                None
            }
        }
    }

    fn ended(&self, bar: Option<ProgressBar>, name: &str, outcome: &TaskOutcome, took: Duration) {
        let mark = if *outcome == TaskOutcome::Passed {
            '✔'
        } else {
            '✘'
        };
        let line = format!("{mark} {name} {outcome} in {:.1}s", took.as_secs_f64());
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        self.say(line);
    }

    fn skipped(&self, name: &str, why: &str) {
        self.say(format!("- {name} skipped: {why}"));
    }

    fn log(&self, name: &str, lines: &[LogLine]) {
        let shown = &lines[lines.len().saturating_sub(SHOWN_LOG_LINES)..];
        let mut text = format!("── log of {name}");
        if shown.len() < lines.len() {
            text.push_str(&format!(" (last {} of {} lines)", shown.len(), lines.len()));
        }
        text.push_str(" ──");
        for line in shown {
            text.push_str("\n  ");
            text.push_str(&kiln_shared::log_line::shown(line.fd.as_str(), &line.text));
        }
        self.say(text);
    }

    fn summary(&self, tasks: &[(String, TaskStatus)], status: BuildStatus) {
        let mut text = format!("pipeline {status}");
        for (name, task) in tasks {
            text.push_str(&format!("\n  {task:<8} {name}"));
        }
        self.say(text);
    }
}

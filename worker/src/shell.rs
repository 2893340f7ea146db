//! The shell runner: a task's commands as plain processes on the worker's own system, for
//! platforms without containers (Windows, macOS) and for `kiln-worker run` without Docker.
//!
//! The task runs in its fresh work directory, with a clean environment (the variables the
//! task sets, Kiln's, and the few a system needs to find programs), in a process group of
//! its own (on Windows, a Job Object: [`job_object`]). When it ends, times out or is
//! cancelled, the whole group is killed: nothing it started outlives it.

#[cfg(windows)]
mod job_object;
#[cfg(target_os = "linux")]
mod lifeline;
#[cfg(target_os = "linux")]
mod parent_death;
mod sandbox;

#[cfg(target_os = "linux")]
pub use lifeline::end_leftovers as end_leftover_sandboxes;
use sandbox::Confined;
pub use sandbox::{Confinement, Sandbox};

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use kiln_shared::build::TaskOutcome;
use kiln_shared::wire::JobRequested;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use crate::lines::{Batches, Fd, LineSplitter, LogSink, pipelined};

/// Variables passed through from the worker's environment: without them programs are not
/// found or temporary files have nowhere to go. Everything else is left behind.
const KEPT_VARIABLES: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "TERM", // Unix
    "SystemRoot",
    "ComSpec",
    "PATHEXT",
    "TEMP",
    "TMP",
    "USERPROFILE",
    "windir", // Windows
];

/// Runs `job`'s commands in `workdir`, streaming lines to `log`.
pub async fn run(
    job: &JobRequested,
    workdir: &Path,
    sandbox: &Sandbox,
    log: &impl LogSink,
) -> TaskOutcome {
    if let Err(error) = sandbox.hand_over(workdir).await {
        return TaskOutcome::Errored {
            reason: format!("cannot give the work directory to the task's user: {error}"),
        };
    }
    // The lifeline, if any, is held until the task has ended: dropping it kills the sandbox.
    let Confined {
        mut command,
        lifeline: _lifeline,
    } = match script(job, workdir, sandbox).await {
        Ok(confined) => confined,
        Err(error) => {
            return TaskOutcome::Errored {
                reason: format!("cannot prepare the task's script: {error}"),
            };
        }
    };
    command
        .current_dir(workdir)
        .env_clear()
        .envs(
            KEPT_VARIABLES
                .iter()
                .filter_map(|k| Some((*k, std::env::var_os(k)?))),
        )
        .envs(sandbox.environment())
        .envs(job.environment())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    command.process_group(0);
    let child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            return TaskOutcome::Errored {
                reason: format!("cannot start the shell: {error}"),
            };
        }
    };
    let tree = match ProcessTree::of(&child) {
        Ok(tree) => tree,
        Err(error) => {
            return TaskOutcome::Errored {
                reason: format!("cannot hold the task's processes together: {error}"),
            };
        }
    };
    let timeout = Duration::from_secs(job.timeout_secs);
    let outcome = match follow(child, &tree, log, timeout).await {
        Ok(Ok(0)) => TaskOutcome::Passed,
        Ok(Ok(code)) => TaskOutcome::Failed { exit_code: code },
        Ok(Err(error)) => TaskOutcome::Errored {
            reason: format!("lost the task's process: {error}"),
        },
        Err(_elapsed) => TaskOutcome::TimedOut {
            after_secs: job.timeout_secs,
        },
    };
    drop(tree);
    outcome
}

/// Streams the child's output until it exits, then what is left in the pipes, or until
/// `timeout`; what was read by then is stored either way. Returns its exit code (128 +
/// signal when a signal ended it, as shells report it).
async fn follow(
    child: Child,
    tree: &ProcessTree,
    log: &impl LogSink,
    timeout: Duration,
) -> Result<std::io::Result<i64>, tokio::time::error::Elapsed> {
    pipelined(log, async |batches| {
        tokio::time::timeout(timeout, read_until_exit(child, tree, batches)).await
    })
    .await
}

async fn read_until_exit(
    mut child: Child,
    tree: &ProcessTree,
    batches: Batches,
) -> std::io::Result<i64> {
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let mut splitter = LineSplitter::default();
    let mut lines = Vec::new();
    let (mut out_buf, mut err_buf) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    let mut status = None;
    while out.is_some() || err.is_some() {
        tokio::select! {
            read = read_some(&mut out, &mut out_buf) => {
                match read? {
                    0 => out = None,
                    n => splitter.push(Fd::Out, &out_buf[..n], &mut lines),
                }
            }
            read = read_some(&mut err, &mut err_buf) => {
                match read? {
                    0 => err = None,
                    n => splitter.push(Fd::Err, &err_buf[..n], &mut lines),
                }
            }
            exited = child.wait(), if status.is_none() => {
                status = Some(exited?);
                // What the commands left running in the background would hold the pipes
                // open forever: the task is over, so is its process group.
                tree.kill();
            }
        }
        batches.send(&mut lines).await;
    }
    splitter.finish(&mut lines);
    batches.send(&mut lines).await;
    let status = match status {
        Some(status) => status,
        None => child.wait().await?,
    };
    Ok(exit_code(status))
}

async fn read_some<R: AsyncReadExt + Unpin>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match pipe {
        Some(pipe) => pipe.read(buf).await,
        None => std::future::pending().await,
    }
}

fn exit_code(status: std::process::ExitStatus) -> i64 {
    #[cfg(unix)]
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        return 128 + i64::from(signal);
    }
    status.code().map_or(-1, i64::from)
}

/// The task's script: `sh` with `set -e` on Unix; a `.cmd` file beside the work directory
/// on Windows, stopping at the first command that fails.
async fn script(
    job: &JobRequested,
    workdir: &Path,
    sandbox: &Sandbox,
) -> std::io::Result<Confined> {
    if cfg!(windows) {
        let mut text = String::from("@echo off\r\n");
        for line in &job.commands {
            text.push_str(line);
            text.push_str("\r\nif errorlevel 1 exit /b %errorlevel%\r\n");
        }
        let file = workdir.with_extension("cmd");
        tokio::fs::write(&file, text).await?;
        let mut command = Command::new("cmd");
        command.arg("/D").arg("/C").arg(file);
        #[cfg(windows)]
        command.creation_flags(job_object::CREATION_FLAGS);
        Ok(Confined {
            command,
            lifeline: None,
        })
    } else {
        let mut text = String::from("set -e\n");
        for line in &job.commands {
            text.push_str(line);
            text.push('\n');
        }
        // By its path: were `sh` looked up in the PATH the task sets, the standard library
        // would fork the whole worker (copying its page tables) instead of spawning.
        sandbox.command("/bin/sh", &["-c", &text], workdir)
    }
}

/// A task's process and everything it started; killed when dropped.
#[cfg(unix)]
struct ProcessTree(Option<u32>);

/// A task's process and everything it started; killed when dropped.
#[cfg(windows)]
struct ProcessTree(job_object::JobObject);

impl ProcessTree {
    /// The processes of `child`, the task's process just spawned (on Windows, suspended: it
    /// runs once it is held).
    fn of(child: &Child) -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            Ok(Self(child.id()))
        }
        #[cfg(windows)]
        {
            let gone = || std::io::Error::other("the task's process is gone");
            let handle = child.raw_handle().ok_or_else(gone)?;
            let pid = child.id().ok_or_else(gone)?;
            job_object::JobObject::hold(handle, pid).map(Self)
        }
    }

    fn kill(&self) {
        #[cfg(unix)]
        {
            let Some(pid) = self.0 else { return };
            use nix::sys::signal::{Signal, killpg};
            use nix::unistd::Pid;
            if let Ok(pid) = i32::try_from(pid) {
                // The group may be gone already; that is the goal, not an error.
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        #[cfg(windows)]
        self.0.kill();
    }
}

impl Drop for ProcessTree {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use kiln_shared::build::BuildId;
    use kiln_shared::platform::Platform;
    use kiln_shared::spec::Runner;
    use kiln_shared::wire::BuildRef;

    use super::*;
    use crate::lines::LogLine;

    #[derive(Default)]
    struct Lines(Mutex<Vec<LogLine>>);

    impl LogSink for Lines {
        async fn write(&self, lines: &[LogLine]) {
            self.0.lock().expect("lock").extend_from_slice(lines);
        }
    }

    impl Lines {
        fn texts(&self, fd: Fd) -> Vec<String> {
            let lines = self.0.lock().expect("lock");
            lines
                .iter()
                .filter(|l| l.fd == fd)
                .map(|l| l.text.clone())
                .collect()
        }
    }

    fn job(commands: &[&str], timeout_secs: u64) -> JobRequested {
        JobRequested {
            build: BuildRef {
                id: BuildId(1),
                repo: "acme/api".into(),
                branch: "master".into(),
                commit: "abc".into(),
            },
            event: Default::default(),
            request: None,
            clone_url: String::new(),
            task: "t".into(),
            step: "t".into(),
            attempt: 1,
            platform: Platform::LinuxAmd64,
            runner: Runner::Shell,
            image: None,
            pull: Default::default(),
            network: Default::default(),
            commands: commands.iter().map(|c| (*c).to_owned()).collect(),
            env: BTreeMap::from([("MINE".to_owned(), "yes".to_owned())]),
            timeout_secs,
            services: Vec::new(),
            build_image: None,
            artifacts: Vec::new(),
            cache: None,
            inputs: Vec::new(),
            secrets: Vec::new(),
            capabilities: Vec::new(),
            read_only: false,
            priority: Default::default(),
            merge_with: None,
            key_tag: None,
        }
    }

    fn alive(pid: &str) -> bool {
        // A zombie is dead: its process is gone, only its exit status waits to be read.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.split_whitespace().nth(2).is_none_or(|s| s != "Z"))
    }

    /// How long a killed process may take to be gone.
    const EXIT_TIMEOUT: Duration = Duration::from_secs(2);

    /// Whether the process `pid` is gone within [`EXIT_TIMEOUT`].
    async fn gone(pid: &str) -> bool {
        let mut every = tokio::time::interval(Duration::from_millis(20));
        tokio::time::timeout(EXIT_TIMEOUT, async {
            while alive(pid) {
                every.tick().await;
            }
        })
        .await
        .is_ok()
    }

    #[tokio::test]
    async fn runs_in_the_work_directory_with_a_clean_environment() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("input"), "from the checkout\n").expect("write");
        // Cargo sets CARGO for tests: the clean environment must leave it behind.
        let lines = Lines::default();
        let outcome = run(
            &job(
                &[
                    "cat input",
                    "echo \"mine=$MINE task=$KILN_TASK home=${HOME:+set} secret=${CARGO:-unset}\"",
                    "echo oops >&2",
                    "exit 4",
                    "echo never",
                ],
                30,
            ),
            dir.path(),
            &Sandbox::none(),
            &lines,
        )
        .await;
        assert_eq!(outcome, TaskOutcome::Failed { exit_code: 4 });
        assert_eq!(
            lines.texts(Fd::Out),
            ["from the checkout", "mine=yes task=t home=set secret=unset"]
        );
        assert_eq!(lines.texts(Fd::Err), ["oops"]);
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_tree() {
        let dir = tempfile::tempdir().expect("dir");
        let lines = Lines::default();
        let outcome = run(
            &job(&["sleep 300 & echo $! > background.pid", "sleep 300"], 1),
            dir.path(),
            &Sandbox::none(),
            &lines,
        )
        .await;
        assert_eq!(outcome, TaskOutcome::TimedOut { after_secs: 1 });
        let pid = std::fs::read_to_string(dir.path().join("background.pid")).expect("pid file");
        let pid = pid.trim();
        assert!(
            gone(pid).await,
            "the background process {pid} outlived its task"
        );
    }

    #[tokio::test]
    async fn what_a_passing_task_leaves_running_is_stopped() {
        let dir = tempfile::tempdir().expect("dir");
        let lines = Lines::default();
        let outcome = run(
            &job(&["sleep 300 & echo $! > background.pid", "echo done"], 30),
            dir.path(),
            &Sandbox::none(),
            &lines,
        )
        .await;
        assert_eq!(outcome, TaskOutcome::Passed);
        assert_eq!(lines.texts(Fd::Out), ["done"]);
        let pid = std::fs::read_to_string(dir.path().join("background.pid")).expect("pid file");
        assert!(
            gone(pid.trim()).await,
            "the background process outlived its task"
        );
    }
}

//! A Windows worker, run for real under Wine: `kiln-worker.exe` built for
//! `x86_64-pc-windows-gnu` from the current sources, in a Wine prefix of its own, taking
//! `windows/amd64` jobs from the same broker and Redis as the rest of the test.
//!
//! `deploy/dev/services` installs Wine and MinGW and boots a template prefix once (slow the
//! first time). Each [`WineWorker`] gets a copy of that prefix made of hard links (fast; Wine
//! writes its registry to a new file and renames it, so the template is never changed), and
//! so a wineserver of its own, which it ends with the worker.
//!
//! Two things from `deploy/dev/wine/` sit beside the `.exe`: `bcryptprimitives.dll` (Wine 8
//! lacks it, and Rust's standard library needs it) and a `git.exe` that hands each git
//! command to Linux's git through [`GitRelay`] (there is no Git for Windows under Wine).

mod git_relay;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

pub use git_relay::GitRelay;

use crate::{E2E_TIMEOUT, Services, wait_for};

/// The Rust target of the Windows worker.
pub const WINDOWS_TARGET: &str = "x86_64-pc-windows-gnu";

/// The MinGW compiler the shims are built with.
const MINGW_GCC: &str = "x86_64-w64-mingw32-gcc";

/// How long building the Windows worker may take: a first build from nothing on a loaded
/// two-core machine (about 4 minutes here); later ones build only what changed.
const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);

const SET_UP: &str = "run `deploy/dev/services` (the README's test command does): it installs \
                      Wine and MinGW and prepares the Wine prefix";

/// Wine as `deploy/dev/services` left it: the programs, and the template prefix.
#[derive(Debug, Clone)]
pub struct Wine {
    /// The prefix booted once, which every worker's own prefix is copied from.
    template: PathBuf,
}

impl Wine {
    /// Wine, MinGW and the template prefix (`KILN_WINE_PREFIX`, by default
    /// `/var/tmp/kiln/wine/prefix`), each checked: a missing one fails the test, it never
    /// skips it.
    pub fn require() -> Self {
        for program in ["wine", "wineserver", MINGW_GCC] {
            let found = std::process::Command::new(program)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            assert!(
                found.is_ok_and(|s| s.success()),
                "`{program} --version` does not run: {SET_UP}"
            );
        }
        let template = PathBuf::from(
            std::env::var("KILN_WINE_PREFIX")
                .unwrap_or_else(|_| "/var/tmp/kiln/wine/prefix".into()),
        );
        assert!(
            template.join("system.reg").exists(),
            "no booted Wine prefix at {}: {SET_UP}",
            template.display()
        );
        Self { template }
    }

    /// Builds `kiln-worker.exe` from the current sources (cargo builds only what changed)
    /// in a target directory of its own, `<target>/wine`, so it never waits on the lock of
    /// the one `cargo test` uses; puts the shims beside it, and returns its path.
    pub async fn build_worker(&self) -> PathBuf {
        let target_dir = tests_target_dir().join("wine");
        let workspace = workspace_dir();
        let mut cargo =
            std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()));
        cargo
            .current_dir(&workspace)
            .args([
                "build",
                "--locked",
                "-p",
                "kiln-worker",
                "--target",
                WINDOWS_TARGET,
            ])
            .arg("--target-dir")
            .arg(&target_dir)
            // Not the tests' own target directory (cargo test sets it for build scripts).
            .env_remove("CARGO_TARGET_DIR");
        let status = run_bounded(cargo, BUILD_TIMEOUT).await;
        assert!(
            status.success(),
            "building kiln-worker for {WINDOWS_TARGET} failed ({status}); `rustup target add \
             {WINDOWS_TARGET}` and MinGW are needed: {SET_UP}"
        );
        let bin = target_dir.join(WINDOWS_TARGET).join("debug");
        let shims = workspace.join("deploy/dev/wine");
        let dll = bin.join("bcryptprimitives.dll");
        let git = bin.join("git.exe");
        let shim_builds: [&[&str]; 2] = [
            &["-shared", "-O2", "-o", path_str(&dll), "bcryptprimitives.c"],
            &[
                "-O2",
                "-municode",
                "-o",
                path_str(&git),
                "git-relay.c",
                "-lws2_32",
            ],
        ];
        for args in shim_builds {
            let mut command = std::process::Command::new(MINGW_GCC);
            command.current_dir(&shims).args(args);
            let status = run_bounded(command, E2E_TIMEOUT).await;
            assert!(status.success(), "{MINGW_GCC} {args:?} failed ({status})");
        }
        bin.join("kiln-worker.exe")
    }
}

/// Runs `command`, killing it (by its handle) if it takes longer than `limit`.
async fn run_bounded(command: std::process::Command, limit: Duration) -> std::process::ExitStatus {
    let shown = format!("{command:?}");
    let mut command = tokio::process::Command::from(command);
    let mut child = command
        .kill_on_drop(true)
        .spawn()
        .expect("the command starts");
    tokio::time::timeout(limit, child.wait())
        .await
        .unwrap_or_else(|_| panic!("{shown} took longer than {limit:?}"))
        .expect("wait")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// The workspace's root.
fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

/// The target directory the running test was built in (`<target>/debug/deps/<test>`).
fn tests_target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running binary");
    exe.ancestors()
        .find(|dir| dir.join("debug").is_dir() && exe.starts_with(dir.join("debug")))
        .expect("the test runs from <target>/debug")
        .to_path_buf()
}

/// The Windows path of the Unix path `path`: Wine's drive Z: is `/`.
pub fn windows_path(path: &Path) -> String {
    format!("Z:{}", path_str(path).replace('/', "\\"))
}

/// `kiln-worker.exe --platform windows/amd64` under Wine, in a prefix of its own, with its
/// git relay.
#[derive(Debug)]
pub struct WineWorker {
    pub name: String,
    child: Option<Child>,
    /// Redis, and the hash where the worker says it is present.
    redis: redis::aio::MultiplexedConnection,
    workers_key: String,
    /// The prefix, the worker's state and store, and its log, all under one directory:
    /// every process of this worker has its Unix working directory in it.
    root: tempfile::TempDir,
    relay: tokio::task::JoinHandle<()>,
}

impl WineWorker {
    /// Starts `exe` (from [`Wine::build_worker`]) as a `windows/amd64` worker of `slots`
    /// slots under `prefix`; returns once it says in Redis that it is present.
    pub async fn start(
        wine: &Wine,
        exe: &Path,
        services: &Services,
        prefix: &str,
        slots: usize,
    ) -> Self {
        let parent = wine
            .template
            .parent()
            .expect("the prefix is in a directory");
        // Beside the template, so the copy's hard links stay on one file system.
        let root = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(parent)
            .expect("a directory for the worker");
        let wineprefix = root.path().join("prefix");
        let copied = std::process::Command::new("cp")
            .arg("-al")
            .arg(&wine.template)
            .arg(&wineprefix)
            .status()
            .expect("cp runs");
        assert!(copied.success(), "copying the Wine prefix failed");
        let state = root.path().join("state");
        std::fs::create_dir_all(&state).expect("the worker's state directory");

        let (relay_addr, relay) = GitRelay::start(wineprefix.join("dosdevices")).await;
        let name = format!("{prefix}-windows");
        let log = std::fs::File::create(root.path().join("kiln-worker.log")).expect("log file");
        let child = Command::new("wine")
            .arg(exe)
            .current_dir(&state)
            .env("WINEPREFIX", &wineprefix)
            .env("WINEDEBUG", "-all")
            .env("KILN_AMQP_URL", &services.amqp_url)
            .env("KILN_REDIS_URL", &services.redis_url)
            .env("KILN_PREFIX", prefix)
            .env("KILN_PLATFORM", "windows/amd64")
            .env("KILN_SLOTS", slots.to_string())
            .env("KILN_WORKER_NAME", &name)
            .env("KILN_STATE_DIR", windows_path(&state))
            .env("KILN_STORE_DIR", windows_path(&root.path().join("store")))
            .env("KILN_WINE_GIT_RELAY", relay_addr.to_string())
            .env(
                "RUST_LOG",
                std::env::var("KILN_PROCESS_LOG").unwrap_or_else(|_| "warn".into()),
            )
            // The worker runs shell tasks only; it must not find Linux's Docker.
            .env_remove("DOCKER_HOST")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start wine");
        let redis = redis::Client::open(services.redis_url.as_str())
            .expect("Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to Redis");
        let worker = Self {
            name,
            child: Some(child),
            redis,
            workers_key: kiln_shared::keys::Keys::new(prefix).workers(),
            root,
            relay,
        };
        wait_for(
            &format!(
                "the Windows worker to say it is present (its log: {})",
                worker.log_path().display()
            ),
            E2E_TIMEOUT,
            || async { worker.present().await.then_some(()) },
        )
        .await;
        worker
    }

    /// Whether the worker's heartbeat is in Redis: from its start until it stops cleanly.
    async fn present(&self) -> bool {
        redis::cmd("HEXISTS")
            .arg(&self.workers_key)
            .arg(&self.name)
            .query_async(&mut self.redis.clone())
            .await
            .unwrap_or(false)
    }

    /// The worker's log file.
    pub fn log_path(&self) -> PathBuf {
        self.root.path().join("kiln-worker.log")
    }

    /// The worker's process id (the Wine process that runs `kiln-worker.exe`).
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref()?.id()
    }

    /// The command lines of the processes of this worker's Wine, its wineserver included:
    /// every process whose working directory is in the worker's directory, or whose
    /// environment names its prefix.
    pub fn processes(&self) -> Vec<(u32, String)> {
        let root = self.root.path();
        let wineprefix = format!("WINEPREFIX={}", root.join("prefix").display());
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let proc = entry.path();
            let stat = std::fs::read_to_string(proc.join("stat")).unwrap_or_default();
            // A zombie is dead: only its exit status waits to be read.
            if stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
            {
                continue;
            }
            let in_root =
                std::fs::read_link(proc.join("cwd")).is_ok_and(|cwd| cwd.starts_with(root));
            let environ = std::fs::read(proc.join("environ")).unwrap_or_default();
            let in_prefix = environ
                .split(|b| *b == 0)
                .any(|var| var == wineprefix.as_bytes());
            if in_root || in_prefix {
                let cmdline = std::fs::read(proc.join("cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                found.push((pid, cmdline.trim().to_owned()));
            }
        }
        found
    }

    /// The processes of [`Self::processes`] whose command line holds `text` (case
    /// insensitive).
    pub fn processes_with(&self, text: &str) -> Vec<(u32, String)> {
        let text = text.to_lowercase();
        self.processes()
            .into_iter()
            .filter(|(_, cmdline)| cmdline.to_lowercase().contains(&text))
            .collect()
    }

    /// Asks the worker to stop as Ctrl-C would (Wine turns SIGINT into a console Ctrl-C
    /// event), checks that it exits cleanly (status 0, its heartbeat taken back), then ends this prefix's wineserver and checks
    /// that no process of it is left.
    pub async fn stop(mut self) {
        let mut child = self.child.take().expect("running");
        if let Some(pid) = child.id() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid"));
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
        }
        let status = tokio::time::timeout(E2E_TIMEOUT, child.wait())
            .await
            .unwrap_or_else(|_| panic!("the Windows worker stops within {E2E_TIMEOUT:?}"))
            .expect("wait");
        assert!(
            status.success(),
            "the Windows worker ended with {status} (its log: {})",
            self.log_path().display()
        );
        assert!(
            !self.present().await,
            "a worker that stopped cleanly takes its heartbeat back"
        );
        self.end_wineserver();
        wait_for(
            "every process of the worker's Wine prefix to end",
            E2E_TIMEOUT,
            || async { self.processes().is_empty().then_some(()) },
        )
        .await;
    }

    /// `wineserver -k` on this worker's prefix: it kills what is left of it, and ends.
    fn end_wineserver(&self) {
        let _ = std::process::Command::new("wineserver")
            .arg("-k")
            .env("WINEPREFIX", self.root.path().join("prefix"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for WineWorker {
    fn drop(&mut self) {
        self.relay.abort();
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
        }
        self.end_wineserver();
        if std::env::var_os("KILN_KEEP").is_some() {
            let kept = std::mem::replace(&mut self.root, tempfile::tempdir().expect("temp dir"));
            eprintln!(
                "kept the Windows worker's directory: {}",
                kept.keep().display()
            );
        }
    }
}

//! What keeps a `runner: shell` task on Linux away from its worker: an unprivileged user of
//! its own (`kiln-task` by default) when the worker is root, and, where bubblewrap (`bwrap`)
//! makes sandboxes, a private view of the system in which only the task's work directory is
//! writable and the worker's state, store, secrets and credentials do not exist. Elsewhere
//! (macOS, Windows, `kiln-worker run`) a task runs as the worker's user.

use std::io;
use std::path::{Path, PathBuf};

use tokio::process::Command;

#[cfg(target_os = "linux")]
use super::lifeline::Lifeline;

/// Elsewhere there is no sandbox, so no lifeline.
#[cfg(not(target_os = "linux"))]
#[derive(Debug)]
pub enum Lifeline {}

#[cfg(not(target_os = "linux"))]
impl Lifeline {
    fn watch(_: &mut Command) -> io::Result<Self> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "sandboxes are made on Linux only",
        ))
    }
}

/// The directories of the system a sandboxed task sees, read-only.
const SYSTEM_DIRS: &[&str] = &["/usr", "/etc", "/opt"];

/// Top-level names that are links into `/usr` on a merged system, directories elsewhere.
const USR_LINKS: &[&str] = &["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

/// How shell tasks are confined on this worker.
#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    /// The user tasks run as, when the worker may switch to it.
    user: Option<TaskUser>,
    /// bubblewrap, when it makes sandboxes here.
    bwrap: Option<PathBuf>,
    /// The worker's own paths, hidden from a sandboxed task if they lie in what it sees.
    hidden: Vec<PathBuf>,
    /// Directories a sandboxed task may use beside its work directory.
    shared: Vec<PathBuf>,
}

/// A confined command, and what must stay open while it runs.
#[derive(Debug)]
pub struct Confined {
    pub command: Command,
    /// A sandboxed command's lifeline (`super::lifeline`), to hold until it has ended.
    pub lifeline: Option<Lifeline>,
}

/// What a worker tells [`Sandbox::prepare`].
#[derive(Debug, Clone, Default)]
pub struct Confinement {
    /// The user tasks run as when the worker is root; as the worker's own when none.
    pub task_user: Option<String>,
    /// The worker's own paths (state, store, secrets, credentials).
    pub hidden: Vec<PathBuf>,
    /// Directories tasks may read and write beside their work directories.
    pub shared: Vec<PathBuf>,
    /// Where the work directories are: the task's user must be able to reach them.
    pub work_root: PathBuf,
}

/// An unprivileged user tasks run as.
#[derive(Debug, Clone)]
struct TaskUser {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

impl Sandbox {
    /// Tasks run as the worker's own user, in no sandbox: `kiln-worker run` on a
    /// developer's machine, and platforms other than Linux.
    pub fn none() -> Self {
        Self::default()
    }

    /// The confinement a worker gives its shell tasks: as the task user when the worker is
    /// root (a missing user is an error: tasks would otherwise run as root), in a bubblewrap
    /// sandbox that hides the worker's paths when `bwrap` works here.
    pub async fn prepare(confinement: Confinement) -> anyhow::Result<Self> {
        if !cfg!(target_os = "linux") {
            return Ok(Self::none());
        }
        let user = match &confinement.task_user {
            Some(name) if is_root() => Some(TaskUser::named(name)?),
            _ => None,
        };
        if let Some(user) = &user
            && let Some(closed) = closed_ancestor(&confinement.work_root, user.uid)
        {
            tracing::warn!(
                "shell tasks run as {}, who cannot reach the work directories in {}: {} lets \
                 no other user in (chmod o+x it, or choose another --state-dir)",
                user.name,
                confinement.work_root.display(),
                closed.display()
            );
        }
        let absolute =
            |paths: Vec<PathBuf>| paths.into_iter().filter(|p| p.is_absolute()).collect();
        let mut sandbox = Self {
            user,
            bwrap: None,
            hidden: absolute(confinement.hidden),
            shared: absolute(confinement.shared),
        };
        sandbox.bwrap = sandbox.working_bwrap().await;
        if sandbox.bwrap.is_none() {
            let who = sandbox
                .user
                .as_ref()
                .map_or("the worker's user", |u| u.name.as_str());
            tracing::warn!(
                "bubblewrap (bwrap) makes no sandbox here: shell tasks may read whatever {who} \
                 may (install Debian's `bubblewrap`)"
            );
        }
        Ok(sandbox)
    }

    /// The task user's ids, who should own checkouts, when it is not the worker's user.
    pub fn owner(&self) -> Option<(u32, u32)> {
        self.user.as_ref().map(|user| (user.uid, user.gid))
    }

    /// In words, for the worker's start-up log.
    pub fn describe(&self) -> String {
        let user = match &self.user {
            Some(user) => format!("as {}", user.name),
            None => "as the worker's user".to_owned(),
        };
        let sandbox = match &self.bwrap {
            Some(_) => ", in a bubblewrap sandbox",
            None => "",
        };
        format!("shell tasks run {user}{sandbox}")
    }

    /// Gives the task's user its work directory and every file in it.
    pub async fn hand_over(&self, workdir: &Path) -> io::Result<()> {
        let Some(user) = &self.user else {
            return Ok(());
        };
        let (workdir, uid, gid) = (workdir.to_owned(), user.uid, user.gid);
        tokio::task::spawn_blocking(move || crate::checkout::tree::chown(&workdir, uid, gid))
            .await
            .map_err(io::Error::other)?
    }

    /// The command that runs `program` with `args` in `workdir`, confined.
    pub fn command(&self, program: &str, args: &[&str], workdir: &Path) -> io::Result<Confined> {
        let (mut command, lifeline) = match &self.bwrap {
            Some(bwrap) => {
                let mut command = Command::new(bwrap);
                command.args(self.bwrap_args(workdir)).arg("--");
                let lifeline = Lifeline::watch(&mut command)?;
                command.arg(program);
                (command, Some(lifeline))
            }
            None => (Command::new(program), None),
        };
        command.args(args).current_dir(workdir);
        #[cfg(unix)]
        if let Some(user) = &self.user {
            command.uid(user.uid).gid(user.gid);
        }
        #[cfg(target_os = "linux")]
        super::parent_death::die_with_worker(&mut command);
        Ok(Confined { command, lifeline })
    }

    /// The variables the confinement sets in a task's environment, over the worker's own:
    /// who the task runs as, and a home and temporary directory it can use.
    pub fn environment(&self) -> Vec<(&'static str, std::ffi::OsString)> {
        let mut env = Vec::new();
        if let Some(user) = &self.user {
            env.extend([
                ("USER", user.name.clone().into()),
                ("LOGNAME", user.name.clone().into()),
                ("HOME", user.home.clone().into()),
            ]);
        }
        if self.bwrap.is_some() {
            // The worker's home is not there; a fresh /tmp is the task's own.
            env.extend([("HOME", "/tmp".into()), ("TMPDIR", "/tmp".into())]);
        }
        env
    }

    /// bubblewrap's arguments, in the order it applies them: the system read-only, fresh
    /// `/proc`, `/dev` and `/tmp`, the worker's paths covered, then what the task may write.
    fn bwrap_args(&self, workdir: &Path) -> Vec<String> {
        let mut args = Args::default();
        args.flags(&[
            "--die-with-parent",
            "--new-session",
            "--unshare-all",
            "--share-net",
        ]);
        args.flags(&["--cap-drop", "ALL"]);
        for dir in SYSTEM_DIRS.iter().map(Path::new) {
            args.mount("--ro-bind-try", dir, dir);
        }
        for name in USR_LINKS.iter().map(Path::new) {
            match std::fs::read_link(name) {
                Ok(target) => args.mount("--symlink", &target, name),
                Err(_) if name.is_dir() => args.mount("--ro-bind", name, name),
                Err(_) => {}
            }
        }
        args.flags(&["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]);
        let seen = |path: &&PathBuf| SYSTEM_DIRS.iter().any(|d| path.starts_with(d));
        for path in self.hidden.iter().filter(seen) {
            match std::fs::metadata(path) {
                Ok(meta) if meta.is_dir() => args.one("--tmpfs", path),
                Ok(_) => args.mount("--ro-bind", Path::new("/dev/null"), path),
                Err(_) => {}
            }
        }
        for dir in &self.shared {
            args.mount("--bind-try", dir, dir);
        }
        args.mount("--bind", workdir, workdir);
        args.one("--chdir", workdir);
        args.0
    }

    /// `bwrap`, if it is on the path and makes a sandbox for the task's user here (inside a
    /// container, Docker's seccomp profile usually forbids the namespaces it needs).
    async fn working_bwrap(&self) -> Option<PathBuf> {
        let bwrap = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("bwrap"))
                .find(|p| p.is_file())
        })?;
        let probe = Self {
            bwrap: Some(bwrap.clone()),
            ..self.clone()
        };
        let Ok(Confined {
            mut command,
            lifeline: _lifeline,
        }) = probe.command("/bin/sh", &["-c", "exit 0"], Path::new("/tmp"))
        else {
            tracing::warn!("no pipe for a sandboxed task's lifeline");
            return None;
        };
        let status = command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output()
            .await;
        match status {
            Ok(output) if output.status.success() => Some(bwrap),
            Ok(output) => {
                let why = String::from_utf8_lossy(&output.stderr);
                tracing::warn!(bwrap = %bwrap.display(), error = %why.trim(), "bubblewrap cannot make a sandbox");
                None
            }
            Err(error) => {
                tracing::warn!(bwrap = %bwrap.display(), %error, "bubblewrap does not start");
                None
            }
        }
    }
}

impl TaskUser {
    #[cfg(unix)]
    fn named(name: &str) -> anyhow::Result<Self> {
        let user = nix::unistd::User::from_name(name)?.ok_or_else(|| {
            anyhow::anyhow!(
                "the user {name}, whom shell tasks run as, does not exist: create it \
                 (`useradd --system --no-create-home --shell /usr/sbin/nologin {name}`) or \
                 name another with --task-user"
            )
        })?;
        anyhow::ensure!(
            !user.uid.is_root(),
            "--task-user {name} is root: shell tasks must run as an unprivileged user"
        );
        Ok(Self {
            name: name.to_owned(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            home: user.dir,
        })
    }

    #[cfg(not(unix))]
    fn named(name: &str) -> anyhow::Result<Self> {
        anyhow::bail!("--task-user {name}: tasks change user on Linux only")
    }
}

/// The first directory on the way to `dir` (itself included) that `uid` may not pass.
#[cfg(unix)]
fn closed_ancestor(dir: &Path, uid: u32) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    dir.ancestors().find_map(|at| {
        let meta = std::fs::metadata(at).ok()?;
        (meta.uid() != uid && meta.mode() & 0o001 == 0).then(|| at.to_owned())
    })
}

#[cfg(not(unix))]
fn closed_ancestor(_: &Path, _: u32) -> Option<PathBuf> {
    None
}

fn is_root() -> bool {
    #[cfg(unix)]
    {
        nix::unistd::geteuid().is_root()
    }
    #[cfg(not(unix))]
    false
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A command line being written.
#[derive(Default)]
struct Args(Vec<String>);

impl Args {
    fn flags(&mut self, flags: &[&str]) {
        self.0.extend(flags.iter().map(|f| (*f).to_owned()));
    }

    fn one(&mut self, flag: &str, path: &Path) {
        self.0.extend([flag.to_owned(), path_text(path)]);
    }

    fn mount(&mut self, flag: &str, from: &Path, to: &Path) {
        self.0
            .extend([flag.to_owned(), path_text(from), path_text(to)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(args: &[String], wanted: &[&str]) -> usize {
        args.windows(wanted.len())
            .position(|w| w.iter().zip(wanted).all(|(a, b)| a == b))
            .unwrap_or_else(|| panic!("{wanted:?} in {args:?}"))
    }

    #[test]
    fn the_work_directory_is_bound_over_what_covers_it_and_the_workers_paths_are_covered() {
        let sandbox = Sandbox {
            user: None,
            bwrap: Some("bwrap".into()),
            hidden: vec![
                "/usr/share".into(),
                "/etc/hostname".into(),
                "/var/lib".into(),
            ],
            shared: vec!["/srv/cache".into()],
        };
        let args = sandbox.bwrap_args(Path::new("/tmp/work/t-1"));
        let fresh_tmp = at(&args, &["--tmpfs", "/tmp"]);
        let workdir = at(&args, &["--bind", "/tmp/work/t-1", "/tmp/work/t-1"]);
        assert!(fresh_tmp < workdir, "{args:?}");
        assert!(
            at(&args, &["--ro-bind-try", "/usr", "/usr"]) < at(&args, &["--tmpfs", "/usr/share"])
        );
        at(&args, &["--ro-bind", "/dev/null", "/etc/hostname"]);
        at(&args, &["--bind-try", "/srv/cache", "/srv/cache"]);
        at(&args, &["--cap-drop", "ALL"]);
        assert_eq!(args[args.len() - 2..], ["--chdir", "/tmp/work/t-1"]);
        // Outside the system's directories, nothing needs covering: it is not there at all.
        assert!(!args.iter().any(|a| a == "/var/lib"), "{args:?}");
    }
}

//! A sandboxed task dies with its worker, on Linux, even when the worker dies while
//! bubblewrap sets the sandbox up. `parent_death` makes bubblewrap's first process die with
//! the worker, and `--die-with-parent` makes the sandbox's processes die with that one, but
//! only once the sandbox is set up: a worker killed in the milliseconds between (mounting
//! the sandbox's view takes them) left a task running with no parent to die with, beside the
//! run its job got on another worker. (Tried here: a parent SIGKILLed 2 to 6.5 ms after
//! starting bubblewrap left the sandboxed command running in 34 of 240 trials.)
//!
//! So the task's command gets a lifeline: the read end of a pipe as its descriptor 3, whose
//! write end only the worker holds (close-on-exec, so no other process inherits it). The
//! command runs under [`WATCH`], which waits in the background for the pipe's end of file,
//! then kills every process in the sandbox. The kernel closes the write end when the worker
//! dies, however and whenever it dies, and the worker drops it when the task is over.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::signal::Signal;
use tokio::process::Command;

/// The descriptor the task's end of the lifeline has in the task's processes.
const FD: i32 = 3;

/// The shell program a sandboxed command runs under, as `sh -c WATCH kiln-task PROGRAM
/// ARGS…`: in the background, it reads descriptor 3 until the end of the file (nothing is
/// ever written), then kills every process it may signal (in the sandbox's own PID
/// namespace, only the sandbox's); in the foreground, it closes descriptor 3 and becomes the
/// command.
pub const WATCH: &str =
    r#"{ read -r _ <&3; kill -KILL -1; } >/dev/null 2>&1 & exec 3<&-; exec "$@""#;

/// The worker's ends of a task's lifeline: the task runs while they are open. Dropped (the
/// task over) or closed by the kernel (the worker dead), the sandbox is killed.
#[derive(Debug)]
pub struct Lifeline {
    _ends: (OwnedFd, OwnedFd),
}

impl Lifeline {
    /// A new lifeline for the command whose words follow: `command`'s next arguments run
    /// the program under [`WATCH`], and its process gets the lifeline's read end as
    /// descriptor 3.
    pub fn watch(command: &mut Command) -> io::Result<Self> {
        command.args(["/bin/sh", "-c", WATCH, "kiln-task"]);
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let raw = read.as_raw_fd();
        // SAFETY: the closure runs in the child between fork and exec, where only
        // async-signal-safe calls are sound: it makes two system calls (dup2, fcntl) and
        // builds its error from an errno, allocating nothing. `raw` is open in the child (a
        // copy of the parent's table, where `read` lives until the lifeline is dropped).
        unsafe {
            command.pre_exec(move || {
                let task_end = nix::unistd::dup2_raw(BorrowedFd::borrow_raw(raw), FD)?;
                // Kept open for the program to inherit; dup2 onto itself (`raw` already 3)
                // leaves close-on-exec set, so it is cleared either way.
                fcntl(&task_end, FcntlArg::F_SETFD(FdFlag::empty()))?;
                std::mem::forget(task_end);
                Ok(())
            });
        }
        Ok(Self {
            _ends: (read, write),
        })
    }
}

/// Kills the sandboxes a killed worker left whose command lines name a path under
/// `work_root` (bubblewrap binds the task's work directory by its path), and returns how
/// many. A worker killed while bubblewrap was setting a sandbox up can leave its child
/// waiting for a word that never comes: it runs nothing, but stays. Called once the work
/// directories' lock is held, so none of them is a live worker's.
pub fn end_leftovers(work_root: &Path) -> usize {
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut ended = 0;
    for entry in processes.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(line) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let names_work_root = line
            .split(|b| *b == 0)
            .any(|arg| Path::new(std::ffi::OsStr::from_bytes(arg)).starts_with(work_root));
        let is_sandbox = line.split(|b| *b == 0).next().is_some_and(|program| {
            Path::new(std::ffi::OsStr::from_bytes(program)).file_name() == Some("bwrap".as_ref())
        });
        if names_work_root
            && is_sandbox
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).is_ok()
        {
            ended += 1;
        }
    }
    ended
}

//! Running git with a time limit, and the bare mirrors ([`mirror`]) the bot reads commits
//! from and the worker checks them out of.
//!
//! A git that talks to a remote may wait on it for ever: a server that takes the connection
//! and never answers, an SSH host that hangs. Each run here is given a limit; past it, or
//! when its caller gives up on it, git and everything it started (an `ssh`, a credential
//! helper) are killed, and the error says which git command it was.

pub mod mirror;
mod process;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

pub use mirror::{Mirrors, Updated};

/// Why a git command did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// Git ran and failed; `detail` is what it said on stderr.
    #[error("git {action} failed: {detail}")]
    Git {
        action: &'static str,
        detail: String,
    },
    /// Git was stopped after its time limit: a remote that stops answering looks like this.
    #[error(
        "git {action} failed: stopped after {}: it did not finish in time",
        humantime::format_duration(*.limit)
    )]
    TimedOut {
        action: &'static str,
        limit: Duration,
    },
    /// Git could not be started, or a file or directory around it could not be made.
    #[error("cannot run git: {0}")]
    Io(#[from] std::io::Error),
}

/// `git --git-dir <repository>`, for a command on a bare repository (or a `.git` directory).
pub fn in_repository(repository: &Path) -> Command {
    let mut command = Command::new("git");
    command.arg("--git-dir").arg(repository);
    command
}

/// Runs `command`, a git `action`, and fails unless git succeeds; the error carries what
/// git said on stderr.
pub async fn run(
    action: &'static str,
    command: &mut Command,
    limit: Duration,
) -> Result<Output, GitError> {
    let output = output(action, command, limit).await?;
    if output.status.success() {
        return Ok(output);
    }
    Err(GitError::Git {
        action,
        detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}

/// Runs `command`, a git `action`, and returns what it printed and its exit status, for a
/// caller that reads a failure's output (a refused push says why on stdout). Git and what
/// it started are killed after `limit`, or when the returned future is dropped. Git never
/// asks for a password on a terminal: it would wait for an answer no one gives.
pub async fn output(
    action: &'static str,
    command: &mut Command,
    limit: Duration,
) -> Result<Output, GitError> {
    command
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    command.process_group(0);
    let mut child = command.spawn()?;
    // Declared after the child, so dropped before it: the group is killed while git is
    // still there to name it.
    let mut group = process::Group::of(&child);
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(std::io::Error::other("git has no pipes").into());
    };
    let finished = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (status, _, _) = tokio::try_join!(
            child.wait(),
            stdout.read_to_end(&mut out),
            stderr.read_to_end(&mut err),
        )?;
        Ok::<_, std::io::Error>(Output {
            status,
            stdout: out,
            stderr: err,
        })
    };
    match tokio::time::timeout(limit, finished).await {
        Ok(output) => {
            // Git is gone; what it left running on purpose (an SSH connection kept for the
            // next command) is not ours to stop.
            group.release();
            Ok(output?)
        }
        Err(_) => {
            group.kill();
            Err(GitError::TimedOut { action, limit })
        }
    }
}

/// Whether the repository at `repository` holds `commit` (an object id, or anything git
/// resolves to a commit).
pub async fn has_commit(repository: &Path, commit: &str) -> Result<bool, GitError> {
    let status = in_repository(repository)
        .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await?;
    Ok(status.success())
}

#[cfg(test)]
mod tests;

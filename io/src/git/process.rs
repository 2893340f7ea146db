//! A git process and what it started, killed together: killing git alone would leave an
//! `ssh` it started waiting on a remote that does not answer, holding its connection.

use tokio::process::Child;

/// The process group a git was started in (as its leader); killed when dropped unless
/// released first.
#[derive(Debug)]
pub(super) struct Group {
    leader: Option<u32>,
}

impl Group {
    /// The group `child` leads: it must have been started with `process_group(0)`.
    pub(super) fn of(child: &Child) -> Self {
        Self { leader: child.id() }
    }

    /// Kills every process in the group, now.
    pub(super) fn kill(&mut self) {
        let Some(leader) = self.leader.take() else {
            return;
        };
        #[cfg(unix)]
        {
            use nix::sys::signal::{Signal, killpg};
            use nix::unistd::Pid;
            if let Ok(leader) = i32::try_from(leader) {
                // The group may be gone already; that is the goal, not an error.
                let _ = killpg(Pid::from_raw(leader), Signal::SIGKILL);
            }
        }
        // Elsewhere git alone is killed, when its `Child` is dropped (`kill_on_drop`).
        #[cfg(not(unix))]
        let _ = leader;
    }

    /// Leaves the group alone from now on: git finished by itself.
    pub(super) fn release(&mut self) {
        self.leader = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

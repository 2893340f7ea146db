//! A shell task's process dies with its worker, on Linux. A worker killed outright (SIGKILL,
//! the kernel's out-of-memory killer) runs no clean-up, and RabbitMQ gives its job to
//! another worker: a task left running would run beside that new run. The kernel sends the
//! task's process SIGKILL when the worker dies (`PR_SET_PDEATHSIG`), set between fork and
//! exec, then checks that the worker is still its parent: a worker killed in between, before
//! the signal was asked for, leaves nothing running either. (bubblewrap's
//! `--die-with-parent` asks for the same only once it runs, too late for that case.) The
//! kernel ties the signal to the thread that forked: tasks are started from the runtime's
//! worker threads, which live as long as the worker.

#![allow(unsafe_code)]

use nix::sys::signal::Signal;
use tokio::process::Command;

/// Makes the process `command` starts die when this process does.
pub fn die_with_worker(command: &mut Command) {
    let worker = nix::unistd::getpid();
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are sound: it makes two system calls (prctl, getppid) and
    // builds its error from an errno, allocating nothing.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            if nix::unistd::getppid() != worker {
                return Err(std::io::Error::from(nix::errno::Errno::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether process `pid` is gone or dead (a zombie its parent has not reaped).
    fn dead(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        }
    }

    #[test]
    fn the_process_dies_with_the_thread_that_started_it() {
        // A thread of its own stands for the worker: its end is what the kernel watches.
        let pid = std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                let mut command = Command::new("sleep");
                command.arg("300");
                die_with_worker(&mut command);
                let child = command.spawn().expect("sleep starts");
                child.id().expect("its pid")
            })
        })
        .join()
        .expect("the thread");
        // The kernel signals at once; the bound leaves room for a loaded machine.
        const DIES_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);
        let deadline = std::time::Instant::now() + DIES_WITHIN;
        while !dead(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(dead(pid), "sleep ({pid}) outlived what started it");
    }
}

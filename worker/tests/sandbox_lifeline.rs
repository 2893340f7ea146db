//! A sandboxed shell task dies with its worker even when the worker dies while bubblewrap
//! is still setting the sandbox up (`kiln_worker::shell` lifeline). Needs what a worker's
//! shell tasks need here: root, the `kiln-task` user and a working `bwrap`
//! (`deploy/dev/services` sets them up).

#![cfg(target_os = "linux")]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use kiln_worker::shell::{Confinement, Sandbox, end_leftover_sandboxes};

/// How long after its start a task that outlived its worker would have written its line
/// (it sleeps 0.3 s first), with room for a loaded machine.
const SURVIVOR_WRITES_WITHIN: Duration = Duration::from_secs(2);

/// A worker's sandbox, whose tasks may write in `dir`.
async fn sandbox(dir: &Path) -> Sandbox {
    let sandbox = Sandbox::prepare(Confinement {
        task_user: Some("kiln-task".into()),
        hidden: Vec::new(),
        shared: Vec::new(),
        work_root: dir.to_owned(),
    })
    .await
    .expect("the task user (deploy/dev/services makes kiln-task)");
    let confined = sandbox.describe();
    assert!(
        confined.contains("as kiln-task") && confined.contains("bubblewrap"),
        "this test needs root and a working bwrap: {confined}"
    );
    sandbox
}

/// Starts `script` in the sandbox from a thread of its own, which stands for the worker:
/// the thread ends `after` the start, dropping everything it held, as a killed worker's
/// process does (the kernel ties the parent-death signal to the thread that forked).
fn start_and_die(sandbox: &Sandbox, dir: &Path, script: String, after: Duration) {
    let (sandbox, dir) = (sandbox.clone(), dir.to_owned());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let mut confined = sandbox
                .command("/bin/sh", &["-c", &script], &dir)
                .expect("a confined command");
            let _child = confined.command.spawn().expect("bwrap starts");
            std::thread::sleep(after);
            // Dropped here with the thread, the child's handle kills nothing: only the
            // kernel's parent-death signal and the lifeline's end of file do.
        });
    })
    .join()
    .expect("the thread");
}

#[tokio::test]
async fn a_task_whose_worker_dies_as_its_sandbox_is_set_up_does_not_run_on() {
    let dir = tempfile::tempdir().expect("a directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let sandbox = sandbox(dir.path()).await;
    let ran = dir.path().join("ran");
    // Deaths from the moment of the start to well after the sandbox is set up. Without the
    // lifeline, such deaths (0 to 15 ms, 240 of them) left one task in seven running.
    let mut started = 0;
    for tenth_ms in (0..=90).step_by(5) {
        for _ in 0..4 {
            let script = format!("sleep 0.3; echo {tenth_ms} >> {}", ran.display());
            start_and_die(
                &sandbox,
                dir.path(),
                script,
                Duration::from_micros(100 * tenth_ms),
            );
            started += 1;
        }
    }
    // Not a wait for something to happen: the window in which a task that ran on would
    // have written its line.
    tokio::time::sleep(SURVIVOR_WRITES_WITHIN).await;
    let survivors = std::fs::read_to_string(&ran).unwrap_or_default();
    // What a worker started again would do: sandboxes stuck in their set-up go.
    end_leftover_sandboxes(dir.path());
    assert_eq!(
        survivors.lines().count(),
        0,
        "of {started} tasks whose worker died, these ran on (death after 0.1 ms × each):\n{survivors}"
    );
}

#[tokio::test]
async fn a_task_runs_to_its_end_while_its_worker_lives() {
    let dir = tempfile::tempdir().expect("a directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let sandbox = sandbox(dir.path()).await;
    let mut confined = sandbox
        .command(
            "/bin/sh",
            &[
                "-c",
                "sleep 0.3; echo done; if [ -e /proc/$$/fd/3 ]; then echo held; else echo free; fi",
            ],
            dir.path(),
        )
        .expect("a confined command");
    let output = confined.command.output().await.expect("runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    // The lifeline is the watcher's alone: the task's own processes do not hold it.
    assert_eq!(text, "done\nfree\n");
    drop(confined.lifeline);
}

#[tokio::test]
async fn a_worker_started_again_kills_the_sandboxes_left_in_its_work_directories() {
    let dir = tempfile::tempdir().expect("a directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let sandbox = sandbox(&work).await;
    let mut confined = sandbox
        .command("/bin/sh", &["-c", "sleep 30"], &work)
        .expect("a confined command");
    let mut child = confined.command.spawn().expect("bwrap starts");
    // Another directory's sandboxes are not this worker's.
    let other = tempfile::tempdir().expect("a directory");
    assert_eq!(end_leftover_sandboxes(other.path()), 0);
    assert!(end_leftover_sandboxes(dir.path()) >= 1);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("ends at once")
        .expect("waits");
    assert!(!status.success(), "{status:?}");
    drop(confined.lifeline);
}

//! A worker whose disk is full: its state and store on a small tmpfs of the test's own. A
//! task that fills it fails with its command's error; Kiln's own write that finds no room
//! (keeping an artifact) ends the task with the reason; the worker goes on, and the next
//! build passes on the space the failed tasks gave back.

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_tests::forge::TestRepo;
use kiln_tests::{Kiln, config};

/// A tmpfs of `size`, mounted for the test and unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).expect("the mount point");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0711"),
                "kiln-test",
            ])
            .arg(at)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mount a tmpfs at {} (as root)",
            at.display()
        );
        Self(at.to_owned())
    }

    /// Bytes free in it.
    fn free(&self) -> u64 {
        let stat = nix::sys::statvfs::statvfs(&self.0).expect("statvfs");
        stat.blocks_available() * stat.fragment_size()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("--lazy").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_task_with_its_reason_and_the_worker_goes_on() {
    let kiln = Kiln::start_without_workers(&config("")).await;
    let disk = Tmpfs::mount(&kiln.state_path().join("disk"), "8m");
    let (state, store) = (disk.0.join("state"), disk.0.join("store"));
    let (state, store) = (
        state.to_str().expect("utf-8"),
        store.to_str().expect("utf-8"),
    );
    let worker = kiln
        .worker_process(
            "small-disk",
            1,
            &[("KILN_STATE_DIR", state), ("KILN_STORE_DIR", store)],
        )
        .await;
    let repo = TestRepo::new();

    let spec = "steps:\n  fill:\n    runner: shell\n    retry: 0\n    run: dd if=/dev/zero of=big bs=1M count=16\n";
    let commit = repo.commit("master", "Fill the disk", &[(".kiln.yml", spec)]);
    let id = kiln.push(&repo, "master", &commit, "disk-fill").await;
    let build = kiln.finished_build(id).await;
    let log = kiln.task_log(id, "fill").await;
    assert_eq!(build["status"], "failed", "{build:#}");
    assert_eq!(
        build["tasks"][0]["outcome"], "failed with exit code 1",
        "{build:#}"
    );
    assert!(log.contains("No space left on device"), "{log}");

    // Kiln's own write finds no room: the artifact cannot be kept beside the task's files.
    let spec = "steps:\n  keep:\n    runner: shell\n    retry: 0\n    artifacts: [out.bin]\n    run: head -c 5000000 /dev/urandom > out.bin\n";
    let commit = repo.commit("master", "Keep a big file", &[(".kiln.yml", spec)]);
    let id = kiln.push(&repo, "master", &commit, "disk-keep").await;
    let build = kiln.finished_build(id).await;
    let outcome = build["tasks"][0]["outcome"].as_str().unwrap_or_default();
    assert_ne!(build["status"], "passed", "{build:#}");
    assert!(
        outcome.contains("cannot keep its artifacts") && outcome.contains("No space left"),
        "{build:#}"
    );

    // The failed tasks' work directories are gone, and the worker takes the next build.
    let spec = "steps:\n  fine:\n    runner: shell\n    run: echo fine\n";
    let commit = repo.commit("master", "Small again", &[(".kiln.yml", spec)]);
    let id = kiln.push(&repo, "master", &commit, "disk-fine").await;
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    assert!(
        disk.free() > 6 * 1024 * 1024,
        "{} bytes free: the failed tasks left files behind",
        disk.free()
    );
    drop(worker);
    kiln.stop().await;
}

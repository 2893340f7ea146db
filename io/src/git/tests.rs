//! Git with a time limit, and mirrors, against the real git in temporary directories. A
//! remote that hangs is an SSH "client" that is a script: it notes its process id (or when
//! it starts and ends) and sleeps.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;

/// How long a test waits for a process to be gone after it was killed.
const GONE_WITHIN: Duration = Duration::from_secs(10);

/// What git says in `dir`, as someone with a name and an address.
fn git(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
        .args(args)
        .output()
        .expect("git runs");
    assert!(output.status.success(), "git {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A repository in `dir` with one commit per entry of `texts`; returns the commits.
fn repository(dir: &Path, texts: &[&str]) -> Vec<String> {
    if !dir.join(".git").exists() {
        git(dir, &["init", "-q", "-b", "main"]);
    }
    texts
        .iter()
        .map(|text| {
            std::fs::write(dir.join("file"), text).expect("write");
            git(dir, &["add", "file"]);
            git(dir, &["commit", "-qm", text]);
            git(dir, &["rev-parse", "HEAD"])
        })
        .collect()
}

/// An executable shell script at `dir/name`.
#[cfg(unix)]
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// `git ls-remote` of a repository behind an SSH client that writes its process id to
/// `pid_file` and then sleeps for a minute instead of connecting.
#[cfg(target_os = "linux")]
fn ls_remote_that_hangs(dir: &Path, pid_file: &Path) -> Command {
    let ssh = script(
        dir,
        "ssh-that-hangs",
        &format!("echo $$ > '{}'\nexec sleep 60\n", pid_file.display()),
    );
    let mut command = Command::new("git");
    command
        .arg("-c")
        .arg(format!("core.sshCommand={}", ssh.display()))
        .args(["-c", "ssh.variant=simple"])
        .args(["ls-remote", "ssh://nowhere.invalid/repo.git"]);
    command
}

/// Whether the process `pid` has ended (a zombie no one reaped has).
#[cfg(target_os = "linux")]
fn ended(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // `pid (name) state …`
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// Waits until `condition` holds, checking every 20 ms, for at most [`GONE_WITHIN`]; past it
/// the test fails, naming `what` it waited for.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + GONE_WITHIN;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {GONE_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits, up to [`GONE_WITHIN`], for the process whose id is in `pid_file` to end.
#[cfg(target_os = "linux")]
async fn wait_until_ended(pid_file: &Path) {
    wait_until("the process's end", || {
        let pid = std::fs::read_to_string(pid_file).unwrap_or_default();
        let pid = pid.trim();
        !pid.is_empty() && ended(pid)
    })
    .await;
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_git_past_its_limit_is_killed_with_what_it_started() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pid_file = dir.path().join("ssh.pid");
    let started = Instant::now();
    let error = run(
        "ls-remote",
        &mut ls_remote_that_hangs(dir.path(), &pid_file),
        Duration::from_millis(500),
    )
    .await
    .expect_err("the remote never answers");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped at its limit, not when the remote gave up: {:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            error,
            GitError::TimedOut {
                action: "ls-remote",
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "git ls-remote failed: stopped after 500ms: it did not finish in time"
    );
    // The SSH client git started is in git's process group, and killed with it.
    wait_until_ended(&pid_file).await;
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_git_given_up_on_is_killed_with_what_it_started() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pid_file = dir.path().join("ssh.pid");
    let mut command = ls_remote_that_hangs(dir.path(), &pid_file);
    let running = run("ls-remote", &mut command, NEVER_REACHED);
    let given_up = wait_until("the SSH client's start", || pid_file.exists());
    tokio::select! {
        result = running => panic!("the remote never answers, yet: {result:?}"),
        () = given_up => {}
    }
    wait_until_ended(&pid_file).await;
}

/// A limit no test reaches.
const NEVER_REACHED: Duration = Duration::from_secs(120);

#[tokio::test]
async fn a_git_that_fails_says_what_git_said() {
    let dir = tempfile::tempdir().expect("temp dir");
    let error = run(
        "rev-parse",
        in_repository(&dir.path().join("none.git")).args(["rev-parse", "HEAD"]),
        NEVER_REACHED,
    )
    .await
    .expect_err("no repository there");
    let GitError::Git { action, detail } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(*action, "rev-parse");
    assert!(detail.contains("not a git repository"), "{detail}");
    assert!(error.to_string().starts_with("git rev-parse failed: "));
}

#[tokio::test]
async fn a_mirror_is_cloned_once_then_fetched_only_for_what_it_lacks_and_kept_as_packs() {
    let origin = tempfile::tempdir().expect("temp dir");
    let first = repository(origin.path(), &["one"]).remove(0);
    let root = tempfile::tempdir().expect("temp dir");
    let mirrors = Mirrors::new(root.path().join("mirrors"));
    let url = origin.path().to_str().expect("utf-8");

    let cloned = mirrors.update(url, Some(&first)).await.expect("cloned");
    assert_eq!(cloned.path, mirrors.path(url));
    assert!(!cloned.fetched);
    let again = mirrors.update(url, Some(&first)).await.expect("there");
    assert!(!again.fetched, "it has the commit: no fetch");

    let second = repository(origin.path(), &["two"]).remove(0);
    let fetched = mirrors.update(url, Some(&second)).await.expect("fetched");
    assert!(fetched.fetched);
    assert!(has_commit(&fetched.path, &second).await.expect("asks"));
    let heads = mirrors.update(url, None).await.expect("fetched");
    assert!(heads.fetched, "a branch may have moved: always fetched");
    assert_eq!(git(&heads.path, &["rev-parse", "main"]), second);

    // `--no-local` and `fetch.unpackLimit=1`: from a local path too, nothing loose.
    let counts = git(&heads.path, &["count-objects", "-v"]);
    assert!(counts.lines().any(|l| l == "count: 0"), "{counts}");
    assert!(counts.lines().any(|l| l == "packs: 2"), "{counts}");
}

#[cfg(unix)]
#[tokio::test]
async fn two_fetches_into_one_mirror_take_turns() {
    let origin = tempfile::tempdir().expect("temp dir");
    repository(origin.path(), &["one"]);
    let root = tempfile::tempdir().expect("temp dir");
    let mirrors = Mirrors::new(root.path());
    let url = origin.path().to_str().expect("utf-8");
    let mirror = mirrors.update(url, None).await.expect("cloned").path;

    // From now on the mirror fetches over "SSH" that notes when each fetch starts and ends.
    let log = root.path().join("fetches.log");
    let ssh = script(
        root.path(),
        "ssh-that-notes",
        &format!(
            "for last; do :; done\necho start >> '{log}'\nsleep 0.3\nsh -c \"$last\"\n\
             status=$?\necho end >> '{log}'\nexit $status\n",
            log = log.display()
        ),
    );
    let origin_url = format!("ssh://nowhere.invalid{}", origin.path().display());
    git(&mirror, &["config", "remote.origin.url", &origin_url]);
    git(
        &mirror,
        &["config", "core.sshCommand", ssh.to_str().expect("utf-8")],
    );
    git(&mirror, &["config", "ssh.variant", "simple"]);

    let (a, b) = tokio::join!(mirrors.update(url, None), mirrors.update(url, None));
    assert!(a.expect("fetched").fetched && b.expect("fetched").fetched);
    assert_eq!(
        std::fs::read_to_string(&log).expect("the log"),
        "start\nend\nstart\nend\n"
    );
}

/// A `git://` remote that takes the connection and never answers, while the listener lives.
fn silent_remote() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("git://{}/silent.git", listener.local_addr().expect("addr"));
    (listener, url)
}

/// What is in `dir`.
fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("the directory")
        .map(|entry| entry.expect("an entry").path())
        .collect()
}

#[tokio::test]
async fn a_clone_stopped_at_its_limit_leaves_no_half_mirror() {
    let (_listener, url) = silent_remote();
    let root = tempfile::tempdir().expect("temp dir");
    let mirrors = Mirrors::new(root.path()).with_limit(Duration::from_millis(500));
    let update = tokio::time::timeout(Duration::from_secs(30), mirrors.update(&url, None))
        .await
        .expect("given up on within the limit, not hanging");
    let error = update.expect_err("nothing to clone");
    assert!(
        matches!(
            error,
            GitError::TimedOut {
                action: "clone",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!mirrors.path(&url).exists(), "no mirror is made");
    assert_eq!(entries(root.path()), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn a_clone_given_up_on_leaves_no_half_mirror() {
    let (_listener, url) = silent_remote();
    let root = tempfile::tempdir().expect("temp dir");
    let mirrors = Mirrors::new(root.path());
    let update = mirrors.update(&url, None);
    let cloning = wait_until("the clone's start", || !entries(root.path()).is_empty());
    tokio::select! {
        result = update => panic!("the remote never answers, yet: {result:?}"),
        () = cloning => {}
    }
    assert_eq!(entries(root.path()), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn a_clone_left_aside_by_a_killed_process_is_removed_when_the_mirrors_are_next_used() {
    let origin = tempfile::tempdir().expect("temp dir");
    repository(origin.path(), &["one"]);
    let root = tempfile::tempdir().expect("temp dir");
    // What a worker killed while it cloned leaves, beside another repository's mirror.
    let left = root.path().join(".clone-Ab12Cd");
    std::fs::create_dir_all(left.join("mirror.git/objects/pack")).expect("mkdir");
    std::fs::write(left.join("mirror.git/objects/pack/tmp_pack_x"), "half").expect("write");
    let other = root.path().join("0123456789abcdef.git");
    std::fs::create_dir(&other).expect("mkdir");

    let mirrors = Mirrors::new(root.path());
    let url = origin.path().to_str().expect("utf-8");
    let mirror = mirrors.update(url, None).await.expect("cloned").path;

    let mut expected = vec![mirror, other];
    expected.sort();
    let mut found = entries(root.path());
    found.sort();
    assert_eq!(
        found, expected,
        "the clone left aside is gone, nothing else"
    );
}

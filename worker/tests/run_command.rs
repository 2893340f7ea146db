//! `kiln-worker run`, the command a newcomer tries first: a pipeline run in a repository on
//! this machine, here with the shell runner so it needs no service at all.

use std::path::Path;
use std::process::{Command, Stdio};

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Kiln Test",
            "-c",
            "user.email=test@kiln.invalid",
        ])
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

/// A repository with `spec` committed, plus a file not yet committed and an ignored one.
fn repository(spec: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    git(dir.path(), &["init", "--quiet", "--initial-branch=master"]);
    std::fs::write(dir.path().join(".kiln.yml"), spec).expect("write");
    std::fs::write(dir.path().join(".gitignore"), "secret.txt\n").expect("write");
    git(dir.path(), &["add", "."]);
    git(dir.path(), &["commit", "--quiet", "-m", "pipeline"]);
    std::fs::write(dir.path().join("draft.txt"), "not committed yet\n").expect("write");
    std::fs::write(dir.path().join("secret.txt"), "ignored\n").expect("write");
    dir
}

/// Runs `kiln-worker run --shell` in `dir`; its exit code and what it printed.
fn kiln_run(dir: &Path) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_kiln-worker"))
        .args(["run", "--shell", "--dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .expect("kiln-worker runs");
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    (output.status.code(), text)
}

#[test]
fn a_failing_pipeline_shows_the_log_and_exits_non_zero() {
    let repo = repository(
        r#"stages: [test, ship]
steps:
  files:
    runner: shell
    run: ['cat draft.txt', 'test ! -e secret.txt', 'test ! -e .git']
  broken:
    runner: shell
    run: ['echo "about to break"', 'exit 3']
  allowed:
    runner: shell
    allow_failure: true
    run: exit 1
  windows:
    runner: shell
    platforms: [windows/amd64]
    run: ver
  ship:
    stage: ship
    runner: shell
    run: echo never
"#,
    );
    let (code, text) = kiln_run(repo.path());
    assert_eq!(code, Some(1), "{text}");
    for expected in [
        "✔ files passed",
        "✘ broken failed with exit code 3",
        "── log of broken ──\n  about to break",
        "✘ allowed failed with exit code 1",
        "- windows skipped: needs a windows/amd64 machine",
        "pipeline failed",
    ] {
        assert!(
            text.contains(expected),
            "`{expected}` missing from:\n{text}"
        );
    }
    // `ship` is skipped for whichever of the stage before is seen first not to pass: `broken`
    // failing, or `windows` never running.
    assert!(
        text.contains("- ship skipped: `broken` did not pass")
            || text.contains("- ship skipped: `windows` did not run"),
        "{text}"
    );
    assert!(!text.contains("never"), "{text}");
}

#[test]
fn a_passing_pipeline_exits_zero() {
    let repo = repository(
        "steps:\n  hello: { runner: shell, run: 'echo \"shard $KILN_SHARD of $KILN_SHARDS\"', shards: 2 }\n",
    );
    let (code, text) = kiln_run(repo.path());
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("✔ hello.1 passed"), "{text}");
    assert!(text.contains("✔ hello.2 passed"), "{text}");
    assert!(text.contains("pipeline passed"), "{text}");
}

#[test]
fn a_broken_spec_is_reported_with_its_place() {
    let repo = repository("steps:\n  a:\n    runner: shell\n    runs: make\n");
    let (code, text) = kiln_run(repo.path());
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(".kiln.yml line 4, column 5: unknown field `runs`"),
        "{text}"
    );
}

//! `kiln-worker` serving jobs, as systemd or `docker stop` runs it: on SIGTERM it stops
//! taking jobs, hands back what it had, and exits cleanly. Needs RabbitMQ and Redis
//! (`deploy/dev/services`); without them the worker cannot start and the test fails.

#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use kiln_tests::Services;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long it may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn stops_cleanly_on_sigterm() {
    let services = Services::require().await;
    let prefix = format!("ktsig{}", std::process::id());
    let dirs = tempfile::tempdir().expect("temp dir");
    let mut worker = Command::new(env!("CARGO_BIN_EXE_kiln-worker"))
        .args(["--prefix", &prefix, "--state-dir"])
        .arg(dirs.path().join("state"))
        .arg("--store-dir")
        .arg(dirs.path().join("store"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kiln-worker starts");

    // Its log, line by line, read on a thread of its own.
    let (lines, log) = mpsc::channel();
    let stdout = worker.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("worker ready")) {
        match log.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("the worker did not get ready: {seen:#?}"),
        }
    }

    let pid = Pid::from_raw(i32::try_from(worker.id()).expect("pid"));
    let (exited, exit) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = exited.send(worker.wait());
    });
    kill(pid, Signal::SIGTERM).expect("signal");
    let Ok(status) = exit.recv_timeout(STOP_TIMEOUT) else {
        let _ = kill(pid, Signal::SIGKILL);
        panic!("still running {STOP_TIMEOUT:?} after SIGTERM");
    };
    let status = status.expect("wait");
    seen.extend(log.try_iter());
    assert!(status.success(), "{status}: {seen:#?}");

    services.remove_everything_under(&prefix).await;
}

//! `kiln-bot` as systemd or `docker stop` runs it: on SIGTERM it stops serving and exits
//! cleanly. Needs RabbitMQ and Redis (`deploy/dev/services`); without them the bot cannot
//! start and the test fails.

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
    let prefix = format!("ktsigbot{}", std::process::id());
    let dirs = tempfile::tempdir().expect("temp dir");
    let config = dirs.path().join("kiln-bot.toml");
    std::fs::write(&config, "public_url = \"http://kiln.test\"\n").expect("write");
    let mut bot = Command::new(env!("CARGO_BIN_EXE_kiln-bot"))
        .args(["--listen", "127.0.0.1:0", "--prefix", &prefix])
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(dirs.path().join("state"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kiln-bot starts");

    let (lines, log) = mpsc::channel();
    let stdout = bot.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("kiln-bot listening"))
    {
        match log.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("the bot did not start: {seen:#?}"),
        }
    }

    let pid = Pid::from_raw(i32::try_from(bot.id()).expect("pid"));
    let (exited, exit) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = exited.send(bot.wait());
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

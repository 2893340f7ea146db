//! A Redis server of a test's own, with AOF on in a directory of its own, so a test can stop
//! and start it without touching the Redis every other test uses.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::wait_for;

/// How long Redis may take to start or stop.
const REDIS_TIMEOUT: Duration = Duration::from_secs(30);

/// One `redis-server`, killed when dropped.
#[derive(Debug)]
pub struct TestRedis {
    pub port: u16,
    dir: tempfile::TempDir,
    server: Option<Child>,
}

impl TestRedis {
    /// Starts a new server and returns it once it answers.
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = Self {
            port,
            dir: tempfile::tempdir().expect("temp dir"),
            server: None,
        };
        redis.run().await;
        redis
    }

    /// The URL to reach it with.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the server again on its port and data, after [`TestRedis::stop`].
    pub async fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("redis.log"))
            .expect("log file");
        let server = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--appendonly", "yes", "--save", ""])
            // `DEBUG SLEEP`, for a Redis that answers slowly, from loopback only.
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server (deploy/dev/services installs it)");
        self.server = Some(server);
        let url = self.url();
        wait_for("the test's Redis to answer", REDIS_TIMEOUT, || {
            let url = url.clone();
            async move {
                let client = redis::Client::open(url.as_str()).ok()?;
                let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .ok()
                    .map(drop)
            }
        })
        .await;
    }

    /// Stops the server as a service manager would (SIGTERM: it writes its AOF and exits)
    /// and waits until it has.
    pub async fn stop(&mut self) {
        self.end(nix::sys::signal::Signal::SIGTERM).await;
    }

    /// Kills the server (SIGKILL), as a machine that loses power would: with AOF's
    /// `appendfsync everysec`, up to the last second of writes is lost.
    pub async fn kill(&mut self) {
        self.end(nix::sys::signal::Signal::SIGKILL).await;
    }

    async fn end(&mut self, signal: nix::sys::signal::Signal) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        if let Some(pid) = server.id() {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, signal);
        }
        tokio::time::timeout(REDIS_TIMEOUT, server.wait())
            .await
            .expect("Redis stops")
            .expect("wait");
    }
}

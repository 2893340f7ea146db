//! A RabbitMQ node of a test's own: its own ports, data and log directory and Erlang cookie,
//! so a test can stop, kill or freeze it without touching the broker every other test uses.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::{free_port, wait_for};

/// How long a node may take to boot, or to start its application again, on a loaded
/// two-core machine.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// Where Debian's package puts RabbitMQ's own scripts (not the wrappers in `/usr/sbin`,
/// which drop to the `rabbitmq` user and its shared data directory).
const RABBITMQ_BIN: &str = "/usr/lib/rabbitmq/bin";

/// One RabbitMQ node, killed when dropped.
#[derive(Debug)]
pub struct TestBroker {
    pub port: u16,
    node: String,
    dist_port: u16,
    dir: tempfile::TempDir,
    server: Option<tokio::process::Child>,
}

impl TestBroker {
    /// Boots a new node and returns it once it takes AMQP connections.
    pub async fn start() -> Self {
        Self::start_with_cookie(None).await
    }

    /// Like [`TestBroker::start`], with the Erlang cookie `cookie` (nodes of one cluster
    /// share theirs) instead of one made up at boot.
    async fn start_with_cookie(cookie: Option<&str>) -> Self {
        let port = free_port();
        // `KILN_KEEP=1` keeps its data and log for a look after the test.
        let dir = tempfile::Builder::new()
            .prefix("kiln-rabbitmq-")
            .disable_cleanup(std::env::var_os("KILN_KEEP").is_some())
            .tempdir()
            .expect("temp dir");
        std::fs::write(dir.path().join("enabled_plugins"), "").expect("plugins file");
        // As the shared broker: a job may run for a day before it is acknowledged.
        std::fs::write(
            dir.path().join("rabbitmq.conf"),
            "consumer_timeout = 90000000\n",
        )
        .expect("config file");
        if let Some(cookie) = cookie {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.path().join(".erlang.cookie");
            std::fs::write(&path, cookie).expect("cookie file");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400))
                .expect("cookie file's mode");
        }
        let mut broker = Self {
            port,
            node: format!("kiln-test-{port}@localhost"),
            dist_port: free_port(),
            dir,
            server: None,
        };
        broker.boot().await;
        broker
    }

    /// The node's Erlang name (`kiln-test-<port>@localhost`).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The URL to reach it with.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts the node's Erlang VM and RabbitMQ in it; returns once it takes connections.
    pub async fn boot(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("rabbitmq.log"))
            .expect("log file");
        let server = Command::new(format!("{RABBITMQ_BIN}/rabbitmq-server"))
            // The Erlang cookie is made in $HOME: one of its own. What the node writes in
            // its working directory (Mnesia's core dumps when it is killed) goes there too.
            .env("HOME", self.dir.path())
            .current_dir(self.dir.path())
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", self.path("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.path("log"))
            .env("RABBITMQ_PID_FILE", self.path("pid"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.path("enabled_plugins"),
            )
            .env("RABBITMQ_CONFIG_FILE", self.path("rabbitmq.conf"))
            .env("RABBITMQ_LOGS", "-")
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .expect("start rabbitmq-server (deploy/dev/services installs it)");
        self.server = Some(server);
        self.wait_up().await;
    }

    /// Waits until the node takes AMQP connections, failing the test after
    /// [`BOOT_TIMEOUT`]; returns when that was.
    pub async fn wait_up(&self) -> Instant {
        let what = format!(
            "RabbitMQ node {} to answer (read {})",
            self.node,
            self.path("rabbitmq.log").display()
        );
        wait_for(&what, BOOT_TIMEOUT, || async {
            self.answers().await.then(Instant::now)
        })
        .await
    }

    /// Whether the node answers AMQP's protocol header with a method frame.
    pub async fn answers(&self) -> bool {
        let probe = async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
            stream.write_all(b"AMQP\x00\x00\x09\x01").await?;
            let mut first = [0u8; 1];
            stream.read_exact(&mut first).await?;
            std::io::Result::Ok(first[0] == 1)
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), probe).await,
            Ok(Ok(true))
        )
    }

    /// Runs `rabbitmqctl` against the node with `args`; fails the test if it fails.
    pub async fn ctl(&self, args: &[&str]) -> String {
        let output = Command::new(format!("{RABBITMQ_BIN}/rabbitmqctl"))
            .env("HOME", self.dir.path())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .stdin(Stdio::null())
            .output();
        let output = tokio::time::timeout(BOOT_TIMEOUT, output)
            .await
            .unwrap_or_else(|_| panic!("rabbitmqctl {args:?} took over {BOOT_TIMEOUT:?}"))
            .expect("rabbitmqctl runs");
        assert!(
            output.status.success(),
            "rabbitmqctl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Stops RabbitMQ in the node (`stop_app`), as an operator restarting it would.
    pub async fn stop_app(&self) {
        self.ctl(&["stop_app"]).await;
    }

    /// Starts RabbitMQ in the node again; returns once it takes connections.
    pub async fn start_app(&self) -> Instant {
        self.ctl(&["start_app"]).await;
        self.wait_up().await
    }

    /// The node's Erlang VM, from its pid file.
    fn vm_pid(&self) -> Option<nix::unistd::Pid> {
        let pid = std::fs::read_to_string(self.path("pid")).ok()?;
        Some(nix::unistd::Pid::from_raw(pid.trim().parse().ok()?))
    }

    /// Sends `signal` to the node's Erlang VM.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = self.vm_pid().expect("the node's pid file");
        nix::sys::signal::kill(pid, signal).expect("signal the node");
    }

    /// Kills the node (SIGKILL to its whole process group) and waits until it is gone.
    pub async fn kill(&mut self) {
        if let Some(mut server) = self.server.take() {
            if let Some(pid) = server.id() {
                let group = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = server.wait().await;
        }
        if let Some(pid) = self.vm_pid() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = std::fs::remove_file(self.path("pid"));
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(pid) = self.vm_pid() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        if let Some(server) = self.server.as_ref().and_then(|s| s.id()) {
            let group = nix::unistd::Pid::from_raw(server as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// RabbitMQ nodes of a test's own joined in one cluster.
#[derive(Debug)]
pub struct TestCluster {
    pub nodes: Vec<TestBroker>,
}

impl TestCluster {
    /// Boots `size` nodes and joins the others to the first; returns once the cluster is
    /// whole and every node takes connections.
    pub async fn start(size: usize) -> Self {
        let cookie = format!("KILNTEST{}", free_port());
        let nodes = futures_util::future::join_all(
            (0..size).map(|_| TestBroker::start_with_cookie(Some(&cookie))),
        )
        .await;
        let first = nodes[0].node.clone();
        for node in &nodes[1..] {
            node.ctl(&["stop_app"]).await;
            node.ctl(&["join_cluster", &first]).await;
            node.start_app().await;
        }
        let cluster = Self { nodes };
        let status = cluster.nodes[0]
            .ctl(&["eval", "length(rabbit_nodes:all_running())."])
            .await;
        assert_eq!(
            status.trim(),
            size.to_string(),
            "nodes running in the cluster"
        );
        cluster
    }

    /// The URLs of every node, separated by commas, as `--amqp-url` takes a cluster.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(TestBroker::url).collect();
        urls.join(",")
    }

    /// The node listening on `port`.
    pub fn on_port(&self, port: u16) -> &TestBroker {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node listens on {port}"))
    }
}

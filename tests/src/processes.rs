//! Kiln as operators run it: `kiln-bot` and `kiln-worker` as processes of their own, so what
//! each costs (its resident memory) can be read apart.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

use crate::{E2E_TIMEOUT, Services, wait_for};

/// One of Kiln's processes.
#[derive(Debug)]
pub struct Process {
    pub name: &'static str,
    child: Child,
}

impl Process {
    /// Its process id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// How it ended, if it has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("wait")
    }

    /// Sends it `signal`.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(pid) = self.id() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
        }
    }

    /// Freezes it and every process it started (SIGSTOP), as a machine that hangs would be;
    /// [`Process::thaw`] lets them all go on.
    pub fn freeze(&self) {
        let Some(pid) = self.id() else { return };
        self.signal(nix::sys::signal::Signal::SIGSTOP);
        for child in descendants(pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child),
                nix::sys::signal::Signal::SIGSTOP,
            );
        }
    }

    /// Lets it and every process it started go on (SIGCONT).
    pub fn thaw(&self) {
        let Some(pid) = self.id() else { return };
        for child in descendants(pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    /// Kills it (SIGKILL) and waits until it is gone.
    pub async fn kill(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        self.ended(E2E_TIMEOUT).await;
    }

    /// Waits at most `timeout` for it to end, and says how.
    pub async fn ended(&mut self, timeout: std::time::Duration) -> std::process::ExitStatus {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} ends within {timeout:?}", self.name))
            .expect("wait")
    }

    /// Asks it to stop (SIGTERM, as a service manager would) and checks it stopped cleanly.
    pub async fn stop(mut self) {
        self.stop_in_place().await;
    }

    /// The same, leaving the ended process in place; a second call checks the same end.
    pub async fn stop_in_place(&mut self) {
        if let Some(pid) = self.id() {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        let status = tokio::time::timeout(E2E_TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} stops within {E2E_TIMEOUT:?}", self.name))
            .expect("wait");
        assert!(status.success(), "{} ended with {status}", self.name);
    }
}

/// Every process descended from `pid`, from `/proc`.
fn descendants(pid: u32) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let child: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid …`; the command may hold spaces and parentheses.
            let after = &stat[stat.rfind(')')? + 1..];
            let parent: i32 = after.split_whitespace().nth(1)?.parse().ok()?;
            Some((child, parent))
        })
        .collect();
    let mut found = vec![pid as i32];
    let mut at = 0;
    while at < found.len() {
        let parent = found[at];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        at += 1;
    }
    found.split_off(1)
}

/// The resident memory of process `pid`, the program `name`, in MiB, from `/proc`; `None`
/// once it has ended (also when its id has been given to another process since).
pub fn rss_mib(pid: u32, name: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let running = status.lines().find_map(|l| l.strip_prefix("Name:"))?.trim();
    if running != name {
        return None;
    }
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// The binary `name` built beside the running one (`target/<profile>/`): `cargo test
/// --workspace` and `deploy/dev/bench` build it.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the running binary");
    let mut dir = exe.parent().expect("its directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p {name}` (`cargo test --workspace` does)",
        path.display()
    );
    path
}

/// What a process of Kiln's is started with: the services, the prefix, and its own state
/// directory, with its log in `<state>/<name>.log`.
fn command(name: &'static str, services: &Services, prefix: &str, state: &Path) -> Command {
    // Appended to: a process started again (a restart under test) keeps its predecessor's log.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.join(format!("{name}.log")))
        .expect("log file");
    let mut command = Command::new(binary(name));
    command
        .env("KILN_AMQP_URL", &services.amqp_url)
        .env("KILN_REDIS_URL", &services.redis_url)
        .env("KILN_PREFIX", prefix)
        .env("KILN_STATE_DIR", state.join(name))
        // `KILN_PROCESS_LOG=info` (say) for more than warnings.
        .env(
            "RUST_LOG",
            std::env::var("KILN_PROCESS_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        // tracing writes to stdout.
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .kill_on_drop(true);
    command
}

/// Starts `kiln-bot` with `config` on a free port; returns it once it answers, and where.
pub async fn start_bot(
    config: &str,
    services: &Services,
    prefix: &str,
    state: &Path,
) -> (Process, std::net::SocketAddr) {
    // A port the system has just given out is free: the bot takes it next.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    (
        start_bot_at(config, services, prefix, state, addr).await,
        addr,
    )
}

/// Like [`start_bot`], listening on `addr` (a bot started again where the last one was).
pub async fn start_bot_at(
    config: &str,
    services: &Services,
    prefix: &str,
    state: &Path,
    addr: std::net::SocketAddr,
) -> Process {
    let path = state.join("kiln-bot.toml");
    std::fs::write(&path, config).expect("write the bot's configuration");
    let child = command("kiln-bot", services, prefix, state)
        .env("KILN_CONFIG", &path)
        .env("KILN_LISTEN", addr.to_string())
        .env("KILN_PLATFORMS", "linux/amd64,linux/arm64")
        .spawn()
        .expect("start kiln-bot");
    let http = reqwest::Client::new();
    wait_for("kiln-bot to answer", E2E_TIMEOUT, || async {
        let answer = http.get(format!("http://{addr}/healthz")).send().await;
        answer.ok().filter(|r| r.status() == 200).map(|_| ())
    })
    .await;
    Process {
        name: "kiln-bot",
        child,
    }
}

/// Starts `kiln-worker` for `linux/amd64` with `slots` slots; returns it once it is present.
pub async fn start_worker(
    services: &Services,
    prefix: &str,
    state: &Path,
    slots: usize,
) -> Process {
    start_named_worker(services, prefix, state, slots, "worker-process").await
}

/// Like [`start_worker`], for a worker named `<prefix>-<name>` with a state directory and
/// log of its own.
pub async fn start_named_worker(
    services: &Services,
    prefix: &str,
    state: &Path,
    slots: usize,
    name: &str,
) -> Process {
    start_worker_with(services, prefix, state, slots, name, &[]).await
}

/// Like [`start_named_worker`], with more of the worker's environment (`KILN_…` settings).
pub async fn start_worker_with(
    services: &Services,
    prefix: &str,
    state: &Path,
    slots: usize,
    name: &str,
    env: &[(&str, &str)],
) -> Process {
    let name = format!("{prefix}-{name}");
    let own_state = state.join(&name);
    std::fs::create_dir_all(&own_state).expect("the worker's state directory");
    let child = command("kiln-worker", services, prefix, &own_state)
        .env("KILN_PLATFORM", "linux/amd64")
        .env("KILN_SLOTS", slots.to_string())
        .env("KILN_WORKER_NAME", &name)
        .env("KILN_ADVERTISE_HOST", "127.0.0.1")
        .env("KILN_STORE_DIR", state.join("store")) // shared, see Kiln::store_dir
        .env("KILN_TASK_SHARE", crate::task_share(state))
        .envs(env.iter().copied())
        .spawn()
        .expect("start kiln-worker");
    let client = redis::Client::open(services.redis_url.as_str()).expect("Redis URL");
    let conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let workers = kiln_shared::keys::Keys::new(prefix).workers();
    wait_for("kiln-worker to say it is present", E2E_TIMEOUT, || {
        let mut conn = conn.clone();
        let (workers, name) = (workers.clone(), name.clone());
        async move {
            let present: bool = redis::cmd("HEXISTS")
                .arg(&workers)
                .arg(&name)
                .query_async(&mut conn)
                .await
                .ok()?;
            present.then_some(())
        }
    })
    .await;
    Process {
        name: "kiln-worker",
        child,
    }
}

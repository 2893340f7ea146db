//! Kiln's whole installation on Docker Swarm, deployed with one command (`deploy/swarm/up`)
//! from images of this build: a signed push is built, by a worker in the stack running its
//! step in a container on the node's engine; scaled from 1 to 3 workers, the jobs spread over
//! them; the bot container that took a push, killed mid-build, leaves the build to the other;
//! and `deploy/swarm/down` leaves nothing of the stack behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use kiln_tests::forge::TestRepo;
use kiln_tests::processes;
use kiln_tests::{E2E_TIMEOUT, TEST_IMAGE, build_at, ended_at, free_port, push_to, wait_for};

/// How long `up` may take: the images are built from this build's binaries, and the base
/// images made first when this machine has none (a `debootstrap`, about a minute).
const UP_TIMEOUT: Duration = Duration::from_secs(900);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `program` with `args`; its standard output, or the test fails saying what it printed.
fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn docker(args: &[&str]) -> String {
    run("docker", args, &[])
}

/// Whether `log`, a bot's in its image's format (a JSON object a line), says it accepted
/// build `id`.
fn accepted(log: &str, id: u64) -> bool {
    let id = id.to_string();
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .any(|line| {
            line["fields"]["message"] == "build accepted" && line["fields"]["build_id"] == id
        })
}

/// A stack of the test's own, removed (and the swarm left, if the test made it) when dropped.
struct Stack {
    name: String,
    port: u16,
    made_swarm: bool,
    _dir: tempfile::TempDir,
}

impl Stack {
    async fn up(config: &str) -> Self {
        let made_swarm =
            docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]).trim() != "active";
        let name = kiln_tests::services::unique_prefix();
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("kiln-swarm-")
            .tempdir_in("/var/tmp")
            .expect("temp dir");
        let config_path = dir.path().join("kiln-bot.toml");
        std::fs::write(&config_path, config).expect("the bot's configuration");
        let binaries = processes::binary("kiln-bot");
        let binaries = binaries.parent().expect("the binaries' directory");
        let up = root().join("deploy/swarm/up");
        let (swarm_dir, port_arg) = (dir.path().join("swarm"), port.to_string());
        let stack = Self {
            name,
            port,
            made_swarm,
            _dir: dir,
        };
        let args = [
            "--name",
            stack.name.as_str(),
            "--port",
            &port_arg,
            "--binaries",
            binaries.to_str().expect("utf-8"),
        ];
        let env = [
            ("KILN_SWARM_DIR", swarm_dir.to_str().expect("utf-8")),
            ("KILN_BOT_CONFIG", config_path.to_str().expect("utf-8")),
            ("KILN_TAG", stack.name.as_str()),
            ("KILN_WORKER_SLOTS", "1"),
        ];
        let up = up.to_str().expect("utf-8").to_owned();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        tokio::time::timeout(
            UP_TIMEOUT,
            tokio::task::spawn_blocking(move || {
                let env: Vec<(&str, &str)> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                run(&up, &args, &env)
            }),
        )
        .await
        .expect("deploy/swarm/up within its time")
        .expect("deploy/swarm/up");
        stack
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn service(&self, name: &str) -> String {
        format!("{}_{name}", self.name)
    }

    /// The ids of the running containers of service `name`.
    fn containers(&self, name: &str) -> Vec<String> {
        let filter = format!("label=com.docker.swarm.service.name={}", self.service(name));
        docker(&["ps", "-q", "--filter", &filter])
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// The bot container that took the push of build `id`: the one whose log says it
    /// accepted the build; `None` while no log says so yet.
    fn bot_that_accepted(&self, id: u64) -> Option<String> {
        let bots = self.containers("bot");
        assert_eq!(bots.len(), 2, "{bots:?}");
        let mut took: Vec<String> = bots
            .into_iter()
            .filter(|bot| accepted(&docker(&["logs", bot]), id))
            .collect();
        assert!(took.len() <= 1, "bots that accepted build {id}: {took:?}");
        took.pop()
    }

    /// Every object of the stack still on the node, by kind; what cannot be listed is left
    /// out (this runs while dropping, too, where it must not panic).
    fn leftovers(&self) -> Vec<String> {
        let label = format!("label=com.docker.stack.namespace={}", self.name);
        let mut left = Vec::new();
        for kind in [
            &["ps", "-aq"][..],
            &["service", "ls", "-q"],
            &["network", "ls", "-q"],
            &["volume", "ls", "-q"],
            &["config", "ls", "-q"],
            &["secret", "ls", "-q"],
        ] {
            let mut args = kind.to_vec();
            args.extend(["--filter", &label]);
            let Ok(listed) = Command::new("docker").args(&args).output() else {
                continue;
            };
            for id in String::from_utf8_lossy(&listed.stdout).split_whitespace() {
                left.push(format!("{} {id}", kind[0]));
            }
        }
        left
    }

    fn down(&self) {
        let down = root().join("deploy/swarm/down");
        run(down.to_str().expect("utf-8"), &["--name", &self.name], &[]);
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if !self.leftovers().is_empty() {
            let down = root().join("deploy/swarm/down");
            let _ = Command::new(down).args(["--name", &self.name]).status();
        }
        // The images of this build, tagged with the stack's name.
        for image in ["kiln-bot", "kiln-worker"] {
            let _ = Command::new("docker")
                .args(["rmi", &format!("{image}:{}", self.name)])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if self.made_swarm {
            let _ = Command::new("docker")
                .args(["swarm", "leave", "--force"])
                .stdout(Stdio::null())
                .status();
        }
    }
}

/// `git daemon` serving `repo` to the stack's containers, on the address the node has on
/// their gateway network (`docker_gwbridge`); stopped when dropped.
struct GitServer {
    url: String,
    _daemon: tokio::process::Child,
}

impl GitServer {
    async fn start(repo: &TestRepo) -> Self {
        let gateway = docker(&[
            "network",
            "inspect",
            "docker_gwbridge",
            "--format",
            "{{(index .IPAM.Config 0).Gateway}}",
        ]);
        let gateway = gateway.trim().to_owned();
        let port = free_port();
        let base = repo.bare.parent().expect("the bare repository's directory");
        // `git-daemon` itself, not `git daemon`, which would leave it behind when killed.
        let exec_path = run("git", &["--exec-path"], &[]);
        let daemon = tokio::process::Command::new(Path::new(exec_path.trim()).join("git-daemon"))
            .arg("--reuseaddr")
            .arg("--export-all")
            .arg(format!("--base-path={}", base.display()))
            .arg(format!("--listen={gateway}"))
            .arg(format!("--port={port}"))
            .arg(base)
            .stdin(Stdio::null())
            // It says so when the probe below hangs up: not worth showing.
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("git daemon starts");
        let addr = format!("{gateway}:{port}");
        wait_for("git daemon to listen", E2E_TIMEOUT, || async {
            tokio::net::TcpStream::connect(&addr).await.ok().map(drop)
        })
        .await;
        let name = repo.bare.file_name().expect("name").to_string_lossy();
        Self {
            url: format!("git://{addr}/{name}"),
            _daemon: daemon,
        }
    }
}

/// Sends a signed push of `commit` through the stack's proxy as `delivery`; the build's id.
async fn push(
    http: &reqwest::Client,
    stack: &Stack,
    git: &GitServer,
    commit: &str,
    delivery: &str,
) -> u64 {
    push_to(http, &stack.url(""), &git.url, "master", commit, delivery).await
}

/// Build `id` as the bot shows it, through the proxy; `None` while no bot answers.
async fn build(http: &reqwest::Client, stack: &Stack, id: u64) -> Option<serde_json::Value> {
    build_at(http, &stack.url(""), id).await
}

/// Waits for build `id` to end; the build.
async fn ended(http: &reqwest::Client, stack: &Stack, id: u64) -> serde_json::Value {
    ended_at(http, &stack.url(""), id, E2E_TIMEOUT * 2).await
}

/// How many consumers the workers' queue has, from the bot's metrics.
async fn consumers(http: &reqwest::Client, stack: &Stack) -> Option<u64> {
    let metrics = http
        .get(stack.url("/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    metrics
        .lines()
        .find(|l| l.starts_with("kiln_job_consumers{") && l.contains("linux/amd64"))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_installation_on_swarm() {
    let config = kiln_tests::config("");
    let stack = Stack::up(&config).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client");
    let repo = TestRepo::new();
    let git = GitServer::start(&repo).await;

    // A push is built: a step in a container, run by the stack's worker.
    let spec = format!(
        "steps:\n  hello:\n    image: {TEST_IMAGE}\n    run: echo built on the swarm > out.txt && cat out.txt\n"
    );
    let commit = repo.commit("master", "On the swarm", &[(".kiln.yml", &spec)]);
    let id = push(&http, &stack, &git, &commit, "swarm-1").await;
    let first = ended(&http, &stack, id).await;
    assert_eq!(first["status"], "passed", "{first:#}");
    let log = http
        .get(stack.url(&format!("/builds/{id}/logs?task=hello")))
        .send()
        .await
        .expect("the log")
        .text()
        .await
        .expect("text");
    assert!(log.contains("built on the swarm"), "{log}");

    // Three workers: the jobs of six builds spread over them.
    docker(&[
        "service",
        "scale",
        "--detach",
        &format!("{}=3", stack.service("worker")),
    ]);
    wait_for("three workers to consume", E2E_TIMEOUT * 2, || async {
        (consumers(&http, &stack).await == Some(3)).then_some(())
    })
    .await;
    let spec = "steps:\n  wait:\n    runner: shell\n    run: sleep 3\n";
    let commit = repo.commit("master", "Six at once", &[(".kiln.yml", spec)]);
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(push(&http, &stack, &git, &commit, &format!("swarm-spread-{n}")).await);
    }
    let mut workers = std::collections::BTreeSet::new();
    for id in ids {
        let build = ended(&http, &stack, id).await;
        assert_eq!(build["status"], "passed", "{build:#}");
        workers.insert(
            build["tasks"][0]["worker"]
                .as_str()
                .expect("a worker")
                .to_owned(),
        );
    }
    assert_eq!(workers.len(), 3, "the jobs ran on {workers:?}");

    // The bot that took the push killed mid-build: the other finishes it.
    let spec = "steps:\n  slow:\n    runner: shell\n    run: sleep 8\n";
    let commit = repo.commit("master", "Slow", &[(".kiln.yml", spec)]);
    let id = push(&http, &stack, &git, &commit, "swarm-kill").await;
    wait_for("the slow task to run", E2E_TIMEOUT, || async {
        build(&http, &stack, id)
            .await
            .filter(|b| b["tasks"][0]["status"] == "running")
    })
    .await;
    let taker = wait_for(
        "the log of the bot that took the push",
        E2E_TIMEOUT,
        || async { stack.bot_that_accepted(id) },
    )
    .await;
    docker(&["kill", &taker]);
    let slow = ended(&http, &stack, id).await;
    assert_eq!(slow["status"], "passed", "{slow:#}");

    // Down, nothing of it is left.
    stack.down();
    let left = stack.leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
}

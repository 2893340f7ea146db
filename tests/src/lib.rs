//! The end-to-end harness: a whole Kiln (bot and workers, in-process, or as processes of
//! their own for the benchmark) against the real RabbitMQ, Redis and Docker on this
//! machine, with the forge and chat faked at the HTTP level.
//!
//! Each [`Kiln`] takes a unique prefix for its queues, exchanges, Redis keys and containers,
//! and removes them when dropped, so tests run side by side on one broker. A missing service
//! fails the test with the command that starts it; nothing is skipped.

pub mod bench;
pub mod broker;
pub mod browser;
pub mod chaos;
pub mod discord;
pub mod events;
pub mod forge;
pub mod installation;
pub mod processes;
pub mod redis_server;
pub mod registry;
pub mod services;
pub mod sign_in;
pub mod slack;
pub mod statuses;
pub mod wine;
pub mod zulip;

use std::net::SocketAddr;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use kiln_shared::platform::Platform;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

pub use services::Services;

/// How long any end-to-end wait may take before the test fails: a few Docker runs, with
/// room for a loaded two-core machine.
pub const E2E_TIMEOUT: Duration = Duration::from_secs(60);

/// The repository the tests' bot is configured to build.
pub const REPO: &str = "acme/api";

/// The webhook secret of the test repository.
pub const TEST_SECRET: &str = "kiln-test-secret";

/// The image tasks run in, built locally by `deploy/dev/services`.
pub const TEST_IMAGE: &str = "kiln/busybox:latest";

/// The same for `linux/arm64`, run under QEMU emulation on x86_64.
pub const TEST_IMAGE_ARM64: &str = "kiln/busybox-arm64:latest";

/// The bot's configuration the tests share: the test repository, followed by `extra` (more
/// of the repository's keys, or further sections). Reconciliation is off: a test counts the
/// builds its own pushes make.
pub fn config(extra: &str) -> String {
    reconciling("0s", extra)
}

/// [`config`], with reconciliation every `every` (`1s`).
pub fn reconciling(every: &str, extra: &str) -> String {
    configured("http://kiln.test", every, extra)
}

/// [`config`] of a bot people reach at `public_url` (where a forge sends a browser back).
pub fn config_at(public_url: &str, extra: &str) -> String {
    configured(public_url, "0s", extra)
}

fn configured(public_url: &str, every: &str, extra: &str) -> String {
    format!(
        "public_url = \"{public_url}\"\n[reconcile]\nevery = \"{every}\"\n\
         [[repository]]\nname = \"{REPO}\"\nwebhook_secret = \"{TEST_SECRET}\"\n{extra}"
    )
}

/// A Kiln's state directory, `dir`, made ready for its workers: their shell tasks run as
/// `kiln-task`, who must reach the work directories in it and write in its
/// [`task_share`].
pub fn state_dir(dir: tempfile::TempDir) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let traversable = std::fs::Permissions::from_mode(0o711);
    std::fs::set_permissions(dir.path(), traversable).expect("chmod the state directory");
    let share = task_share(dir.path());
    std::fs::create_dir(&share).expect("the tasks' shared directory");
    std::fs::set_permissions(&share, std::fs::Permissions::from_mode(0o1777))
        .expect("chmod the tasks' shared directory");
    dir
}

/// The directory the shell tasks of the Kiln whose state is in `state` may use beside their
/// work directories (`kiln-worker --task-share`).
pub fn task_share(state: &std::path::Path) -> std::path::PathBuf {
    state.join("shared")
}

/// A port the system just gave out on loopback, so free for the next taker.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Sends a GitHub delivery of `event` to `url` (a bot's `/hooks/github`), signed with
/// `secret`: the status and the JSON answer (`null` when it is not JSON).
pub async fn post_github(
    http: &reqwest::Client,
    url: &str,
    event: &str,
    delivery: &str,
    body: &[u8],
    secret: &str,
) -> reqwest::Result<(u16, serde_json::Value)> {
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", github_signature(secret, body))
        .body(body.to_vec())
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or_default()))
}

/// Sends a signed push of `commit` on `branch` (cloned from `clone_url`) to the bot at `base`
/// as `delivery`; the answer must be `202`. The build's id.
pub async fn push_to(
    http: &reqwest::Client,
    base: &str,
    clone_url: &str,
    branch: &str,
    commit: &str,
    delivery: &str,
) -> u64 {
    let body = forge::push_payload(REPO, branch, commit, clone_url, "A commit");
    let url = format!("{base}/hooks/github");
    let (status, answer) = post_github(http, &url, "push", delivery, &body, TEST_SECRET)
        .await
        .unwrap_or_else(|e| panic!("{base} does not answer: {e}"));
    assert_eq!(status, 202, "{answer}");
    answer["build_id"].as_u64().expect("a build id")
}

/// `GET <base>/builds/{id}` as JSON; `None` when no bot answers or there is no such build.
pub async fn build_at(http: &reqwest::Client, base: &str, id: u64) -> Option<serde_json::Value> {
    let response = http.get(format!("{base}/builds/{id}")).send().await.ok()?;
    if response.status() != 200 {
        return None;
    }
    response.json().await.ok()
}

/// Waits at most `timeout` for build `id`, read from the bot at `base`, to end; the build.
pub async fn ended_at(
    http: &reqwest::Client,
    base: &str,
    id: u64,
    timeout: Duration,
) -> serde_json::Value {
    wait_for(&format!("build {id} to end"), timeout, || async {
        let build = build_at(http, base, id).await?;
        let status = build["status"].as_str()?;
        (!matches!(status, "queued" | "running")).then_some(build)
    })
    .await
}

/// `sha256=<hex>` of `body` under `secret`, as GitHub signs deliveries.
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Polls `probe` until it returns `Some`, failing the test after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut interval = tokio::time::interval(Duration::from_millis(50));
    loop {
        interval.tick().await;
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
    }
}

/// Sends Kiln's logs to the test's output (shown when a test fails): warnings by default,
/// or what `KILN_TEST_LOG` asks for, e.g. `KILN_TEST_LOG=kiln_worker=debug`.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KILN_TEST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Every test calls this; only the first call in a process installs the subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A running Kiln on its own prefix: bots and workers in this process, or a bot and a
/// worker as processes ([`Kiln::start_processes`]).
#[derive(Debug)]
pub struct Kiln {
    pub services: Services,
    pub prefix: String,
    pub bot_addr: SocketAddr,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// The bot and worker when they run as processes ([`Kiln::start_processes`]).
    processes: std::sync::Mutex<Vec<processes::Process>>,
    state: tempfile::TempDir,
}

impl Kiln {
    /// Starts a bot configured with `config` (TOML), and a worker for `linux/amd64` and one
    /// for `linux/arm64`.
    pub async fn start(config: &str) -> Self {
        Self::start_with(config, 1).await
    }

    /// Like [`Kiln::start`], with `bots` bots sharing the prefix: they take events from the
    /// same queue, as replicas of the bot would. Requests go to the first.
    pub async fn start_with(config: &str, bots: usize) -> Self {
        Self::launch(config, bots, &Platform::ALL).await
    }

    /// Like [`Kiln::start`], with a bot that serves only `platforms` (`kiln-bot --platforms`).
    pub async fn start_serving(config: &str, platforms: &[Platform]) -> Self {
        Self::launch(config, 1, platforms).await
    }

    /// Like [`Kiln::start`], on `services` (e.g. a Redis of the caller's own).
    pub async fn start_on(services: Services, config: &str) -> Self {
        Self::launch_on(services, config, 1, &Platform::ALL).await
    }

    /// Like [`Kiln::start_with_registry`] (or [`Kiln::start`] with no registry), with the
    /// configuration `config` makes of the bot's own URL (`http://127.0.0.1:<port>`).
    pub async fn start_addressed(
        config: impl FnOnce(&str) -> String,
        registry: Option<&registry::TestRegistry>,
    ) -> Self {
        let services = Services::require().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        Self::launch_listening(
            services,
            &config(&url),
            1,
            &Platform::ALL,
            Workers::Usual(registry),
            Some(listener),
        )
        .await
    }

    /// Like [`Kiln::start`], with workers that pull from and push to `registry`.
    pub async fn start_with_registry(config: &str, registry: &registry::TestRegistry) -> Self {
        let services = Services::require().await;
        Self::launch_with(
            services,
            config,
            1,
            &Platform::ALL,
            Workers::Usual(Some(registry)),
        )
        .await
    }

    /// Like [`Kiln::start`], with no worker at all: the test adds its own
    /// ([`Kiln::add_worker`]).
    pub async fn start_without_workers(config: &str) -> Self {
        let services = Services::require().await;
        Self::launch_with(services, config, 1, &Platform::ALL, Workers::None).await
    }

    /// Starts a worker of `platform` named `<prefix>-<name>`, with a state and store
    /// directory of its own, on the Docker engine at `engine` (the local default when none),
    /// keeping images, artifacts and caches in `registry`.
    pub fn add_worker(
        &self,
        name: &str,
        platform: Platform,
        engine: Option<&str>,
        registry: &registry::TestRegistry,
    ) -> AddedWorker {
        let name = format!("{}-{name}", self.prefix);
        let settings = kiln_worker::Settings {
            amqp_url: self.services.amqp_url.clone(),
            redis_url: self.services.redis_url.clone(),
            tls_ca: None,
            prefix: self.prefix.clone(),
            platform,
            slots: 2,
            state_dir: self.state.path().join(&name),
            work_dirs: Default::default(),
            store_dir: self.state.path().join(&name).join("store"),
            secrets_dir: Some(self.secrets_dir()),
            advertise_host: "127.0.0.1".into(),
            registry: Some(registry.addr.clone()),
            registry_auth: Some(registry.auth.clone()),
            docker_host: engine.map(str::to_owned),
            metrics_listen: None,
            task_user: Some("kiln-task".into()),
            task_shares: vec![task_share(self.state.path())],
            name: name.clone(),
        };
        let stop = self.shutdown.child_token();
        AddedWorker {
            name,
            task: tokio::spawn(kiln_worker::run(settings, stop.clone())),
            stop,
        }
    }

    async fn launch(config: &str, bots: usize, platforms: &[Platform]) -> Self {
        Self::launch_on(Services::require().await, config, bots, platforms).await
    }

    async fn launch_on(
        services: Services,
        config: &str,
        bots: usize,
        platforms: &[Platform],
    ) -> Self {
        Self::launch_with(services, config, bots, platforms, Workers::Usual(None)).await
    }

    async fn launch_with(
        services: Services,
        config: &str,
        bots: usize,
        platforms: &[Platform],
        workers: Workers<'_>,
    ) -> Self {
        Self::launch_listening(services, config, bots, platforms, workers, None).await
    }

    /// Launches with the first bot on `listener` when there is one.
    async fn launch_listening(
        services: Services,
        config: &str,
        bots: usize,
        platforms: &[Platform],
        workers: Workers<'_>,
        mut listener: Option<tokio::net::TcpListener>,
    ) -> Self {
        init_logging();
        let prefix = services::unique_prefix();
        let state = state_dir(tempfile::tempdir().expect("temp dir"));
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();

        let config = kiln_bot::Config::parse(config).expect("test config is valid");
        let mut bot_addr = None;
        for n in 0..bots.max(1) {
            let connections = kiln_bot::Connections {
                amqp_url: services.amqp_url.clone(),
                redis_url: services.redis_url.clone(),
                tls_ca: None,
                prefix: prefix.clone(),
                state_dir: state.path().join(format!("bot-{n}")),
                platforms: platforms.to_vec(),
            };
            let app = kiln_bot::connect(config.clone(), &connections)
                .await
                .expect("bot connects");
            let listener = match listener.take() {
                Some(listener) => listener,
                None => tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind"),
            };
            bot_addr.get_or_insert(listener.local_addr().expect("address"));
            tasks.push(tokio::spawn(kiln_bot::run(listener, app, shutdown.clone())));
        }

        if let Workers::Usual(registry) = workers {
            tasks.extend(spawn_workers(
                &services,
                &prefix,
                state.path(),
                &shutdown,
                registry,
            ));
        }

        Self {
            services,
            prefix,
            bot_addr: bot_addr.expect("at least one bot"),
            http: reqwest::Client::new(),
            shutdown,
            tasks,
            processes: Default::default(),
            state,
        }
    }

    /// Like [`Kiln::start`], with the bot and one `linux/amd64` worker of `slots` slots as
    /// processes of their own (the `kiln-bot` and `kiln-worker` binaries), as operators run
    /// them.
    pub async fn start_processes(config: &str, slots: usize) -> Self {
        Self::start_processes_on(Services::require().await, config, slots).await
    }

    /// Like [`Kiln::start_processes`], on `services` (e.g. a broker of the caller's own).
    pub async fn start_processes_on(services: Services, config: &str, slots: usize) -> Self {
        init_logging();
        let prefix = services::unique_prefix();
        let state = state_dir(tempfile::tempdir().expect("temp dir"));
        let (bot, bot_addr) = processes::start_bot(config, &services, &prefix, state.path()).await;
        let worker = processes::start_worker(&services, &prefix, state.path(), slots).await;
        Self {
            services,
            prefix,
            bot_addr,
            http: reqwest::Client::new(),
            shutdown: CancellationToken::new(),
            tasks: Vec::new(),
            processes: std::sync::Mutex::new(vec![bot, worker]),
            state,
        }
    }

    /// The id of the process named `name` (`kiln-bot`, `kiln-worker`), when they run as
    /// processes.
    pub fn process_id(&self, name: &str) -> Option<u32> {
        let processes = self.processes.lock().expect("not poisoned");
        processes.iter().find(|p| p.name == name)?.id()
    }

    /// Stops the process named `name` (SIGTERM) and checks that it stopped cleanly.
    pub async fn stop_process(&self, name: &str) {
        let process = {
            let mut processes = self.processes.lock().expect("not poisoned");
            let at = processes.iter().position(|p| p.name == name);
            processes.remove(at.unwrap_or_else(|| panic!("no process {name}")))
        };
        process.stop().await;
    }

    /// A `kiln-worker` process of this Kiln for `linux/amd64`, named `<prefix>-<name>`, with
    /// `slots` slots and `env` besides the usual settings; returned once it is present.
    pub async fn worker_process(
        &self,
        name: &str,
        slots: usize,
        env: &[(&str, &str)],
    ) -> processes::Process {
        let (services, state) = (&self.services, self.state.path());
        processes::start_worker_with(services, &self.prefix, state, slots, name, env).await
    }

    /// Whether build `id`'s first task runs on the worker named `worker` at `attempt`.
    pub async fn first_task_runs_on(&self, id: u64, attempt: u64, worker: &str) -> bool {
        let Some(build) = self.build(id).await else {
            return false;
        };
        let task = &build["tasks"][0];
        task["status"] == "running" && task["attempt"] == attempt && task["worker"] == worker
    }

    /// The directory of this Kiln's state: its bots' and workers' directories.
    pub fn state_path(&self) -> &std::path::Path {
        self.state.path()
    }

    /// The artifact and cache store the workers share.
    pub fn store_dir(&self) -> std::path::PathBuf {
        self.state.path().join("store")
    }

    /// Where this Kiln's shell tasks may read and write beside their work directories: the
    /// files a task waits for or leaves for the test go there.
    pub fn task_share(&self) -> std::path::PathBuf {
        task_share(self.state.path())
    }

    /// Where the workers read secret values, one file per name.
    pub fn secrets_dir(&self) -> std::path::PathBuf {
        self.state.path().join("secrets")
    }

    /// The bot's URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.bot_addr)
    }

    /// The installation's keys as its bots name them: with the task names' secret the first
    /// bot made.
    pub async fn keys(&self) -> kiln_shared::keys::Keys {
        keys_of(&self.services.redis_url, &self.prefix).await
    }

    /// Sends a GitHub delivery to the bot, signed with `secret`.
    pub async fn send_github(
        &self,
        event: &str,
        delivery: &str,
        body: &[u8],
        secret: &str,
    ) -> (u16, serde_json::Value) {
        let url = self.url("/hooks/github");
        post_github(&self.http, &url, event, delivery, body, secret)
            .await
            .expect("the bot answers")
    }

    /// Sends a GitLab webhook delivery with `token` in `X-Gitlab-Token` and, unless empty,
    /// `key` as its `Idempotency-Key`; returns the status and the JSON answer.
    pub async fn send_gitlab(
        &self,
        event: &str,
        key: &str,
        body: &[u8],
        token: &str,
    ) -> (u16, serde_json::Value) {
        let mut request = self
            .http
            .post(self.url("/hooks/gitlab"))
            .header("content-type", "application/json")
            .header("x-gitlab-event", event)
            .header("x-gitlab-token", token);
        if !key.is_empty() {
            request = request.header("idempotency-key", key);
        }
        let response = request
            .body(body.to_vec())
            .send()
            .await
            .expect("the bot answers");
        let status = response.status().as_u16();
        let json = response.json().await.unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    /// Announces `commit` of `repo`'s `branch` with GitHub's push payload, signed with the
    /// test secret, checks that the bot accepted it (202), and returns the new build's id.
    pub async fn push(
        &self,
        repo: &forge::TestRepo,
        branch: &str,
        commit: &str,
        delivery: &str,
    ) -> u64 {
        let clone_url = repo.clone_url();
        push_to(
            &self.http,
            &self.url(""),
            &clone_url,
            branch,
            commit,
            delivery,
        )
        .await
    }

    /// Gives `command` through `POST /api/commands` as the operator whose token is `token`:
    /// the HTTP status and the JSON answer.
    pub async fn command(&self, token: &str, command: &str) -> (u16, serde_json::Value) {
        let response = self
            .http
            .post(self.url("/api/commands"))
            .bearer_auth(token)
            .json(&serde_json::json!({ "command": command }))
            .send()
            .await
            .expect("the bot answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("json"))
    }

    /// The same, with the answer's text only.
    pub async fn command_text(&self, token: &str, command: &str) -> (u16, String) {
        let (status, reply) = self.command(token, command).await;
        (
            status,
            reply["text"].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// One task's log, as plain text (`GET /builds/{id}/logs?task=…`).
    pub async fn task_log(&self, id: u64, task: &str) -> String {
        self.http
            .get(self.url(&format!("/builds/{id}/logs?task={task}")))
            .send()
            .await
            .expect("logs answer")
            .text()
            .await
            .expect("text")
    }

    /// Follows one task's log (`GET /builds/{id}/logs?task=…&follow=true`): the answer, its
    /// body still coming.
    pub async fn follow_log(&self, id: u64, task: &str) -> reqwest::Response {
        self.http
            .get(self.url(&format!("/builds/{id}/logs?task={task}&follow=true")))
            .send()
            .await
            .expect("the bot answers")
    }

    /// `GET /builds/{id}` as JSON, or `None` when there is no such build.
    pub async fn build(&self, id: u64) -> Option<serde_json::Value> {
        build_at(&self.http, &self.url(""), id).await
    }

    /// Waits until build `id` has a final status, and returns it.
    pub async fn finished_build(&self, id: u64) -> serde_json::Value {
        ended_at(&self.http, &self.url(""), id, E2E_TIMEOUT).await
    }

    /// Stops the bots and the workers, and surfaces an error any ended with. What they
    /// left behind stays until the `Kiln` is dropped, for the test to look at.
    pub async fn halt(&mut self) {
        self.shutdown.cancel();
        for task in self.tasks.drain(..) {
            task.await.expect("no panic").expect("clean exit");
        }
        let processes = std::mem::take(&mut *self.processes.lock().expect("not poisoned"));
        for process in processes {
            process.stop().await;
        }
    }

    /// Starts a bot on this Kiln's prefix, as a bot restarted after [`Kiln::halt`] would be
    /// (with a fresh state directory); requests go to it from then on.
    pub async fn start_bot(&mut self, config: &str) {
        if self.shutdown.is_cancelled() {
            self.shutdown = CancellationToken::new();
        }
        let connections = kiln_bot::Connections {
            amqp_url: self.services.amqp_url.clone(),
            redis_url: self.services.redis_url.clone(),
            tls_ca: None,
            prefix: self.prefix.clone(),
            state_dir: self
                .state
                .path()
                .join(format!("bot-again-{}", self.tasks.len())),
            platforms: Platform::ALL.to_vec(),
        };
        let config = kiln_bot::Config::parse(config).expect("test config is valid");
        let app = kiln_bot::connect(config, &connections)
            .await
            .expect("bot connects");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        self.bot_addr = listener.local_addr().expect("address");
        self.tasks.push(tokio::spawn(kiln_bot::run(
            listener,
            app,
            self.shutdown.clone(),
        )));
    }

    /// Starts the workers again on this Kiln's prefix, as after [`Kiln::halt`]: one for
    /// `linux/amd64` and one for `linux/arm64`, with their state directories as they were.
    pub async fn start_workers(&mut self) {
        if self.shutdown.is_cancelled() {
            self.shutdown = CancellationToken::new();
        }
        let workers = spawn_workers(
            &self.services,
            &self.prefix,
            self.state.path(),
            &self.shutdown,
            None,
        );
        self.tasks.extend(workers);
    }

    /// Halts everything, then cleans up.
    pub async fn stop(mut self) {
        self.halt().await;
    }
}

/// Spawns a worker for `linux/amd64` and one for `linux/arm64` under `prefix`, each with a
/// state directory in `state`, advertising loopback (where the tests reach environments),
/// given `registry` if there is one.
fn spawn_workers(
    services: &Services,
    prefix: &str,
    state: &std::path::Path,
    shutdown: &CancellationToken,
    registry: Option<&registry::TestRegistry>,
) -> Vec<tokio::task::JoinHandle<anyhow::Result<()>>> {
    [Platform::LinuxAmd64, Platform::LinuxArm64]
        .into_iter()
        .map(|platform| {
            let settings = kiln_worker::Settings {
                amqp_url: services.amqp_url.clone(),
                redis_url: services.redis_url.clone(),
                tls_ca: None,
                prefix: prefix.to_owned(),
                platform,
                slots: 2,
                name: format!("{prefix}-{}", platform.label()),
                state_dir: state.join(format!("worker-{}", platform.label())),
                work_dirs: Default::default(),
                store_dir: state.join("store"), // see Kiln::store_dir
                secrets_dir: Some(state.join("secrets")), // see Kiln::secrets_dir
                advertise_host: "127.0.0.1".into(),
                registry: registry.map(|r| r.addr.clone()),
                registry_auth: registry.map(|r| r.auth.clone()),
                docker_host: None,
                metrics_listen: None,
                task_user: Some("kiln-task".into()),
                task_shares: vec![task_share(state)],
            };
            tokio::spawn(kiln_worker::run(settings, shutdown.clone()))
        })
        .collect()
}

/// The workers a Kiln starts with.
enum Workers<'a> {
    None,
    /// One for `linux/amd64` and one for `linux/arm64`, given the registry if there is one.
    Usual(Option<&'a registry::TestRegistry>),
}

/// A worker a test added ([`Kiln::add_worker`]).
#[derive(Debug)]
pub struct AddedWorker {
    /// As task records and events name it.
    pub name: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl AddedWorker {
    /// Stops it and waits until it is gone.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

impl Drop for Kiln {
    fn drop(&mut self) {
        self.shutdown.cancel();
        // Before the cleanup, which they would otherwise race.
        if let Ok(mut processes) = self.processes.lock() {
            processes.clear();
        }
        let services = self.services.clone();
        let prefix = self.prefix.clone();
        // Cleanup needs async clients; run it on its own thread so dropping never blocks a
        // runtime worker and never needs one.
        let cleaned = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(services.remove_everything_under(&prefix));
        });
        let _ = cleaned.join();
    }
}

/// The keys of the installation under `prefix` in the Redis at `redis_url`, as its bots name
/// them: with the task names the first bot made (or makes now, as a bot would).
pub async fn keys_of(redis_url: &str, prefix: &str) -> kiln_shared::keys::Keys {
    let keys = kiln_shared::keys::Keys::new(prefix);
    let redis = redis::Client::open(redis_url)
        .expect("Redis URL")
        .get_connection_manager()
        .await
        .expect("Redis answers");
    let names = kiln_bot::store::task_names(&redis, &keys)
        .await
        .expect("the task names");
    keys.with_names(names)
}

//! A small installation of Kiln as processes, for tests that do things to its services (a
//! broker restarted, a cluster's node stopped) under a stream of signed pushes, and the
//! pushes themselves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::forge::{TestRepo, push_payload};
use crate::processes::{self, Process};
use crate::services::{Services, unique_prefix};
use crate::{E2E_TIMEOUT, REPO, TEST_SECRET, config, ended_at, post_github, wait_for};

/// The installation's workers, each named `<prefix>-<name>`.
const WORKERS: [&str; 2] = ["worker-a", "worker-b"];

/// One quick task, in the shell: these tests are about delivery, not running.
const SPEC: &str = "steps:\n  t:\n    runner: shell\n    run: 'true'\n";

/// How often a stream of pushes sends one.
const PUSH_EVERY: Duration = Duration::from_millis(400);

/// How long a push held while Redis was away may take to become a build.
const HELD_BUILT_WITHIN: Duration = Duration::from_secs(120);

/// How long a retrying sender waits before it sends a push again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// How long a push's answer may take: longer than the bot waits for a confirm.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// A bot and two workers as processes (`kiln-bot`, `kiln-worker`), as operators run them,
/// on `services` of the test's choosing, building one commit of a one-task pipeline.
#[derive(Debug)]
pub struct Installation {
    pub services: Services,
    pub prefix: String,
    pub bot: Process,
    pub bot_addr: std::net::SocketAddr,
    pub workers: Vec<Process>,
    repo: TestRepo,
    commit: String,
    http: reqwest::Client,
    state: tempfile::TempDir,
}

impl Installation {
    /// Starts the bot and the workers on `services`, and sees a first build pass.
    pub async fn start(services: Services) -> Self {
        Self::start_with(services, |_| SPEC.to_owned()).await
    }

    /// Like [`Installation::start`], building a commit whose `.kiln.yml` is `spec` of the
    /// directory its shell tasks may write in.
    pub async fn start_with(
        services: Services,
        spec: impl FnOnce(&std::path::Path) -> String,
    ) -> Self {
        let prefix = unique_prefix();
        // `KILN_KEEP=1` keeps the processes' logs for a look after the test.
        let state = crate::state_dir(
            tempfile::Builder::new()
                .prefix("kiln-installation-")
                .disable_cleanup(std::env::var_os("KILN_KEEP").is_some())
                .tempdir()
                .expect("temp dir"),
        );
        eprintln!("logs in {}", state.path().display());
        let repo = TestRepo::new();
        let spec = spec(&crate::task_share(state.path()));
        let commit = repo.commit("master", "One quick task", &[(".kiln.yml", &spec)]);
        let (bot, bot_addr) =
            processes::start_bot(&config(""), &services, &prefix, state.path()).await;
        let mut workers = Vec::new();
        for name in WORKERS {
            workers.push(
                processes::start_named_worker(&services, &prefix, state.path(), 2, name).await,
            );
        }
        let installation = Self {
            services,
            prefix,
            bot,
            bot_addr,
            workers,
            repo,
            commit,
            http: reqwest::Client::builder()
                .timeout(ANSWER_TIMEOUT)
                .build()
                .expect("HTTP client"),
            state,
        };
        // A running installation: a build has gone all the way through before any outage.
        let first = installation.pusher().push("warm-up").await;
        let status = installation.ended(first.build, E2E_TIMEOUT).await;
        assert_eq!(status, "passed", "the first build");
        installation
    }

    /// The workers' names, as they connect and say they are present.
    pub fn worker_names(&self) -> Vec<String> {
        WORKERS
            .iter()
            .map(|name| format!("{}-{name}", self.prefix))
            .collect()
    }

    /// Where its shell tasks may write beside their work directories.
    pub fn task_share(&self) -> std::path::PathBuf {
        crate::task_share(self.state.path())
    }

    /// Starts worker `n` again, under its name and state, once its process has ended.
    pub async fn restart_worker(&mut self, n: usize) {
        let state = self.state.path();
        self.workers[n] =
            processes::start_named_worker(&self.services, &self.prefix, state, 2, WORKERS[n]).await;
    }

    /// Starts the bot again where it listened, once its process has ended.
    pub async fn restart_bot(&mut self) {
        let state = self.state.path();
        self.bot = processes::start_bot_at(
            &config(""),
            &self.services,
            &self.prefix,
            state,
            self.bot_addr,
        )
        .await;
    }

    /// Build `id`'s status; `None` while the bot does not answer or knows no such build.
    pub async fn status(&self, id: u64) -> Option<String> {
        let build = crate::build_at(&self.http, &self.url(""), id).await?;
        Some(build["status"].as_str()?.to_owned())
    }

    /// The bot's URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.bot_addr)
    }

    /// Checks that the bot and the workers are still running.
    pub fn check_running(&mut self, when: &str) {
        for process in std::iter::once(&mut self.bot).chain(self.workers.iter_mut()) {
            if let Some(status) = process.exited() {
                panic!("{} exited ({status}) {when}", process.name);
            }
        }
    }

    /// A pusher for this installation's commit, to move into a task.
    pub fn pusher(&self) -> Pusher {
        Pusher {
            http: self.http.clone(),
            url: self.url("/hooks/github"),
            body: Arc::new(push_payload(
                REPO,
                "master",
                &self.commit,
                &self.repo.clone_url(),
                "One quick task",
            )),
            redis_url: self.services.redis_url.clone(),
            keys: kiln_shared::keys::Keys::new(&self.prefix),
        }
    }

    /// Waits for build `id` to end, within `timeout`, and returns its status.
    pub async fn ended(&self, id: u64, timeout: Duration) -> String {
        let build = ended_at(&self.http, &self.url(""), id, timeout).await;
        build["status"].as_str().unwrap_or_default().to_owned()
    }

    /// `/readyz`: its status and answer.
    pub async fn readyz(&self) -> (u16, serde_json::Value) {
        let response = self
            .http
            .get(self.url("/readyz"))
            .send()
            .await
            .expect("the bot answers /readyz");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON"))
    }

    /// How many builds the installation has numbered so far.
    pub async fn builds_numbered(&self) -> u64 {
        let mut redis = redis::Client::open(self.services.redis_url.as_str())
            .and_then(|c| c.get_connection())
            .expect("Redis");
        let key = kiln_shared::keys::Keys::new(&self.prefix).build_sequence();
        redis::cmd("GET")
            .arg(key)
            .query::<Option<u64>>(&mut redis)
            .expect("GET")
            .unwrap_or(0)
    }

    /// How many builds wait in the outbox.
    pub async fn outbox_len(&self) -> u64 {
        let mut redis = redis::Client::open(self.services.redis_url.as_str())
            .and_then(|c| c.get_connection())
            .expect("Redis");
        redis::cmd("ZCARD")
            .arg(format!("{}:outbox", self.prefix))
            .query(&mut redis)
            .expect("ZCARD")
    }

    /// Checks that every answered push became its own build and that each passed; returns
    /// how many waited in the outbox.
    pub async fn check_builds(&self, answers: &[Answer]) -> usize {
        let mut ids: Vec<u64> = answers.iter().map(|a| a.build).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), answers.len(), "two pushes became one build");
        for id in &ids {
            let status = self.ended(*id, E2E_TIMEOUT).await;
            assert_eq!(status, "passed", "build {id}");
        }
        wait_for("the outbox to empty", E2E_TIMEOUT, || async {
            (self.outbox_len().await == 0).then_some(())
        })
        .await;
        answers.iter().filter(|a| a.outbox).count()
    }

    /// Stops the bot and the workers (SIGTERM), checking each stopped cleanly.
    pub async fn stop_processes(&mut self) {
        let processes = std::iter::once(&mut self.bot).chain(self.workers.iter_mut());
        futures_util::future::join_all(processes.map(Process::stop_in_place)).await;
    }

    /// Stops everything cleanly (SIGTERM), checking each process stopped well, and removes
    /// what the installation left.
    pub async fn stop(mut self) {
        self.stop_processes().await;
        let prefix = self.prefix.clone();
        self.services.remove_everything_under(&prefix).await;
        if std::env::var_os("KILN_KEEP_STATE").is_some() {
            let kept = self.state.keep();
            eprintln!("kept {}", kept.display());
        }
    }
}

/// What the bot answered a push.
#[derive(Debug, Clone)]
pub struct Answer {
    pub build: u64,
    /// Whether its request waited in the outbox.
    pub outbox: bool,
}

/// Sends signed pushes of one commit, each with a delivery id of its own.
#[derive(Debug, Clone)]
pub struct Pusher {
    http: reqwest::Client,
    url: String,
    body: Arc<Vec<u8>>,
    /// Where a held push's build is found once Redis is back.
    redis_url: String,
    keys: kiln_shared::keys::Keys,
}

impl Pusher {
    /// Sends one push as `delivery`; the answer must be `202`.
    pub async fn push(&self, delivery: &str) -> Answer {
        let sent = post_github(
            &self.http,
            &self.url,
            "push",
            delivery,
            &self.body,
            TEST_SECRET,
        );
        let (status, answer) = sent
            .await
            .unwrap_or_else(|e| panic!("push {delivery} got no answer: {e}"));
        assert_eq!(status, 202, "push {delivery}: {answer}");
        Answer {
            build: answer["build_id"].as_u64().expect("a build id"),
            outbox: answer["outbox"].as_bool().unwrap_or(false),
        }
    }

    /// Sends one push as `delivery` as a forge that retries would: again, with the same
    /// delivery id, while the bot does not answer or answers `503`, at most `tries` times.
    /// The answer, or why there is none.
    pub async fn push_retrying(&self, delivery: &str, tries: usize) -> Result<Answer, String> {
        let mut why = String::new();
        for _ in 0..tries {
            let sent = post_github(
                &self.http,
                &self.url,
                "push",
                delivery,
                &self.body,
                TEST_SECRET,
            );
            match sent.await {
                Ok((202, answer)) if answer["held"] == true => {
                    return self.held_build(delivery).await.map(|build| Answer {
                        build,
                        outbox: false,
                    });
                }
                Ok((202, answer)) => {
                    return Ok(Answer {
                        build: answer["build_id"].as_u64().ok_or("no build id")?,
                        outbox: answer["outbox"].as_bool().unwrap_or(false),
                    });
                }
                Ok((status, answer)) => why = format!("{status}: {answer}"),
                Err(error) => why = error.to_string(),
            }
            tokio::time::sleep(RETRY_AFTER).await;
        }
        Err(format!("push {delivery}: {why}"))
    }

    /// The build a push held in RabbitMQ (Redis being away) became, once Redis is back.
    async fn held_build(&self, delivery: &str) -> Result<u64, String> {
        let key = self.keys.delivery("github", delivery);
        let client = redis::Client::open(self.redis_url.as_str()).map_err(|e| e.to_string())?;
        let deadline = tokio::time::Instant::now() + HELD_BUILT_WITHIN;
        while tokio::time::Instant::now() < deadline {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && let Ok(Some(id)) = redis::cmd("GET")
                    .arg(&key)
                    .query_async::<Option<u64>>(&mut conn)
                    .await
            {
                return Ok(id);
            }
            tokio::time::sleep(RETRY_AFTER).await;
        }
        Err(format!(
            "push {delivery} was held, and no build came of it in {HELD_BUILT_WITHIN:?}"
        ))
    }

    /// Pushes every [`PUSH_EVERY`] until `stop` is set, each push in a task of its own so
    /// a slow answer does not hold up the stream; returns every answer.
    pub async fn stream(self, name: &'static str, stop: Arc<AtomicBool>) -> Vec<Answer> {
        let mut pushes = Vec::new();
        let mut every = tokio::time::interval(PUSH_EVERY);
        while !stop.load(Ordering::Relaxed) {
            every.tick().await;
            let pusher = self.clone();
            let delivery = format!("{name}-{}", pushes.len());
            pushes.push(tokio::spawn(async move { pusher.push(&delivery).await }));
        }
        let mut answers = Vec::new();
        for push in pushes {
            answers.push(push.await.expect("a push panicked"));
        }
        answers
    }

    /// Sends `count` pushes named `<name>-<n>`, one every `every`, each in a task of its own;
    /// returns every answer.
    pub async fn burst(&self, name: &str, count: usize, every: Duration) -> Vec<Answer> {
        let mut pushes = Vec::with_capacity(count);
        let mut ticks = tokio::time::interval(every);
        for n in 0..count {
            ticks.tick().await;
            let pusher = self.clone();
            let delivery = format!("{name}-{n}");
            pushes.push(tokio::spawn(async move { pusher.push(&delivery).await }));
        }
        let mut answers = Vec::with_capacity(count);
        for push in pushes {
            answers.push(push.await.expect("a push panicked"));
        }
        answers
    }
}

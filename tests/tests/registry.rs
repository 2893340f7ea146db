//! Images from a registry, end to end on the real services and the registry
//! `deploy/dev/services` runs with authentication: a step image that exists only in the
//! registry is pulled and runs; a missing one fails its task once, with the reason; wrong
//! credentials are refused with the reason and shown nowhere; a step with `network: egress`
//! reaches a server outside its own network, and one without cannot; `kiln-worker gc
//! --registry` takes out the tags of gone branches and the images no branch names.

use kiln_shared::wire::Event;
use kiln_tests::events::{next_event, subscribe};
use kiln_tests::forge::TestRepo;
use kiln_tests::registry::{TestRegistry, docker};
use kiln_tests::{Kiln, TEST_IMAGE};

fn config() -> String {
    kiln_tests::config("")
}

/// The only task of a finished build.
fn only_task(build: &serde_json::Value) -> &serde_json::Value {
    let tasks = build["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 1, "{build:#}");
    &tasks[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_image_only_in_the_registry_is_pulled_and_runs() {
    let registry = TestRegistry::require();
    let kiln = Kiln::start_with_registry(&config(), &registry).await;
    let image = registry.push_test_image(&format!("{}/busybox:1", kiln.prefix));
    let repo = TestRepo::new();
    let spec =
        format!("steps:\n  hello:\n    image: {image}\n    run: echo hello from the registry\n");
    let commit = repo.commit("master", "Pulled", &[(".kiln.yml", &spec)]);
    let id = kiln.push(&repo, "master", &commit, "delivery-pull").await;
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    let log = kiln.task_log(id, "hello").await;
    assert!(log.contains("hello from the registry"), "{log}");
    assert!(
        log.contains(&format!("[kiln] image `{image}`: pulled in")),
        "{log}"
    );
    docker(&["rmi", &image], None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_fails_its_task_once_with_the_reason() {
    let registry = TestRegistry::require();
    let kiln = Kiln::start_with_registry(&config(), &registry).await;
    let mut events = subscribe(&kiln, "task.#").await;
    let image = format!("{}/{}/nothing:1", registry.addr, kiln.prefix);
    let repo = TestRepo::new();
    let spec = format!("steps:\n  missing:\n    image: {image}\n    run: echo never\n");
    let commit = repo.commit("master", "Missing", &[(".kiln.yml", &spec)]);
    let id = kiln
        .push(&repo, "master", &commit, "delivery-missing")
        .await;
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "failed", "{build:#}");
    let task = only_task(&build);
    assert_eq!(task["status"], "failed", "{task:#}");
    assert_eq!(task["attempt"], 1, "not tried again: {task:#}");
    let finished = loop {
        if let Event::TaskFinished(finished) = next_event(&mut events).await
            && finished.build.id.0 == id
        {
            break finished;
        }
    };
    let reason = finished.outcome.to_string();
    assert!(
        reason.contains(&format!(
            "image `{image}` from registry {}: not found",
            registry.addr
        )),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused_with_the_reason_and_shown_nowhere() {
    let registry = TestRegistry::require();
    let dir = tempfile::tempdir().expect("temp dir");
    let (wrong, password) = registry.with_wrong_password(dir.path());
    let kiln = Kiln::start_with_registry(&config(), &wrong).await;
    let mut events = subscribe(&kiln, "#").await;
    let image = registry.push_test_image(&format!("{}/private:1", kiln.prefix));
    let repo = TestRepo::new();
    let spec = format!("steps:\n  private:\n    image: {image}\n    run: echo never\n");
    let commit = repo.commit("master", "Refused", &[(".kiln.yml", &spec)]);
    let id = kiln
        .push(&repo, "master", &commit, "delivery-refused")
        .await;
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "failed", "{build:#}");
    assert_eq!(only_task(&build)["attempt"], 1, "{build:#}");

    let mut seen = Vec::new();
    loop {
        let event = next_event(&mut events).await;
        let done = matches!(&event, Event::BuildFinished(f) if f.build.id.0 == id);
        seen.push(serde_json::to_string(&event).expect("json"));
        if done {
            break;
        }
    }
    let events_text = seen.join("\n");
    assert!(events_text.contains("unauthorised"), "{events_text}");
    let log = kiln.task_log(id, "private").await;
    let record = serde_json::to_string(&build).expect("json");
    let mut redis = redis::Client::open(kiln.services.redis_url.as_str())
        .and_then(|c| c.get_connection())
        .expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", kiln.prefix))
        .query(&mut redis)
        .expect("keys");
    let mut stored = String::new();
    for key in keys {
        let dump: Option<Vec<u8>> = redis::cmd("DUMP")
            .arg(&key)
            .query(&mut redis)
            .expect("dump");
        stored.push_str(&String::from_utf8_lossy(&dump.unwrap_or_default()));
    }
    for (what, text) in [
        ("the events", &events_text),
        ("the log", &log),
        ("the build record", &record),
        ("Redis", &stored),
    ] {
        assert!(!text.contains(&password), "the password is in {what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_with_egress_reaches_out_and_one_without_cannot() {
    let registry = TestRegistry::require();
    let kiln = Kiln::start_with_registry(&config(), &registry).await;
    // A server on a network of the test's own, published on the host: outside any task's.
    let network = format!("{}-outside", kiln.prefix);
    let server = format!("{}-server", kiln.prefix);
    docker(&["network", "create", &network], None);
    docker(
        &[
            "run",
            "-d",
            "--name",
            &server,
            "--network",
            &network,
            "-p",
            "0:80",
            TEST_IMAGE,
            "sh",
            "-c",
            "mkdir -p /w && echo hello-from-outside > /w/index.html && httpd -f -p 80 -h /w",
        ],
        None,
    );
    let port = std::process::Command::new("docker")
        .args(["port", &server, "80/tcp"])
        .output()
        .expect("docker port");
    let port = String::from_utf8_lossy(&port.stdout);
    let port = port
        .lines()
        .next()
        .and_then(|l| l.rsplit(':').next())
        .expect("a published port")
        .trim()
        .to_owned();
    let fetch = format!(
        "GW=$(ip route | awk '/default/ {{print $3}}'); printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 5 nc ${{GW:-172.17.0.1}} {port} > reply || true; cat reply; grep -q hello-from-outside reply"
    );
    let spec = format!(
        "steps:\n  out:\n    image: {TEST_IMAGE}\n    network: egress\n    run: \"{fetch}\"\n  closed:\n    image: {TEST_IMAGE}\n    run: \"{fetch}\"\n"
    );
    let repo = TestRepo::new();
    let commit = repo.commit("master", "Egress", &[(".kiln.yml", &spec)]);
    let id = kiln.push(&repo, "master", &commit, "delivery-egress").await;
    let build = kiln.finished_build(id).await;
    docker(&["rm", "-f", &server], None);
    docker(&["network", "rm", &network], None);
    let status = |name: &str| {
        build["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| t["status"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(status("out").as_deref(), Some("passed"), "{build:#}");
    assert_eq!(status("closed").as_deref(), Some("failed"), "{build:#}");
    assert!(
        kiln.task_log(id, "out")
            .await
            .contains("hello-from-outside")
    );
    assert!(
        !kiln
            .task_log(id, "closed")
            .await
            .contains("hello-from-outside")
    );
}

/// The tags of `repository` in the registry, by `curl` with the registry's credentials.
fn registry_tags(registry: &TestRegistry, repository: &str) -> Vec<String> {
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&registry.auth).expect("auth")).expect("json");
    let auth = config["auths"][&registry.addr]["auth"]
        .as_str()
        .expect("the registry's credentials");
    let output = std::process::Command::new("curl")
        .args(["-s", "--max-time", "10", "-H"])
        .arg(format!("Authorization: Basic {auth}"))
        .arg(format!(
            "http://{}/v2/{repository}/tags/list",
            registry.addr
        ))
        .output()
        .expect("curl runs");
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let mut tags: Vec<String> = answer["tags"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    tags
}

/// Pushes a one-label image of its own (a digest no other image has) under each of `names`.
fn push_own_image(registry: &TestRegistry, names: &[String], label: &str) {
    let dockerfile = format!("FROM {TEST_IMAGE}\nLABEL kiln.test={label}\n");
    let mut build = std::process::Command::new("docker")
        .args(["build", "--quiet", "-t", &names[0], "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("docker build");
    use std::io::Write as _;
    build
        .stdin
        .take()
        .expect("stdin")
        .write_all(dockerfile.as_bytes())
        .expect("write the Dockerfile");
    assert!(build.wait().expect("docker build").success());
    for name in names {
        docker(&["tag", &names[0], name], None);
        docker(&["push", "--quiet", name], Some(&registry.auth));
    }
    for name in names {
        docker(&["rmi", name], None);
    }
}

/// The operator whose token `kiln-worker gc --registry` gives the bot.
const OPERATOR_TOKEN: &str = "gc-operator-token-0123456789";

/// `kiln-worker gc --registry` with every image old (`--max-age 0s`), asking the bot at
/// `bot`; what it printed, once it has passed.
async fn gc(registry: &TestRegistry, bot: &str, dry_run: bool) -> String {
    let mut command = tokio::process::Command::new(kiln_tests::processes::binary("kiln-worker"));
    command
        .args(["gc", "--max-age", "0s", "--registry", &registry.addr])
        .arg("--registry-auth")
        .arg(&registry.auth)
        .args(["--bot-url", bot, "--bot-token", OPERATOR_TOKEN]);
    if dry_run {
        command.arg("--dry-run");
    }
    let output = command.output().await.expect("kiln-worker gc runs");
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{said}{errors}");
    said
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_of_the_registry_takes_out_gone_branches_and_unnamed_images() {
    use kiln_shared::template::branch_slug;
    let registry = TestRegistry::require();
    let repo = TestRepo::new();
    repo.commit("master", "Kept", &[("README", "kept\n")]);
    // A repository name of the test's own: the registry is shared with other tests, and gc
    // leaves alone what the bot does not build.
    let name = format!("{}/api", kiln_tests::services::unique_prefix());
    let config = format!(
        "public_url = \"http://kiln.test\"\n[[repository]]\nname = \"{name}\"\n\
         webhook_secret = \"{}\"\nclone_url = \"{}\"\n\
         [[operator]]\nname = \"gc\"\ntoken = \"{OPERATOR_TOKEN}\"\n",
        kiln_tests::TEST_SECRET,
        repo.clone_url()
    );
    let kiln = Kiln::start_without_workers(&config).await;
    let repository = format!("kiln/{name}/app");
    let image = |tag: &str| format!("{}/{repository}:{tag}", registry.addr);
    let (master, gone) = (branch_slug("master"), branch_slug("feature/gone"));
    let (kept, old) = ("0123456789abcdef0123", "aaaaaaaaaaaaaaaaaaaa");
    push_own_image(&registry, &[image(&master), image(kept)], &name);
    push_own_image(
        &registry,
        &[image(&gone), image(old)],
        &format!("{name}-gone"),
    );
    let mut all = vec![
        master.clone(),
        kept.to_owned(),
        gone.clone(),
        old.to_owned(),
    ];
    all.sort();
    assert_eq!(registry_tags(&registry, &repository), all);

    let bot = kiln.url("");
    let anyone = kiln.http.get(kiln.url("/api/repositories")).send().await;
    assert_eq!(
        anyone.expect("the bot answers").status(),
        401,
        "branches are for operators"
    );
    let said = gc(&registry, &bot, true).await;
    assert!(
        said.contains(&format!("{repository}:{gone}: would take out")),
        "{said}"
    );
    assert_eq!(
        registry_tags(&registry, &repository),
        all,
        "a dry run changes nothing"
    );

    let said = gc(&registry, &bot, false).await;
    assert!(
        said.contains("1 branch tag(s) and 1 image(s) taken out"),
        "{said}"
    );
    assert_eq!(
        registry_tags(&registry, &repository),
        [kept.to_owned(), master.clone()],
        "the live branch's tag and the image it names stay"
    );
    kiln.stop().await;
}

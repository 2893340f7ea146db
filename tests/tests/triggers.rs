//! What starts a build besides a push to a branch, end to end on the real services: a pushed
//! tag builds the commit it names as a tag's build, with the steps its `when: tag` selects;
//! a push no webhook announced (made while the bot was down) is found by reconciliation;
//! build variables, schedules, superseded builds, concurrency groups, priority, and pull
//! requests (a fork's waits for a writer's `/kiln ok-to-test`, and gets no secrets).

use kiln_tests::forge::{TestRepo, github_comment_payload, pull_request_payload, tag_payload};
use kiln_tests::statuses::{FORGE_TOKEN, FakeForge};
use kiln_tests::{E2E_TIMEOUT, Kiln, REPO, TEST_IMAGE, TEST_SECRET, wait_for};

/// The token of the operator [`with_operator`] configures.
const TOKEN: &str = "alice-token-0123456789";

/// The tests' configuration with an operator, `alice`, who gives commands with [`TOKEN`].
fn with_operator() -> String {
    kiln_tests::config(&format!(
        "[[operator]]\nname = \"alice\"\ntoken = \"{TOKEN}\"\n"
    ))
}

/// Every build runs `unit`; only a `v*` tag's runs `release`; only a branch's runs `nightly`.
fn pipeline() -> String {
    format!(
        "steps:\n  \
         unit:\n    image: {TEST_IMAGE}\n    \
         run: echo \"$KILN_EVENT tag=${{KILN_TAG:-none}} branch=${{KILN_BRANCH:-none}}\"\n  \
         release:\n    image: {TEST_IMAGE}\n    when: {{ tag: ['v*'] }}\n    \
         run: echo \"releasing $KILN_TAG\"\n  \
         nightly:\n    image: {TEST_IMAGE}\n    when: {{ branch: master }}\n    \
         run: 'true'\n"
    )
}

/// The web console's page as [`TOKEN`]'s operator sees it, after giving `command` there if
/// one is given; `None` when the bot does not answer.
async fn console(kiln: &Kiln, command: Option<&str>) -> Option<String> {
    let client = reqwest::Client::new();
    let request = match command {
        Some(command) => client
            .post(kiln.url("/console"))
            .form(&[("command", command)]),
        None => client.get(kiln.url("/console")),
    };
    let answer = request
        .header("cookie", format!("kiln_console={TOKEN}"))
        .send()
        .await
        .ok()?;
    answer.text().await.ok()
}

/// The names of a build's tasks, sorted.
fn task_names(build: &serde_json::Value) -> Vec<&str> {
    let tasks = build["tasks"].as_array().expect("tasks");
    let mut names: Vec<&str> = tasks.iter().filter_map(|t| t["name"].as_str()).collect();
    names.sort_unstable();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_tag_builds_its_commit_with_its_release_steps() {
    let kiln = Kiln::start(&kiln_tests::config("")).await;
    let repo = TestRepo::new();
    let commit = repo.commit("master", "Release it", &[(".kiln.yml", &pipeline())]);
    repo.tag("v1.2.0", &commit);
    repo.tag("nightly-7", &commit);

    let body = tag_payload(REPO, "v1.2.0", &commit, &repo.clone_url());
    let (status, answer) = kiln.send_github("push", "t-1", &body, TEST_SECRET).await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["build_id"].as_u64().expect("a build id");
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    assert_eq!(
        (
            build["event"].as_str(),
            build["tag"].as_str(),
            build["branch"].as_str(),
            build["commit"].as_str()
        ),
        (Some("tag"), Some("v1.2.0"), None, Some(commit.as_str())),
        "{build:#}"
    );
    assert_eq!(task_names(&build), ["release", "unit"], "{build:#}");
    let log = kiln.task_log(id, "unit").await;
    assert_eq!(
        log.lines().last(),
        Some("tag tag=v1.2.0 branch=none"),
        "{log}"
    );
    let log = kiln.task_log(id, "release").await;
    assert_eq!(log.lines().last(), Some("releasing v1.2.0"), "{log}");

    // A tag the release steps do not match; then the branch itself, for comparison.
    let body = tag_payload(REPO, "nightly-7", &commit, &repo.clone_url());
    let (status, answer) = kiln.send_github("push", "t-2", &body, TEST_SECRET).await;
    assert_eq!(status, 202, "{answer}");
    let build = kiln
        .finished_build(answer["build_id"].as_u64().expect("id"))
        .await;
    assert_eq!(task_names(&build), ["unit"], "{build:#}");
    let id = kiln.push(&repo, "master", &commit, "t-3").await;
    let build = kiln.finished_build(id).await;
    assert_eq!(task_names(&build), ["nightly", "unit"], "{build:#}");
    assert_eq!(
        kiln.task_log(id, "unit").await.lines().last(),
        Some("push tag=none branch=master")
    );
    kiln.stop().await;
}

/// The builds of `kiln` numbered above `after`, as the bot has them, in order.
async fn builds_after(kiln: &Kiln, after: u64) -> Vec<serde_json::Value> {
    let mut builds = Vec::new();
    let mut id = after + 1;
    while let Some(build) = kiln.build(id).await {
        builds.push(build);
        id += 1;
    }
    builds
}

/// Waits until reconciliation has made two more passes: it builds a new head of `release/1`,
/// which no webhook announces, on its second sighting. Returns that head, whose build is the
/// test's mark, not one it counts.
async fn two_more_passes(kiln: &Kiln, repo: &TestRepo, after: u64, mark: &str) -> String {
    let head = repo.commit("release/1", mark, &[]);
    wait_for("reconciliation to build a mark", E2E_TIMEOUT, || async {
        let builds = builds_after(kiln, after).await;
        builds
            .iter()
            .any(|b| b["commit"] == head.as_str())
            .then_some(())
    })
    .await;
    head
}

/// The builds numbered above `after` but the marks of [`two_more_passes`].
async fn counted_after(kiln: &Kiln, after: u64, marks: &[&str]) -> Vec<serde_json::Value> {
    let builds = builds_after(kiln, after).await;
    let marked = |b: &serde_json::Value| marks.iter().any(|m| b["commit"] == *m);
    builds.into_iter().filter(|b| !marked(b)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_made_while_the_bot_was_down_is_found_and_built_once() {
    let config = kiln_tests::reconciling("1s", "reconcile_branches = [\"release/*\"]\n");
    let mut kiln = Kiln::start(&config).await;
    let repo = TestRepo::new();
    let spec =
        format!("steps:\n  unit:\n    image: {TEST_IMAGE}\n    run: echo \"on $KILN_BRANCH\"\n");
    let first = repo.commit("master", "Add the pipeline", &[(".kiln.yml", &spec)]);
    let told = kiln.push(&repo, "master", &first, "r-1").await;
    assert_eq!(kiln.finished_build(told).await["status"], "passed");

    // While the bot is down: a push to master, a new release branch, a new feature branch.
    kiln.halt().await;
    let missed = repo.commit("master", "Pushed while Kiln was down", &[]);
    let release = repo.commit("release/1", "Cut the release", &[]);
    let feature = repo.commit("feature/x", "Try something", &[]);
    kiln.start_bot(&config).await;
    kiln.start_workers().await;

    // The first pass builds master's head and the release branch, which the configuration
    // names; never the feature branch no webhook named.
    let found = wait_for("the missed pushes to be built", E2E_TIMEOUT, || async {
        let builds = builds_after(&kiln, told).await;
        (builds.len() >= 2).then_some(builds)
    })
    .await;
    let mut seen: Vec<(&str, &str)> = found
        .iter()
        .map(|b| {
            (
                b["branch"].as_str().unwrap_or(""),
                b["commit"].as_str().unwrap_or(""),
            )
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        [("master", missed.as_str()), ("release/1", release.as_str())],
        "{found:#?}"
    );
    for build in &found {
        assert_eq!(build["note"], "found by reconciliation", "{build:#}");
        assert_eq!(build["event"], "push", "{build:#}");
        let id = build["id"].as_u64().expect("id");
        assert_eq!(kiln.finished_build(id).await["status"], "passed");
    }

    // Later passes find nothing more to build: not the same heads again, not the feature.
    let first_mark = two_more_passes(&kiln, &repo, told, "Mark 1").await;
    let builds = counted_after(&kiln, told, &[&first_mark]).await;
    assert_eq!(builds.len(), 2, "{builds:#?}");
    assert!(
        builds.iter().all(|b| b["commit"] != feature.as_str()),
        "{builds:#?}"
    );

    // A push whose webhook comes is built once, by the webhook, not again by a pass.
    let next = repo.commit("master", "Announced", &[]);
    let id = kiln.push(&repo, "master", &next, "r-2").await;
    assert_eq!(kiln.finished_build(id).await["status"], "passed");
    let second_mark = two_more_passes(&kiln, &repo, told, "Mark 2").await;
    let builds = counted_after(&kiln, told, &[&first_mark, &second_mark]).await;
    assert_eq!(builds.len(), 3, "{builds:#?}");
    kiln.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variables_asked_for_reach_the_tasks_and_choose_their_steps() {
    let kiln = Kiln::start(&with_operator()).await;
    let repo = TestRepo::new();
    let spec = format!(
        "steps:\n  \
         unit:\n    image: {TEST_IMAGE}\n    env: {{ DEPLOY_TO: nowhere, FROM_STEP: kept }}\n    \
         run: echo \"to $DEPLOY_TO, $FROM_STEP, on $KILN_BRANCH\"\n  \
         deploy:\n    image: {TEST_IMAGE}\n    when: {{ vars: {{ DEPLOY_TO: 'eu-*' }} }}\n    \
         run: echo \"deploying to $DEPLOY_TO\"\n"
    );
    let commit = repo.commit("master", "Deploy it", &[(".kiln.yml", &spec)]);
    let pushed = kiln.push(&repo, "master", &commit, "v-1").await;
    let build = kiln.finished_build(pushed).await;
    assert_eq!(task_names(&build), ["unit"], "{build:#}");
    assert_eq!(
        kiln.task_log(pushed, "unit").await.lines().last(),
        Some("to nowhere, kept, on master")
    );

    // The build's variables are above the step's own, and choose the deploy step.
    let (status, reply) = kiln
        .command(TOKEN, &format!("build {REPO} master DEPLOY_TO=eu-west"))
        .await;
    assert_eq!(status, 200, "{reply}");
    let id = pushed + 1;
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    assert_eq!(build["vars"], serde_json::json!({ "DEPLOY_TO": "eu-west" }));
    assert_eq!(task_names(&build), ["deploy", "unit"], "{build:#}");
    assert_eq!(
        kiln.task_log(id, "unit").await.lines().last(),
        Some("to eu-west, kept, on master")
    );
    assert_eq!(
        kiln.task_log(id, "deploy").await.lines().last(),
        Some("deploying to eu-west")
    );

    // A variable that does not match leaves the step out; Kiln's own names are refused.
    let (status, reply) = kiln
        .command(TOKEN, &format!("build {REPO} master DEPLOY_TO=us-east"))
        .await;
    assert_eq!(status, 200, "{reply}");
    let build = kiln.finished_build(id + 1).await;
    assert_eq!(task_names(&build), ["unit"], "{build:#}");
    let (_, reply) = kiln
        .command_text(
            TOKEN,
            &format!("build {REPO} master KILN_BRANCH=production"),
        )
        .await;
    assert!(
        reply.contains("`KILN_BRANCH` is Kiln's own variable"),
        "{reply}"
    );
    assert!(
        kiln.build(id + 2).await.is_none(),
        "a refused command builds nothing"
    );
    kiln.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_due_time_of_a_schedule_is_built_once_by_two_bots() {
    let config = kiln_tests::config(
        "clone_url = \"{CLONE_URL}\"\n[[repository.schedule]]\nname = \"often\"\n\
         cron = \"*/2 * * * * *\"\nvars = { SUITE = \"full\" }\n",
    );
    let repo = TestRepo::new();
    let spec = format!(
        "steps:\n  unit:\n    image: {TEST_IMAGE}\n    \
         run: echo \"$KILN_EVENT $SUITE on $KILN_BRANCH\"\n  \
         pushed-only:\n    image: {TEST_IMAGE}\n    when: {{ event: [push] }}\n    run: 'true'\n"
    );
    let commit = repo.commit("master", "Test it often", &[(".kiln.yml", &spec)]);
    let config = config.replace("{CLONE_URL}", &repo.clone_url());
    let kiln = Kiln::start_with(&config, 2).await;

    // Every two seconds a due time; the first is noted, not built. Three builds, then a look.
    let scheduled = wait_for("three scheduled builds", E2E_TIMEOUT, || async {
        let builds = builds_after(&kiln, 0).await;
        (builds.len() >= 3).then_some(builds)
    })
    .await;
    let mut notes: Vec<&str> = scheduled
        .iter()
        .map(|b| b["note"].as_str().unwrap_or_default())
        .collect();
    assert!(
        notes.iter().all(|n| n.starts_with("scheduled: often at ")),
        "{notes:?}"
    );
    notes.sort_unstable();
    notes.dedup();
    assert_eq!(
        notes.len(),
        scheduled.len(),
        "a due time built twice: {scheduled:#?}"
    );
    let first = &scheduled[0];
    assert_eq!(
        (first["event"].as_str(), first["commit"].as_str()),
        (Some("schedule"), Some(commit.as_str())),
        "{first:#}"
    );
    let id = first["id"].as_u64().expect("id");
    let build = kiln.finished_build(id).await;
    assert_eq!(task_names(&build), ["unit"], "{build:#}");
    assert_eq!(
        kiln.task_log(id, "unit").await.lines().last(),
        Some("schedule full on master")
    );
    kiln.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_in_the_default_branch_s_file_is_built() {
    let config = kiln_tests::config(&format!(
        "clone_url = \"{{CLONE_URL}}\"\n[schedules]\nread_every = \"1s\"\n\
         [[operator]]\nname = \"alice\"\ntoken = \"{TOKEN}\"\n"
    ));
    let repo = TestRepo::new();
    let spec = format!(
        "steps:\n  unit:\n    image: {TEST_IMAGE}\n    \
         run: echo \"$KILN_EVENT $SUITE on $KILN_BRANCH\"\n\
         schedules:\n  often:\n    cron: '*/2 * * * * *'\n    vars: {{ SUITE: from-file }}\n"
    );
    let commit = repo.commit("master", "Test it often", &[(".kiln.yml", &spec)]);
    let kiln = Kiln::start(&config.replace("{CLONE_URL}", &repo.clone_url())).await;

    let scheduled = wait_for(
        "two builds the file's schedule made",
        E2E_TIMEOUT,
        || async {
            let builds = builds_after(&kiln, 0).await;
            (builds.len() >= 2).then_some(builds)
        },
    )
    .await;
    let first = &scheduled[0];
    assert_eq!(
        (first["event"].as_str(), first["commit"].as_str()),
        (Some("schedule"), Some(commit.as_str())),
        "{first:#}"
    );
    assert!(
        first["note"]
            .as_str()
            .is_some_and(|n| n.starts_with("scheduled: often at ")),
        "{first:#}"
    );
    let id = first["id"].as_u64().expect("id");
    kiln.finished_build(id).await;
    assert_eq!(
        kiln.task_log(id, "unit").await.lines().last(),
        Some("schedule from-file on master")
    );
    let (_, status) = kiln.command_text(TOKEN, &format!("status {REPO}")).await;
    assert!(
        status.contains("Schedule often: `*/2 * * * * *` (UTC) builds master")
            && status.contains("(.kiln.yml)"),
        "{status}"
    );
    kiln.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_push_cancels_the_branchs_older_build_but_not_on_master() {
    let kiln = Kiln::start(&kiln_tests::config("interruptible = true\n")).await;
    let repo = TestRepo::new();
    // A commit whose file `speed` says `slow` runs for a minute.
    let spec = format!(
        "steps:\n  unit:\n    image: {TEST_IMAGE}\n    \
         run: 'if [ \"$(cat speed)\" = slow ]; then sleep 60; fi'\n"
    );
    let running = |id: u64| {
        let kiln = &kiln;
        async move {
            wait_for("the slow build to run", E2E_TIMEOUT, || async {
                let build = kiln.build(id).await?;
                (build["tasks"][0]["status"] == "running").then_some(())
            })
            .await;
        }
    };
    let files = [(".kiln.yml", spec.as_str()), ("speed", "slow")];
    let slow = repo.commit("feature/x", "Slow", &files);
    let older = kiln.push(&repo, "feature/x", &slow, "s-1").await;
    running(older).await;
    let fast = repo.commit("feature/x", "Fast", &[("speed", "fast")]);
    let newer = kiln.push(&repo, "feature/x", &fast, "s-2").await;
    let build = kiln.finished_build(older).await;
    assert_eq!(build["status"], "cancelled", "{build:#}");
    assert_eq!(
        build["error"],
        format!("cancelled by build #{newer}, a newer push to feature/x"),
        "{build:#}"
    );
    assert_eq!(kiln.finished_build(newer).await["status"], "passed");

    // On master the older build runs on.
    let slow = repo.commit("master", "Slow on master", &files);
    let older = kiln.push(&repo, "master", &slow, "s-3").await;
    running(older).await;
    let again = kiln.push(&repo, "master", &slow, "s-4").await;
    wait_for("the newer build to run", E2E_TIMEOUT, || async {
        let build = kiln.build(again).await?;
        (build["tasks"][0]["status"] == "running").then_some(())
    })
    .await;
    let build = kiln.build(older).await.expect("the older build");
    assert_eq!(build["status"], "running", "{build:#}");
    kiln.stop().await;
}

/// `<word> <seconds>` in a task's log, as its commands printed it.
fn moment(log: &str, word: &str) -> u64 {
    log.lines()
        .find_map(|line| line.split_once(&format!("{word} "))?.1.trim().parse().ok())
        .unwrap_or_else(|| panic!("`{word}` in the log:\n{log}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_of_one_concurrency_group_take_turns_across_builds() {
    let kiln = Kiln::start(&with_operator()).await;
    let repo = TestRepo::new();
    let spec = format!(
        "steps:\n  deploy:\n    image: {TEST_IMAGE}\n    concurrency: production\n    \
         run: ['echo \"from $(date +%s)\"', 'sleep 2', 'echo \"until $(date +%s)\"']\n"
    );
    let first = repo.commit("master", "Deploy", &[(".kiln.yml", &spec)]);
    let second = repo.commit("hotfix", "Deploy the fix", &[]);
    let ids = [
        kiln.push(&repo, "master", &first, "g-1").await,
        kiln.push(&repo, "hotfix", &second, "g-2").await,
    ];
    // While one deploys, the other's card says what it waits for.
    wait_for("a card to say its deploy waits", E2E_TIMEOUT, || async {
        let page = console(&kiln, None).await?;
        page.contains("deploy: waiting for group production")
            .then_some(())
    })
    .await;
    let mut spans = Vec::new();
    for id in ids {
        let build = kiln.finished_build(id).await;
        assert_eq!(build["status"], "passed", "{build:#}");
        let log = kiln.task_log(id, "deploy").await;
        spans.push((moment(&log, "from"), moment(&log, "until")));
    }
    spans.sort_unstable();
    assert!(
        spans[1].0 >= spans[0].1,
        "the second deploy started after the first ended: {spans:?}"
    );
    kiln.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_requests_build_their_heads_and_a_forks_waits_for_ok_to_test() {
    let github = FakeForge::github().await;
    let repo = TestRepo::new();
    let config = kiln_tests::config(&format!(
        "clone_url = \"{}\"\nsecrets = {{ DEPLOY_TOKEN = [\"*\"] }}\n\
         trusted_authors = [\"trusted-dev\"]\n\
         [github]\ntoken = \"{FORGE_TOKEN}\"\napi_url = \"{}\"\n\
         [[operator]]\nname = \"alice\"\ntoken = \"{TOKEN}\"\n",
        repo.clone_url(),
        github.url()
    ));
    let kiln = Kiln::start(&config).await;
    std::fs::create_dir_all(kiln.secrets_dir()).expect("mkdir");
    std::fs::write(kiln.secrets_dir().join("DEPLOY_TOKEN"), "s3cret-value").expect("write");
    let spec = format!(
        "steps:\n  unit:\n    image: {TEST_IMAGE}\n    secrets: [DEPLOY_TOKEN]\n    \
         run: echo \"$KILN_EVENT PR $KILN_PR $KILN_PR_SOURCE_BRANCH into \
         $KILN_PR_TARGET_BRANCH on $KILN_BRANCH, token ${{#DEPLOY_TOKEN}} long\"\n"
    );
    let own = repo.commit("feature/x", "The feature", &[(".kiln.yml", &spec)]);
    let send = |action: &str, number: u64, head: (&str, &str, bool), author: &str| {
        let body = pull_request_payload(REPO, action, number, head, author, &repo.clone_url());
        let delivery = format!("pr-{number}-{action}-{author}");
        let kiln = &kiln;
        async move {
            kiln.send_github("pull_request", &delivery, &body, TEST_SECRET)
                .await
        }
    };

    // The repository's own branch: built at once, with its statuses on the head.
    let (status, answer) = send("opened", 7, ("feature/x", &own, false), "octo").await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["build_id"].as_u64().expect("a build id");
    let build = kiln.finished_build(id).await;
    let log = kiln.task_log(id, "unit").await;
    assert_eq!(build["status"], "passed", "{build:#}\n{log}");
    assert_eq!(build["event"], "merge_request", "{build:#}");
    assert_eq!(
        build["note"], "request #7 from feature/x into master",
        "{build:#}"
    );
    assert_eq!(
        kiln.task_log(id, "unit").await.lines().last(),
        Some("merge_request PR 7 feature/x into master on feature/x, token 12 long")
    );
    wait_for("the head's status", E2E_TIMEOUT, || async {
        github
            .statuses()
            .iter()
            .any(|s| s.commit == own && s.state == "success")
            .then_some(())
    })
    .await;

    // A fork's: nothing until a writer says it is fine; then built without secrets.
    let forked = repo.commit("fork/feature", "From a fork", &[]);
    github.open_pull(8, "feature", true);
    github.push_to_pull(8, &forked);
    github.grant("alice", "write");
    github.grant("mallory", "read");
    let (status, answer) = send("opened", 8, ("feature", &forked, true), "mallory").await;
    assert_eq!(status, 200, "{answer}");
    let ignored = answer["ignored"].as_str().unwrap_or_default();
    assert!(ignored.contains("`/kiln ok-to-test`"), "{answer}");
    assert!(kiln.build(id + 1).await.is_none(), "a fork's request waits");
    let comment_saying = |author: &str, user: u64, delivery: &str, text: &str| {
        let body = github_comment_payload(REPO, 8, author, user, text);
        let (kiln, delivery) = (&kiln, delivery.to_owned());
        async move {
            let (status, answer) = kiln
                .send_github("issue_comment", &delivery, &body, TEST_SECRET)
                .await;
            assert_eq!(status, 202, "{answer}");
        }
    };
    let comment = |author: &str, user: u64, delivery: &str| {
        comment_saying(author, user, delivery, "/kiln ok-to-test")
    };
    let answered = |needle: &'static str| {
        let github = &github;
        async move {
            wait_for(
                &format!("a comment with `{needle}`"),
                E2E_TIMEOUT,
                || async {
                    github
                        .comments()
                        .into_iter()
                        .map(|(_, _, body)| body)
                        .find(|body| body.contains(needle))
                },
            )
            .await
        }
    };
    comment("mallory", 666, "ok-1").await;
    answered("mallory may not `ok-to-test`").await;
    assert!(
        kiln.build(id + 1).await.is_none(),
        "only a writer's word builds it"
    );
    // A word about a head that has moved since builds nothing.
    comment_saying("alice", 101, "ok-stale", "/kiln ok-to-test 1234567").await;
    answered("The head of request #8 is").await;
    assert!(
        kiln.build(id + 1).await.is_none(),
        "a moved head is not built"
    );
    comment("alice", 101, "ok-2").await;
    let said = answered("is queued, for alice").await;
    assert!(
        said.contains(&format!("Build #{} of request #8", id + 1)),
        "{said}"
    );
    let build = kiln.finished_build(id + 1).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    assert_eq!(build["commit"], forked.as_str(), "{build:#}");
    assert_eq!(
        kiln.task_log(id + 1, "unit").await.lines().last(),
        Some("merge_request PR 8 feature into master on pr/8, token 0 long"),
        "no secret reaches a fork's build"
    );
    comment("alice", 101, "ok-3").await;
    answered("is being built already: build #").await;

    // A new push to the fork's request needs the word again: given in chat this time.
    let more = repo.commit("fork/feature", "More from the fork", &[]);
    github.push_to_pull(8, &more);
    let (status, answer) = send("synchronize", 8, ("feature", &more, true), "mallory").await;
    assert_eq!(status, 200, "{answer}");
    assert!(kiln.build(id + 2).await.is_none(), "a new head waits again");
    let (status, reply) = kiln
        .command_text(TOKEN, &format!("ok-to-test {REPO} 8"))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply.starts_with(&format!("Build #{} of request #8", id + 2)),
        "{reply}"
    );
    let build = kiln.finished_build(id + 2).await;
    assert_eq!(build["commit"], more.as_str(), "{build:#}");

    // A trusted author's fork is built at once, still without secrets.
    let (status, answer) = send("opened", 9, ("other", &forked, true), "trusted-dev").await;
    assert_eq!(status, 202, "{answer}");
    let build = kiln
        .finished_build(answer["build_id"].as_u64().expect("id"))
        .await;
    assert_eq!(build["status"], "passed", "{build:#}");
    kiln.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_built_merged_with_its_target_where_the_repository_asks() {
    let repo = TestRepo::new();
    let kiln = Kiln::start(&kiln_tests::config(&format!(
        "clone_url = \"{}\"\nbuild_merge_result = true\n",
        repo.clone_url()
    )))
    .await;
    let spec = format!("steps:\n  unit:\n    image: {TEST_IMAGE}\n    run: cat feature target\n");
    let base = repo.commit("master", "The pipeline", &[(".kiln.yml", &spec)]);
    let head = repo.commit(
        "feature/y",
        "The feature",
        &[("feature", "from the request\n")],
    );
    repo.reset("master", &base);
    let target = repo.commit("master", "Meanwhile", &[("target", "from its target\n")]);

    let body = pull_request_payload(
        REPO,
        "opened",
        8,
        ("feature/y", &head, false),
        "octo",
        &repo.clone_url(),
    );
    let (status, answer) = kiln
        .send_github("pull_request", "merge-8", &body, TEST_SECRET)
        .await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["build_id"].as_u64().expect("a build id");
    let build = kiln.finished_build(id).await;
    let log = kiln.task_log(id, "unit").await;
    assert_eq!(build["status"], "passed", "{build:#}\n{log}");
    assert_eq!(build["commit"], head.as_str(), "{build:#}");
    assert_eq!(build["merged_with"], target.as_str(), "{build:#}");
    let lines: Vec<&str> = log.lines().rev().take(2).collect();
    assert_eq!(lines, ["from its target", "from the request"], "{log}");
    kiln.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_run_by_hand_waits_for_run_and_retry_runs_one_task_again() {
    let kiln = Kiln::start(&with_operator()).await;
    let repo = TestRepo::new();
    let spec = format!(
        "steps:\n  \
         unit:\n    image: {TEST_IMAGE}\n    run: echo unit\n  \
         deploy:\n    image: {TEST_IMAGE}\n    needs: [unit]\n    when: {{ manual: true }}\n    \
         run: echo deploying\n  \
         smoke:\n    image: {TEST_IMAGE}\n    needs: [deploy]\n    run: echo smoke\n"
    );
    let commit = repo.commit("master", "Ship it by hand", &[(".kiln.yml", &spec)]);
    let id = kiln.push(&repo, "master", &commit, "m-1").await;
    let build = kiln.finished_build(id).await;
    assert_eq!(
        build["status"], "passed",
        "the only steps not run are run by hand: {build:#}"
    );
    let status_of = |build: &serde_json::Value, task: &str| {
        let tasks = build["tasks"].as_array().expect("tasks");
        let task = tasks.iter().find(|t| t["name"] == task).expect("the task");
        task["status"].as_str().unwrap_or_default().to_owned()
    };
    assert_eq!(status_of(&build, "unit"), "passed");
    assert_eq!(status_of(&build, "deploy"), "manual");
    assert_eq!(status_of(&build, "smoke"), "manual");

    let (_, reply) = kiln.command_text(TOKEN, &format!("run {id} unit")).await;
    assert!(reply.contains("is not run by hand"), "{reply}");
    // The console's card of the build has a Run button for the step, which runs it.
    let page = console(&kiln, None).await.expect("the console");
    let button = format!("name=\"command\" value=\"run {id} deploy\"><button");
    assert!(page.contains(&button), "{page}");
    let command = format!("run {id} deploy");
    let page = console(&kiln, Some(&command)).await.expect("the console");
    let run = id + 1;
    assert!(page.contains(&format!("Build #{run} runs")), "{page}");
    let build = kiln.finished_build(run).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    for task in ["unit", "deploy", "smoke"] {
        assert_eq!(status_of(&build, task), "passed", "{task}: {build:#}");
    }
    assert_eq!(
        kiln.task_log(run, "deploy").await.lines().last(),
        Some("deploying")
    );
    assert_eq!(
        build["tasks"][0]["worker"],
        serde_json::Value::Null,
        "unit is taken: {build:#}"
    );

    // One task again, with what needs it; the rest as it passed.
    let (status, reply) = kiln
        .command_text(TOKEN, &format!("retry {run} smoke"))
        .await;
    assert_eq!(status, 200, "{reply}");
    let build = kiln.finished_build(run + 1).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    assert_eq!(
        build["note"],
        format!("retry of `smoke` of #{run}"),
        "{build:#}"
    );
    assert_eq!(
        kiln.task_log(run + 1, "smoke").await.lines().last(),
        Some("smoke")
    );
    kiln.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_priority_build_overtakes_the_normal_jobs_queued_before_it() {
    // Builds of `hotfix/*` are of high priority; `master`'s are normal.
    let kiln = Kiln::start(&kiln_tests::config(&format!(
        "high_priority_branches = [\"hotfix/*\"]\n\
         [[operator]]\nname = \"alice\"\ntoken = \"{TOKEN}\"\n"
    )))
    .await;
    let share = kiln.task_share();
    let (go, order) = (share.join("go"), share.join("order"));
    // Each task says when it starts; the first ones then hold the worker's two slots until
    // `go` is there, while the rest wait in the queue.
    let step = |name: &str| {
        format!(
            "  {name}:\n    runner: shell\n    shards: {}\n    run:\n      \
             - echo \"$KILN_BRANCH $KILN_TASK\" >> {order}\n      \
             - for i in $(seq 1 600); do [ -e {go} ] && break; sleep 0.05; done\n",
            LOW / 2,
            order = order.display(),
            go = go.display(),
        )
    };
    let spec = format!("steps:\n{}{}", step("one"), step("two"));
    let repo = TestRepo::new();
    let commit = repo.commit("master", "Much to do", &[(".kiln.yml", &spec)]);
    let fix = format!(
        "steps:\n  fix:\n    runner: shell\n    shards: {HIGH}\n    \
         run: echo \"$KILN_BRANCH $KILN_TASK\" >> {}\n",
        order.display()
    );
    repo.commit("hotfix/1", "Fix it", &[(".kiln.yml", &fix)]);
    let low = kiln.push(&repo, "master", &commit, "p-1").await;
    let started = |lines: usize| {
        let order = order.clone();
        async move {
            let text = std::fs::read_to_string(&order).unwrap_or_default();
            (text.lines().count() >= lines).then_some(text)
        }
    };
    wait_for("the first tasks to hold the slots", E2E_TIMEOUT, || {
        started(2)
    })
    .await;

    let (status, reply) = kiln.command(TOKEN, &format!("build {REPO} hotfix/1")).await;
    assert_eq!(status, 200, "{reply}");
    let high = reply["started"].as_u64().expect("a build started");
    // Its job is published once its plan is stored; then only the order of slots decides.
    wait_for(
        "the high-priority build to be planned",
        E2E_TIMEOUT,
        || async {
            let build = kiln.build(high).await?;
            (!build["tasks"].as_array()?.is_empty()).then_some(())
        },
    )
    .await;
    let (_, queue) = kiln.command_text(TOKEN, "queue").await;
    std::fs::write(&go, "").expect("go");

    let build = kiln.finished_build(high).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    assert_eq!(build["priority"], "high", "{build:#}");
    let build = kiln.finished_build(low).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    let order = std::fs::read_to_string(&order).expect("the order");
    let lines: Vec<&str> = order.lines().collect();
    assert_eq!(lines.len(), LOW + HIGH, "{order}\n{build:#}");
    let last = lines
        .iter()
        .rposition(|line| line.starts_with("hotfix/1 "))
        .expect("the high-priority tasks ran");
    // The two tasks holding the slots, maybe one more taken as the first job arrived, then
    // every high-priority task.
    assert!(
        last < 2 + HIGH + 1,
        "the last high-priority task started at {} of {}; the queue said before:\n{queue}\n\
         {order}",
        last + 1,
        lines.len()
    );
    kiln.stop().await;
}

/// How many normal tasks wait in the queue before the high-priority build comes, and how
/// many tasks that build has.
const LOW: usize = 100;
const HIGH: usize = 6;

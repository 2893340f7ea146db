//! The web pages in a real browser (headless Chromium over WebDriver), on the real services:
//! a build's page kept current while it runs, its failing task's log followed live, its
//! artifact downloaded, "Retry failed" starting the next build; a private installation
//! where a reader signed in with GitHub sees their repositories and nothing else; hostile
//! text shown as text; a 100,000-line log opened a page at a time. Screenshots of the main
//! pages are kept under the target folder's `kiln-screenshots/`.

use std::time::{Duration, Instant};

use fantoccini::Locator;
use kiln_tests::browser::Browser;
use kiln_tests::forge::{TestRepo, push_payload};
use kiln_tests::registry::TestRegistry;
use kiln_tests::sign_in::FakeSignIn;
use kiln_tests::{Kiln, REPO, TEST_IMAGE, TEST_SECRET, config_at, wait_for};
use sha2::{Digest, Sha256};

const TOKEN: &str = "web-operator-token-0123456789";

/// How long a page may take to load completely.
const PAGE_LOADS_WITHIN: Duration = Duration::from_secs(10);

fn operator() -> String {
    format!("[[operator]]\nname = \"olivia\"\ntoken = \"{TOKEN}\"\n")
}

/// Waits until task `task` of build `id` is `status`.
async fn task_is(kiln: &Kiln, id: u64, task: &str, status: &str) {
    wait_for(
        &format!("task {task} of build {id} to be {status}"),
        Duration::from_secs(60),
        || async {
            let build = kiln.build(id).await?;
            build["tasks"]
                .as_array()?
                .iter()
                .any(|t| t["name"] == task && t["status"] == status)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_developer_follows_a_build_and_retries_what_failed() {
    let registry = TestRegistry::require();
    let extra = format!(
        "{}[registry]\naddress = \"{}\"\nauth = \"{}\"\n",
        operator(),
        registry.addr,
        registry.auth.display()
    );
    let kiln = Kiln::start_addressed(|url| config_at(url, &extra), Some(&registry)).await;
    let spec = format!(
        r#"steps:
  unit:
    image: {TEST_IMAGE}
    artifacts: [out/report.txt]
    run:
      - mkdir -p out
      - echo "report of the unit tests" > out/report.txt
  slow:
    image: {TEST_IMAGE}
    needs: [unit]
    run:
      - echo first line
      - sleep 3
      - 'printf "\033[31mred words\033[0m\n"'
      - for i in 1 2 3; do echo "more $i"; sleep 1; done
      - exit 3
"#
    );
    let repo = TestRepo::new();
    let commit = repo.commit("master", "Slow and failing", &[(".kiln.yml", &spec)]);
    let id = kiln.push(&repo, "master", &commit, "web-follow").await;
    task_is(&kiln, id, "slow", "running").await;

    let browser = Browser::start("follow_and_retry").await;
    browser.open(&kiln.url(&format!("/builds/{id}"))).await;
    let heading = browser.text("#log-panel h2").await;
    assert!(
        heading.contains("slow"),
        "the running task's log is open: {heading}"
    );
    browser
        .run("window.kilnMark = 'the same page'; return null;")
        .await;

    // New lines arrive in the open log, colours rendered; the graph follows the build.
    browser
        .wait_for_text("#log", "more 3", Duration::from_secs(30))
        .await;
    let red = browser.text("#log .f1").await;
    assert_eq!(red, "red words");
    browser
        .wait_for_text("#build-status", "failed", Duration::from_secs(30))
        .await;
    browser
        .wait_for_text("li.task.failed", "slow", Duration::from_secs(5))
        .await;
    let mark = browser.run("return window.kilnMark;").await;
    assert_eq!(mark, "the same page", "the page was not loaded again");
    browser.screenshot("build-page-live").await;

    // Loaded again, the failing task's log opens first, with its exit code in the graph.
    browser.open(&kiln.url(&format!("/builds/{id}"))).await;
    assert!(browser.text("#log-panel h2").await.contains("slow"));
    assert!(browser.text("li.task.failed").await.contains("exit code 3"));

    // The artifact, downloaded by the browser, is what the task kept.
    let link = browser
        .client
        .find(Locator::Css("ul.artifacts a"))
        .await
        .expect("an artifact link");
    let href = link.attr("href").await.expect("href").expect("a link");
    let digest = browser
        .run_async(&format!(
            "const done = arguments[0];
             fetch({href:?}).then((r) => r.arrayBuffer()).then((b) => crypto.subtle.digest('SHA-256', b))
               .then((d) => done(Array.from(new Uint8Array(d)).map((x) => x.toString(16).padStart(2, '0')).join('')))
               .catch((e) => done(String(e)));"
        ))
        .await;
    let expected = hex::encode(Sha256::digest(b"report of the unit tests\n"));
    assert_eq!(digest, expected.as_str(), "{href}");

    // Signed in as an operator, "Retry failed" starts a build that takes what passed.
    browser
        .open(&kiln.url(&format!("/login?next=/builds/{id}")))
        .await;
    let field = browser
        .client
        .find(Locator::Css("input[name=token]"))
        .await
        .expect("the token field");
    field.send_keys(TOKEN).await.expect("typed");
    browser
        .client
        .find(Locator::Css("form[action='/login'] button"))
        .await
        .expect("the sign-in button")
        .click()
        .await
        .expect("submitted");
    browser
        .client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#retry-failed"))
        .await
        .expect("a Retry failed button")
        .click()
        .await
        .expect("clicked");
    browser
        .wait_for_text(
            "dl.header",
            &format!("takes what passed in #{id}"),
            Duration::from_secs(20),
        )
        .await;
    let url = browser.client.current_url().await.expect("the URL");
    let retried: u64 = url
        .path()
        .trim_start_matches("/builds/")
        .parse()
        .unwrap_or_else(|_| panic!("a build's page: {url}"));
    assert!(retried > id, "{url}");
    browser.screenshot("retried").await;

    // The list shows both builds; the workers and the repository have their pages.
    browser.open(&kiln.url("/")).await;
    browser
        .wait_for_text("#rows", &format!("#{retried}"), Duration::from_secs(10))
        .await;
    assert!(browser.text("#rows").await.contains(&format!("#{id}")));
    browser.screenshot("builds").await;
    // Signed in to the pages is signed in to the console, on the same layout.
    browser.open(&kiln.url("/console")).await;
    let field = browser
        .client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("input[name=command]"))
        .await
        .expect("the command box");
    field.send_keys("status acme/api").await.expect("typed");
    browser
        .client
        .find(Locator::Css("form.command button"))
        .await
        .expect("its button")
        .click()
        .await
        .expect("clicked");
    browser
        .wait_for_text("pre.done", &format!("#{retried}"), Duration::from_secs(10))
        .await;
    browser.screenshot("console").await;
    browser.open(&kiln.url("/workers")).await;
    assert!(browser.text("table.workers").await.contains("linux/amd64"));
    browser.screenshot("workers").await;
    browser.open(&kiln.url(&format!("/repos/{REPO}"))).await;
    assert!(browser.text("h1").await.contains(REPO));
    let history = browser.text("main").await;
    for build in [id, retried] {
        assert!(history.contains(&format!("#{build}")), "{history}");
    }
    browser.screenshot("repository").await;
    browser.close().await;
    kiln.finished_build(retried).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_installation_shows_each_reader_their_repositories() {
    const SECRET_REPO: &str = "acme/secret";
    let github = FakeSignIn::github("ada", &[("ada", &[REPO])]).await;
    let extra = format!(
        "{}[access]\npublic = false\n{}[[repository]]\nname = \"{SECRET_REPO}\"\n\
         webhook_secret = \"{TEST_SECRET}\"\n",
        operator(),
        github.config()
    );
    let kiln = Kiln::start_addressed(|url| config_at(url, &extra), None).await;
    let spec = format!("steps:\n  hello:\n    image: {TEST_IMAGE}\n    run: echo hello\n");
    let repo = TestRepo::new();
    let commit = repo.commit("master", "Open work", &[(".kiln.yml", &spec)]);
    let open_id = kiln
        .push(&repo, "master", &commit, "web-private-open")
        .await;
    let secret = TestRepo::new();
    let commit = secret.commit("master", "Hidden work", &[(".kiln.yml", &spec)]);
    let body = push_payload(
        SECRET_REPO,
        "master",
        &commit,
        &secret.clone_url(),
        "Hidden work",
    );
    let (status, answer) = kiln
        .send_github("push", "web-private-secret", &body, TEST_SECRET)
        .await;
    assert_eq!(status, 202, "{answer}");
    let secret_id = answer["build_id"].as_u64().expect("a build id");

    // Nobody signed in reads nothing: a build's record is as absent as one that never was.
    let anonymous = reqwest::Client::new();
    for id in [open_id, secret_id, 999_999] {
        let answer = anonymous
            .get(kiln.url(&format!("/builds/{id}")))
            .send()
            .await
            .expect("an answer");
        assert_eq!(answer.status(), 404, "build {id}");
    }

    // A reader signs in with GitHub and sees the repository GitHub lets them read.
    let browser = Browser::start("private").await;
    browser.open(&kiln.url("/")).await;
    browser
        .client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#with-github"))
        .await
        .expect("a GitHub sign-in")
        .click()
        .await
        .expect("clicked");
    browser
        .wait_for_text("header .who", "ada", Duration::from_secs(20))
        .await;
    browser
        .wait_for_text("#rows", &format!("#{open_id}"), Duration::from_secs(20))
        .await;
    let rows = browser.text("#rows").await;
    assert!(!rows.contains(SECRET_REPO), "{rows}");
    let cookies = browser.client.get_all_cookies().await.expect("cookies");
    let session = cookies
        .iter()
        .find(|c| c.name() == "kiln_session")
        .expect("a session cookie");
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(session.secure(), Some(true));
    assert_eq!(
        session.same_site().map(|s| format!("{s:?}")).as_deref(),
        Some("Lax")
    );
    browser.screenshot("signed-in").await;

    // An operator's token reads everything.
    wait_for("the open build to end", Duration::from_secs(60), || async {
        let build: serde_json::Value = anonymous
            .get(kiln.url(&format!("/builds/{open_id}")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (build["status"] == "passed").then_some(())
    })
    .await;
    let unknown = browser.fetch(&kiln.url("/builds/999999")).await;
    assert_eq!(unknown.0, 404);
    for path in [
        format!("/builds/{secret_id}"),
        format!("/builds/{secret_id}/logs?task=hello"),
        format!("/builds/{secret_id}/manifest"),
        format!("/builds/{secret_id}/artifacts"),
        format!("/builds/{secret_id}/tasks/hello/live"),
        format!("/repos/{SECRET_REPO}"),
    ] {
        let (status, body) = browser.fetch(&kiln.url(&path)).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let (status, body) = browser
        .fetch(&kiln.url(&format!("/builds/{open_id}")))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("hello"), "{body}");

    // The console is for operators: its commands read every repository.
    browser.open(&kiln.url("/console")).await;
    browser
        .client
        .find(Locator::Css("form[action='/console/login']"))
        .await
        .expect("the console asks for an operator's token");
    let (status, workers) = browser.fetch(&kiln.url("/workers")).await;
    assert_eq!(status, 200);
    assert!(!workers.contains(&format!("#{secret_id} ")), "{workers}");

    // Reading is not acting: the permissions chat has apply to the page's buttons.
    browser.open(&kiln.url(&format!("/builds/{open_id}"))).await;
    browser
        .client
        .find(Locator::Css("#retry"))
        .await
        .expect("a Retry button")
        .click()
        .await
        .expect("clicked");
    browser
        .wait_for_text("#said", "may not", Duration::from_secs(10))
        .await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_is_shown_as_text() {
    let kiln = Kiln::start_addressed(|url| config_at(url, ""), None).await;
    let spec = format!(
        r#"steps:
  greet:
    image: {TEST_IMAGE}
    run:
      - 'echo "<img src=x onerror=window.pwned=3>"'
      - 'printf "\033[8mconcealed\033[0m and \033[30;40mblack on black\033[0m\n"'
"#
    );
    let repo = TestRepo::new();
    let branch = "x\"onmouseover=\"window.pwned=2";
    let subject = "<script>window.pwned=1</script>";
    let commit = repo.commit(branch, subject, &[(".kiln.yml", &spec)]);
    let body = push_payload(REPO, branch, &commit, &repo.clone_url(), subject);
    let mut payload: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    payload["head_commit"]["author"]["name"] = "\"><script>window.pwned=4</script>".into();
    payload["head_commit"]["author"]["username"] = "\"><b onmouseover=window.pwned=5>".into();
    let body = serde_json::to_vec(&payload).expect("JSON");
    let (status, answer) = kiln
        .send_github("push", "web-hostile", &body, TEST_SECRET)
        .await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["build_id"].as_u64().expect("a build id");
    kiln.finished_build(id).await;

    let browser = Browser::start("hostile").await;
    for path in [
        "/".to_owned(),
        format!("/repos/{REPO}"),
        format!("/builds/{id}"),
    ] {
        browser.open(&kiln.url(&path)).await;
        let source = browser.client.source().await.expect("the page's source");
        assert!(!source.contains("<script>window.pwned"), "{path}: {source}");
        assert!(
            source.contains("&lt;script&gt;window.pwned=1"),
            "{path}: {source}"
        );
        let pwned = browser.run("return window.pwned === undefined;").await;
        assert_eq!(pwned, true, "{path}");
    }
    let log = browser.text("#log").await;
    assert!(log.contains("<img src=x onerror=window.pwned=3>"), "{log}");
    assert!(
        log.contains("concealed and black on black"),
        "nothing is hidden: {log}"
    );
    let hidden = browser
        .run("return Array.from(document.querySelectorAll('#log span')).filter((e) => getComputedStyle(e).visibility === 'hidden' || getComputedStyle(e).display === 'none').length;")
        .await;
    assert_eq!(hidden, 0);
    browser.screenshot("hostile").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_log_opens_a_page_at_a_time() {
    let kiln = Kiln::start_addressed(|url| config_at(url, ""), None).await;
    let spec = format!("steps:\n  count:\n    image: {TEST_IMAGE}\n    run: seq 1 100000\n");
    let repo = TestRepo::new();
    let commit = repo.commit("master", "Count far", &[(".kiln.yml", &spec)]);
    let id = kiln.push(&repo, "master", &commit, "web-long").await;
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "passed", "{build:#}");
    let log = kiln.task_log(id, "count").await;
    let counted = log.lines().filter(|l| !l.starts_with("[kiln]")).count();
    assert_eq!(
        counted,
        100_000,
        "every line is stored: {}",
        &log[log.len().saturating_sub(300)..]
    );

    let browser = Browser::start("long_log").await;
    let started = Instant::now();
    browser.open(&kiln.url(&format!("/builds/{id}"))).await;
    browser
        .wait_for_text("#log", "100000", Duration::from_secs(20))
        .await;
    println!(
        "a 100,000-line log's page opened in {:?}",
        started.elapsed()
    );
    let shown = browser
        .run("return document.querySelectorAll('#log .line').length;")
        .await;
    assert_eq!(shown, 1000, "one page of lines");
    assert!(browser.text(".pages").await.contains("page 100 of 100"));
    browser.screenshot("long-log").await;

    // A line's link opens the page it is on.
    browser
        .open(&kiln.url(&format!("/builds/{id}?task=count#L120")))
        .await;
    let line = browser.text("#L120").await;
    assert!(line.ends_with("120"), "{line}");
    assert!(browser.text(".pages").await.contains("page 1 of 100"));

    // A line past the end stays on the page it is asked from.
    browser
        .open(&kiln.url(&format!("/builds/{id}?task=count&page=3#L999999")))
        .await;
    // The script that goes to a line's page runs before the page is complete.
    wait_for("the page to be complete", PAGE_LOADS_WITHIN, || async {
        (browser.run("return document.readyState;").await == "complete").then_some(())
    })
    .await;
    assert!(browser.text(".pages").await.contains("page 3 of 100"));

    // A search finds lines on every page, each linked to its own.
    browser
        .open(&kiln.url(&format!("/builds/{id}?task=count&q=99999")))
        .await;
    let found = browser.text(".found").await;
    assert!(found.contains("99999"), "{found}");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitlab_reader_reads_the_gitlab_projects_they_may() {
    const PROJECT: &str = "acme/tools";
    let gitlab = FakeSignIn::gitlab("grace", &[("grace", &[PROJECT])]).await;
    let extra = format!(
        "[access]\npublic = false\n{}[[repository]]\nname = \"{PROJECT}\"\nforge = \"gitlab\"\n\
         webhook_secret = \"{TEST_SECRET}\"\n",
        gitlab.config()
    );
    let kiln = Kiln::start_addressed(|url| config_at(url, &extra), None).await;
    let browser = Browser::start("gitlab").await;
    browser.open(&kiln.url(&format!("/repos/{PROJECT}"))).await;
    browser
        .client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#with-gitlab"))
        .await
        .expect("a GitLab sign-in")
        .click()
        .await
        .expect("clicked");
    // Back where they were going, signed in.
    browser
        .wait_for_text("h1", PROJECT, Duration::from_secs(20))
        .await;
    assert!(browser.text("header .who").await.contains("grace"));
    // A repository of another forge is not theirs to read.
    let (status, _) = browser.fetch(&kiln.url(&format!("/repos/{REPO}"))).await;
    assert_eq!(status, 404);
    // Signed out, the pages ask again.
    browser
        .client
        .find(Locator::Css("header .who button"))
        .await
        .expect("a sign-out button")
        .click()
        .await
        .expect("clicked");
    browser.open(&kiln.url(&format!("/repos/{PROJECT}"))).await;
    browser
        .wait_for_text("h1", "Sign in", Duration::from_secs(10))
        .await;
    browser.close().await;
}

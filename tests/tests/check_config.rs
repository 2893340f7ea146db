//! `kiln-bot --check-config`: the shipped example passes and says what it configures; a file
//! whose secret cannot be read, or with a key Kiln does not know, fails with a sentence that
//! names the problem; neither touches RabbitMQ or Redis.

use std::process::Command;

use kiln_tests::processes::binary;

fn check(file: &std::path::Path) -> (bool, String) {
    let output = Command::new(binary("kiln-bot"))
        .arg("--check-config")
        .arg(file)
        // Nothing answers there: checking must not try.
        .env("KILN_AMQP_URL", "amqp://127.0.0.1:1/%2f")
        .env("KILN_REDIS_URL", "redis://127.0.0.1:1/")
        .output()
        .expect("kiln-bot runs");
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), said)
}

#[test]
fn the_example_passes_and_broken_files_say_why() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kiln-bot.example.toml");
    let (ok, said) = check(&example);
    assert!(ok, "{said}");
    assert!(said.contains("1 repository (acme/api)"), "{said}");

    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "from-a-file-and-long-enough\n").expect("write");
    let from_file = dir.path().join("from-file.toml");
    std::fs::write(
        &from_file,
        format!(
            "[[repository]]\nname = \"acme/api\"\nwebhook_secret = {{ file = \"{}\" }}\n",
            secret.display()
        ),
    )
    .expect("write");
    let (ok, said) = check(&from_file);
    assert!(ok, "{said}");

    let missing = dir.path().join("missing.toml");
    std::fs::write(
        &missing,
        "[[repository]]\nname = \"acme/api\"\nwebhook_secret = { env = \"KILN_NO_SUCH_SECRET\" }\n",
    )
    .expect("write");
    let (ok, said) = check(&missing);
    assert!(!ok);
    assert!(said.contains("KILN_NO_SUCH_SECRET"), "{said}");

    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "[workers]\nreclaim_afer = \"1m\"\n").expect("write");
    let (ok, said) = check(&unknown);
    assert!(!ok);
    assert!(said.contains("reclaim_afer"), "{said}");
}

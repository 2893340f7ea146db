//! `kiln-worker gc` from the command line, on a store of artifacts and cache entries; no
//! Docker engine is reachable here, so images are left alone (and it says so).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

fn file(path: &Path, bytes: usize, days_ago: u64) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, vec![b'x'; bytes]).expect("write");
    let then = SystemTime::now() - Duration::from_secs(days_ago * 86_400);
    std::fs::File::options()
        .append(true)
        .open(path)
        .expect("open")
        .set_modified(then)
        .expect("set time");
}

#[test]
fn removes_what_was_not_used_for_longer_than_the_maximum_age() {
    let store = tempfile::tempdir().expect("temp dir");
    let blob = |hex: char| {
        let name: String = std::iter::repeat_n(hex, 64).collect();
        store
            .path()
            .join("artifacts/sha256")
            .join(&name[..2])
            .join(name)
    };
    let (old_blob, new_blob) = (blob('a'), blob('b'));
    let old_cache = store.path().join("cache/acme/api/master/old.tar");
    let new_cache = store.path().join("cache/acme/api/master/new.tar");
    file(&old_blob, 1000, 30);
    file(&new_blob, 1000, 1);
    file(&old_cache, 1000, 30);
    file(&new_cache, 1000, 1);

    let gc = |extra: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_kiln-worker"))
            .args(["gc", "--max-age", "14d", "--store-dir"])
            .arg(store.path())
            .args(extra)
            // Nothing listens there: no engine, so no image is touched.
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .stdin(Stdio::null())
            .output()
            .expect("kiln-worker runs");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr)
    };

    let said = gc(&["--dry-run"]);
    assert!(said.contains("artifacts (would be removed 1"), "{said}");
    assert!(
        old_blob.exists() && old_cache.exists(),
        "a dry run removes nothing"
    );

    let said = gc(&[]);
    assert!(said.contains("no Docker engine answers"), "{said}");
    assert!(said.contains("artifacts (removed 1"), "{said}");
    assert!(said.contains("caches (removed 1"), "{said}");
    assert!(!old_blob.exists() && !old_cache.exists());
    assert!(new_blob.exists() && new_cache.exists());
}

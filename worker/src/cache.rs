//! `cache:` directories kept between builds, per repository, under a key rendered from the
//! step's template (`{{ hash('Cargo.lock') }}`): restored before the task when an entry with
//! the key exists, saved after the task passed when none did. An entry is never rewritten:
//! a new key is how the content changes.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use kiln_shared::template::{render, slug};
use kiln_shared::wire::JobRequested;
use sha2::{Digest, Sha256};

use crate::blobs::{files_at_depth, sha256_file, touch};

/// The cache entries under one root: `<repository>/<sha256 of the key>.tar`.
#[derive(Debug, Clone)]
pub struct Caches {
    root: PathBuf,
}

/// What restoring found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The rendered key.
    pub key: String,
    /// Whether an entry existed and was unpacked.
    pub hit: bool,
}

impl Caches {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The job's cache key, rendered in its checkout.
    pub fn key(job: &JobRequested, workdir: &Path) -> Result<String, String> {
        let Some(cache) = &job.cache else {
            return Err("the task has no cache".into());
        };
        let vars = BTreeMap::from([
            ("repo", job.build.repo.clone()),
            ("branch", job.build.branch.clone()),
            ("branch_slug", slug(&job.build.branch)),
            ("step", job.step.clone()),
            ("platform", job.platform.label().to_owned()),
        ]);
        render(&cache.key, &vars, &mut |path| {
            sha256_file(&workdir.join(path))
                .map(|(digest, _)| digest.trim_start_matches("sha256:").to_owned())
                .map_err(|e| format!("cannot hash `{path}`: {e}"))
        })
    }

    fn entry(&self, job: &JobRequested, key: &str) -> PathBuf {
        let name = hex::encode(Sha256::digest(key.as_bytes()));
        self.root
            .join(slug(&job.build.repo))
            .join(format!("{name}.tar"))
    }

    /// Every entry, with its metadata.
    pub fn list(&self) -> io::Result<Vec<(PathBuf, std::fs::Metadata)>> {
        files_at_depth(&self.root, 2)
    }

    /// Unpacks the job's cache entry into its checkout, if there is one.
    pub async fn restore(&self, job: &JobRequested, workdir: &Path) -> io::Result<Restored> {
        let key = Self::key(job, workdir).map_err(io::Error::other)?;
        let entry = self.entry(job, &key);
        let workdir = workdir.to_owned();
        let hit = tokio::task::spawn_blocking(move || -> io::Result<bool> {
            let file = match std::fs::File::open(&entry) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e),
            };
            tar::Archive::new(file).unpack(&workdir)?;
            touch(&entry)?;
            Ok(true)
        })
        .await
        .map_err(io::Error::other)??;
        Ok(Restored { key, hit })
    }

    /// Saves the job's cache paths under `key`, unless an entry with that key exists.
    /// Returns whether it saved one.
    pub async fn save(&self, job: &JobRequested, workdir: &Path, key: &str) -> io::Result<bool> {
        let Some(cache) = &job.cache else {
            return Ok(false);
        };
        let entry = self.entry(job, key);
        let (paths, workdir) = (cache.paths.clone(), workdir.to_owned());
        tokio::task::spawn_blocking(move || -> io::Result<bool> {
            if entry.exists() {
                return Ok(false);
            }
            let dir = entry.parent().map(Path::to_owned).unwrap_or_default();
            std::fs::create_dir_all(&dir)?;
            let partial = tempfile::NamedTempFile::new_in(&dir)?;
            let mut archive = tar::Builder::new(partial.as_file());
            archive.follow_symlinks(false);
            for path in &paths {
                let source = workdir.join(path);
                if source.is_dir() {
                    archive.append_dir_all(path, &source)?;
                } else if source.is_file() {
                    archive.append_path_with_name(&source, path)?;
                }
            }
            archive.finish()?;
            drop(archive);
            partial.persist(&entry).map_err(|e| e.error)?;
            Ok(true)
        })
        .await
        .map_err(io::Error::other)?
    }
}

#[cfg(test)]
mod tests {
    use kiln_shared::build::BuildId;
    use kiln_shared::spec::Cache;
    use kiln_shared::wire::BuildRef;

    use super::*;

    fn job() -> JobRequested {
        let mut job: JobRequested = serde_json::from_value(serde_json::json!({
            "build": { "id": 1, "repo": "acme/api", "branch": "feature/x", "commit": "c" },
            "clone_url": "", "task": "unit.1", "step": "unit", "attempt": 1,
            "platform": "linux/amd64", "commands": [], "timeout_secs": 1
        }))
        .expect("job");
        job.build = BuildRef {
            id: BuildId(1),
            ..job.build
        };
        job.cache = Some(Cache {
            key: "{{ step }}-{{ branch_slug }}-{{ hash('Cargo.lock') }}".into(),
            paths: vec!["target".into()],
        });
        job
    }

    #[tokio::test]
    async fn saves_once_per_key_and_restores_into_a_fresh_checkout() {
        let dir = tempfile::tempdir().expect("dir");
        let caches = Caches::new(dir.path().join("cache"));
        let job = job();
        let first = dir.path().join("first");
        std::fs::create_dir_all(first.join("target/debug")).expect("mkdir");
        std::fs::write(first.join("Cargo.lock"), "lock v1").expect("write");
        std::fs::write(first.join("target/debug/app"), "binary").expect("write");

        let restored = caches.restore(&job, &first).await.expect("restore");
        assert!(!restored.hit);
        assert!(
            restored.key.starts_with("unit-feature-x-"),
            "{}",
            restored.key
        );
        assert!(
            caches
                .save(&job, &first, &restored.key)
                .await
                .expect("save")
        );
        assert!(
            !caches
                .save(&job, &first, &restored.key)
                .await
                .expect("save"),
            "an entry is never rewritten"
        );

        let second = dir.path().join("second");
        std::fs::create_dir_all(&second).expect("mkdir");
        std::fs::write(second.join("Cargo.lock"), "lock v1").expect("write");
        let restored = caches.restore(&job, &second).await.expect("restore");
        assert!(restored.hit);
        assert_eq!(
            std::fs::read_to_string(second.join("target/debug/app")).expect("read"),
            "binary"
        );

        std::fs::write(second.join("Cargo.lock"), "lock v2").expect("write");
        assert!(
            !caches.restore(&job, &second).await.expect("restore").hit,
            "a new key"
        );
    }
}

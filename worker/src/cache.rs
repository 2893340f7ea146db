//! `cache:` directories kept between builds, per repository and branch, under a key rendered
//! from the step's template (`{{ hash('Cargo.lock') }}`): restored before the task when an
//! entry with the key exists, saved after the task passed when none did. An entry is never
//! rewritten: a new key is how the content changes.
//!
//! A branch reads its own entries, then those of the default branch; the default branch
//! reads only its own. So no branch can put something into a build of another, and what a
//! build with secrets left is seen by no other branch.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use kiln_shared::template::{branch_slug, render, slug};
use kiln_shared::wire::JobRequested;
use sha2::{Digest, Sha256};

use crate::blobs::{files_at_depth, sha256_file, touch};
use crate::confine;
use kiln_io::registry::oci::{CACHE, CACHE_TYPE, Layer, Oci};

/// Branches whose entries every branch of the repository may read.
const DEFAULT_BRANCHES: [&str; 2] = ["master", "main"];

/// Where cache entries are kept: a directory (`<owner>/<name>/<branch>/<sha256 of the
/// key>.tar`), or the installation's registry (a blob and a manifest per entry, tagged by
/// the branch and the key, so any worker restores what another saved).
#[derive(Debug, Clone)]
pub struct Caches {
    place: Place,
}

#[derive(Debug, Clone)]
enum Place {
    Directory(PathBuf),
    Registry(Oci),
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
    /// Entries in the directory `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            place: Place::Directory(root.into()),
        }
    }

    /// Entries in the installation's registry.
    pub fn in_registry(oci: Oci) -> Self {
        Self {
            place: Place::Registry(oci),
        }
    }

    /// The job's cache key, rendered in its checkout.
    pub fn key(job: &JobRequested, workdir: &Path) -> Result<String, String> {
        let Some(cache) = &job.cache else {
            return Err("the task has no cache".into());
        };
        let vars = BTreeMap::from([
            ("repo", job.build.repo.to_string()),
            ("branch", job.build.branch.to_string()),
            ("branch_slug", branch_slug(&job.build.branch)),
            ("step", job.step.clone()),
            ("platform", job.platform.label().to_owned()),
        ]);
        render(&cache.key, &vars, &mut |path| {
            let file = confine::existing(workdir, Path::new(path))
                .map_err(|e| format!("cannot hash {e}"))?
                .filter(|f| f.is_file())
                .ok_or_else(|| format!("cannot hash `{path}`: no such file in the checkout"))?;
            sha256_file(&file)
                .map(|(digest, _)| digest.trim_start_matches("sha256:").to_owned())
                .map_err(|e| format!("cannot hash `{path}`: {e}"))
        })
    }

    /// Where `branch`'s entry for `key` is, in a directory.
    fn entry(root: &Path, job: &JobRequested, branch: &str, key: &str) -> PathBuf {
        let name = hex::encode(Sha256::digest(key.as_bytes()));
        let mut path = root.to_owned();
        for part in job.build.repo.split('/') {
            path.push(slug(part));
        }
        path.join(branch_slug(branch)).join(format!("{name}.tar"))
    }

    /// The tag of `branch`'s entry for `key`, in the registry.
    fn tag(branch: &str, key: &str) -> String {
        let branch = hex::encode(Sha256::digest(branch.as_bytes()));
        let key = hex::encode(Sha256::digest(key.as_bytes()));
        format!("{}-{}", &branch[..16], &key[..40])
    }

    /// The branches whose entries the job may restore, in order: its own, then the default
    /// branch's.
    fn readable(job: &JobRequested) -> Vec<String> {
        let own = job.scope();
        let mut branches = vec![own.clone()];
        if !DEFAULT_BRANCHES.contains(&own.as_str()) {
            branches.extend(DEFAULT_BRANCHES.map(str::to_owned));
        }
        branches
    }

    /// Every entry in the directory, with its metadata; none in a registry (its own garbage
    /// collection keeps it).
    pub fn list(&self) -> io::Result<Vec<(PathBuf, std::fs::Metadata)>> {
        match &self.place {
            Place::Directory(root) => files_at_depth(root, 4),
            Place::Registry(_) => Ok(Vec::new()),
        }
    }

    /// Unpacks the job's cache entry into its checkout, if there is one.
    pub async fn restore(&self, job: &JobRequested, workdir: &Path) -> io::Result<Restored> {
        let key = Self::key(job, workdir).map_err(io::Error::other)?;
        let hit = match &self.place {
            Place::Directory(root) => {
                let entries: Vec<PathBuf> = Self::readable(job)
                    .into_iter()
                    .map(|branch| Self::entry(root, job, &branch, &key))
                    .collect();
                let workdir = workdir.to_owned();
                tokio::task::spawn_blocking(move || -> io::Result<bool> {
                    for entry in entries {
                        match unpack(&entry, &workdir) {
                            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                            Err(e) => return Err(e),
                            Ok(()) => {
                                touch(&entry)?;
                                return Ok(true);
                            }
                        }
                    }
                    Ok(false)
                })
                .await
                .map_err(io::Error::other)??
            }
            Place::Registry(oci) => restore_from(oci, job, workdir, &key).await?,
        };
        Ok(Restored { key, hit })
    }

    /// Saves the job's cache paths under `key`, unless an entry with that key exists.
    /// Returns whether it saved one.
    pub async fn save(&self, job: &JobRequested, workdir: &Path, key: &str) -> io::Result<bool> {
        let Some(cache) = &job.cache else {
            return Ok(false);
        };
        let (paths, from) = (cache.paths.clone(), workdir.to_owned());
        match &self.place {
            Place::Directory(root) => {
                let entry = Self::entry(root, job, &job.scope(), key);
                tokio::task::spawn_blocking(move || -> io::Result<bool> {
                    if entry.exists() {
                        return Ok(false);
                    }
                    let dir = entry.parent().map(Path::to_owned).unwrap_or_default();
                    std::fs::create_dir_all(&dir)?;
                    let partial = tempfile::NamedTempFile::new_in(&dir)?;
                    pack(&paths, &from, partial.as_file())?;
                    partial.persist(&entry).map_err(|e| e.error)?;
                    Ok(true)
                })
                .await
                .map_err(io::Error::other)?
            }
            Place::Registry(oci) => {
                let repo = job.build.repo.as_str();
                let tag = Self::tag(&job.scope(), key);
                if oci.manifest(repo, CACHE, &tag).await?.is_some() {
                    return Ok(false);
                }
                let packed = tokio::task::spawn_blocking(move || -> io::Result<_> {
                    let file = tempfile::NamedTempFile::new()?;
                    pack(&paths, &from, file.as_file())?;
                    Ok(file)
                })
                .await
                .map_err(io::Error::other)??;
                let stored = oci.put_file(repo, CACHE, packed.path()).await?;
                let layer = Layer {
                    path: "cache.tar".into(),
                    digest: stored.digest,
                    size: stored.size,
                };
                let annotations = BTreeMap::from([
                    ("dev.kiln.branch".to_owned(), job.scope()),
                    ("dev.kiln.key".to_owned(), key.to_owned()),
                ]);
                oci.put_manifest(repo, CACHE, &tag, CACHE_TYPE, &[layer], annotations)
                    .await?;
                Ok(true)
            }
        }
    }
}

/// The first entry the job may restore from the registry, unpacked into `workdir`.
async fn restore_from(
    oci: &Oci,
    job: &JobRequested,
    workdir: &Path,
    key: &str,
) -> io::Result<bool> {
    let repo = job.build.repo.as_str();
    for branch in Caches::readable(job) {
        let Some(layers) = oci
            .manifest(repo, CACHE, &Caches::tag(&branch, key))
            .await?
        else {
            continue;
        };
        let Some(layer) = layers.first() else {
            continue;
        };
        let download = tempfile::NamedTempFile::new()?;
        oci.get_file(repo, CACHE, &layer.digest, layer.size, download.path())
            .await?;
        let workdir = workdir.to_owned();
        tokio::task::spawn_blocking(move || unpack(download.path(), &workdir))
            .await
            .map_err(io::Error::other)??;
        return Ok(true);
    }
    Ok(false)
}

/// Packs `paths` of `workdir` into `file` as a tar archive. Blocking.
fn pack(paths: &[String], workdir: &Path, file: &std::fs::File) -> io::Result<()> {
    let mut archive = tar::Builder::new(file);
    archive.follow_symlinks(false);
    for path in paths {
        // Not through a link: a task could point one at the worker's own files.
        let Some(source) = confine::existing(workdir, Path::new(path))? else {
            continue;
        };
        if source.is_dir() {
            archive.append_dir_all(path, &source)?;
        } else if source.is_file() {
            archive.append_path_with_name(&source, path)?;
        }
    }
    archive.finish()
}

/// Unpacks the tar archive `entry` into `workdir`. Blocking.
fn unpack(entry: &Path, workdir: &Path) -> io::Result<()> {
    let file = std::fs::File::open(entry)?;
    tar::Archive::new(file).unpack(workdir)
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

    #[tokio::test]
    async fn branches_read_the_default_branchs_entries_and_never_the_reverse() {
        let dir = tempfile::tempdir().expect("dir");
        let caches = Caches::new(dir.path().join("cache"));
        let mut job = job();
        job.cache = Some(Cache {
            key: "k".into(),
            paths: vec!["target".into()],
        });
        let checkout = |name: &str, content: &str| {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.join("target")).expect("mkdir");
            std::fs::write(path.join("target/out"), content).expect("write");
            path
        };
        let on = |branch: &str| {
            let mut job = job.clone();
            job.build.branch = branch.into();
            job
        };

        let feature = checkout("feature", "from feature");
        assert!(
            caches
                .save(&on("feature/x"), &feature, "k")
                .await
                .expect("save")
        );
        let master = dir.path().join("master");
        std::fs::create_dir_all(&master).expect("mkdir");
        assert!(
            !caches
                .restore(&on("master"), &master)
                .await
                .expect("restore")
                .hit,
            "master never restores what a branch saved"
        );

        let saved = checkout("master-saved", "from master");
        assert!(caches.save(&on("master"), &saved, "k").await.expect("save"));
        let other = dir.path().join("other");
        std::fs::create_dir_all(&other).expect("mkdir");
        assert!(
            caches
                .restore(&on("other"), &other)
                .await
                .expect("restore")
                .hit
        );
        assert_eq!(
            std::fs::read_to_string(other.join("target/out")).expect("read"),
            "from master"
        );
        let again = dir.path().join("again");
        std::fs::create_dir_all(&again).expect("mkdir");
        assert!(
            caches
                .restore(&on("feature/x"), &again)
                .await
                .expect("restore")
                .hit
        );
        assert_eq!(
            std::fs::read_to_string(again.join("target/out")).expect("read"),
            "from feature",
            "a branch's own entry comes first"
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn never_saves_through_a_link() {
        let dir = tempfile::tempdir().expect("dir");
        let caches = Caches::new(dir.path().join("cache"));
        let mut job = job();
        job.cache = Some(Cache {
            key: "k".into(),
            paths: vec!["target".into()],
        });
        let work = dir.path().join("work");
        std::fs::create_dir_all(dir.path().join("secrets")).expect("mkdir");
        std::fs::create_dir_all(&work).expect("mkdir");
        std::os::unix::fs::symlink(dir.path().join("secrets"), work.join("target")).expect("link");
        let error = caches.save(&job, &work, "k").await.expect_err("refused");
        assert!(error.to_string().contains("symbolic link"), "{error}");
    }
}

//! Artifacts: after a task passes, the files matching its `artifacts` patterns go to the
//! content-addressed store; before a task runs, the artifacts of the tasks it needs are put
//! back into its checkout at their paths. The store is a directory ([`Blobs`]) or the
//! installation's registry ([`Oci`]): there, a task's artifacts are blobs of the
//! repository's `artifacts`, named by a manifest tagged with the build and the task.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSetBuilder};
use kiln_shared::wire::{Artifact, JobRequested};

use crate::blobs::Blobs;
use crate::confine;
use kiln_io::registry::oci::{ARTIFACTS, ARTIFACTS_TYPE, Layer, Oci};

/// Where artifacts are kept.
#[derive(Debug, Clone)]
pub enum ArtifactStore {
    /// A directory every worker sees (one host, `kiln-worker run`, or a network mount).
    Directory(Blobs),
    /// The installation's registry.
    Registry(Oci),
}

/// Stores the files of `workdir` matching the job's `artifacts` patterns as the artifacts of
/// its task. Returns them, and how many were new to the store.
pub async fn collect(
    store: &ArtifactStore,
    workdir: &Path,
    job: &JobRequested,
) -> io::Result<(Vec<Artifact>, usize)> {
    if job.artifacts.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let (root, patterns) = (workdir.to_owned(), job.artifacts.clone());
    let files = tokio::task::spawn_blocking(move || matching(&root, &patterns))
        .await
        .map_err(io::Error::other)??;
    let mut artifacts = Vec::new();
    let mut uploaded = 0;
    for (path, file) in files {
        let stored = match store {
            ArtifactStore::Directory(blobs) => {
                let blobs = blobs.clone();
                tokio::task::spawn_blocking(move || blobs.put(&file))
                    .await
                    .map_err(io::Error::other)??
            }
            ArtifactStore::Registry(oci) => oci.put_file(&job.build.repo, ARTIFACTS, &file).await?,
        };
        uploaded += usize::from(stored.uploaded);
        artifacts.push(Artifact {
            task: job.task.clone(),
            path,
            digest: stored.digest,
            size: stored.size,
        });
    }
    if let ArtifactStore::Registry(oci) = store {
        // Names the blobs, so the registry's garbage collection keeps them.
        let layers: Vec<Layer> = artifacts
            .iter()
            .map(|a| Layer {
                path: a.path.clone(),
                digest: a.digest.clone(),
                size: a.size,
            })
            .collect();
        let annotations = BTreeMap::from([
            ("dev.kiln.build".to_owned(), job.build.id.to_string()),
            ("dev.kiln.task".to_owned(), job.task.clone()),
        ]);
        let tag = manifest_tag(job);
        oci.put_manifest(
            &job.build.repo,
            ARTIFACTS,
            &tag,
            ARTIFACTS_TYPE,
            &layers,
            annotations,
        )
        .await?;
    }
    Ok((artifacts, uploaded))
}

/// `build-<id>-<task>`, made a valid tag (at most 128 of `[A-Za-z0-9_.-]`).
fn manifest_tag(job: &JobRequested) -> String {
    let task: String = job
        .task
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut tag = format!("build-{}-{task}", job.build.id);
    tag.truncate(128);
    tag
}

/// The files of `workdir` matching `patterns`, by their `/`-separated path. Blocking.
fn matching(workdir: &Path, patterns: &[String]) -> io::Result<Vec<(String, PathBuf)>> {
    let mut set = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        set.add(glob);
    }
    let set = set
        .build()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut files = Vec::new();
    let walk = walkdir::WalkDir::new(workdir)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git");
    for entry in walk {
        let entry = entry.map_err(io::Error::other)?;
        if !entry.file_type().is_file() {
            continue;
        }
        let Ok(relative) = entry.path().strip_prefix(workdir) else {
            continue;
        };
        let path = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        if set.is_match(&path) {
            files.push((path, entry.path().to_owned()));
        }
    }
    Ok(files)
}

/// Puts the job's `inputs` (the artifacts of the tasks it needs) into `workdir` at their
/// paths.
pub async fn restore(store: &ArtifactStore, workdir: &Path, job: &JobRequested) -> io::Result<()> {
    let mut placed: BTreeMap<&str, &Artifact> = BTreeMap::new();
    for artifact in &job.inputs {
        // Two needed tasks leaving different files at one path: which one is meant?
        if let Some(other) = placed.insert(&artifact.path, artifact)
            && other.digest != artifact.digest
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "`{}` and `{}` both leave a different `{}`",
                    other.task, artifact.task, artifact.path
                ),
            ));
        }
    }
    let (root, paths): (PathBuf, Vec<String>) = (
        workdir.to_owned(),
        job.inputs.iter().map(|a| a.path.clone()).collect(),
    );
    let destinations = tokio::task::spawn_blocking(move || {
        paths
            .iter()
            .map(|path| confine::destination(&root, Path::new(path)))
            .collect::<io::Result<Vec<PathBuf>>>()
    })
    .await
    .map_err(io::Error::other)??;
    for (artifact, destination) in job.inputs.iter().zip(destinations) {
        match store {
            ArtifactStore::Directory(blobs) => {
                let (blobs, digest) = (blobs.clone(), artifact.digest.clone());
                tokio::task::spawn_blocking(move || blobs.get(&digest, &destination))
                    .await
                    .map_err(io::Error::other)??;
            }
            ArtifactStore::Registry(oci) => {
                oci.get_file(
                    &job.build.repo,
                    ARTIFACTS,
                    &artifact.digest,
                    artifact.size,
                    &destination,
                )
                .await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(artifacts: &[&str], inputs: Vec<Artifact>) -> JobRequested {
        let mut job: JobRequested = serde_json::from_value(serde_json::json!({
            "build": { "id": 1, "repo": "acme/api", "branch": "main", "commit": "c" },
            "clone_url": "", "task": "package", "step": "package", "attempt": 1,
            "platform": "linux/amd64", "commands": [], "timeout_secs": 1
        }))
        .expect("job");
        job.artifacts = artifacts.iter().map(|a| (*a).to_owned()).collect();
        job.inputs = inputs;
        job
    }

    #[tokio::test]
    async fn collects_matching_files_and_restores_them_elsewhere() {
        let dir = tempfile::tempdir().expect("dir");
        let store = ArtifactStore::Directory(Blobs::new(dir.path().join("store")));
        let work = dir.path().join("work");
        for (path, text) in [
            ("dist/a.deb", "a"),
            ("dist/sub/b.deb", "b"),
            ("dist/notes.txt", "n"),
            (".git/x.deb", "g"),
        ] {
            let file = work.join(path);
            std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
            std::fs::write(file, text).expect("write");
        }
        let package = job(&["dist/*.deb", "dist/**/b.deb"], Vec::new());
        let (artifacts, uploaded) = collect(&store, &work, &package).await.expect("collect");
        let paths: Vec<&str> = artifacts.iter().map(|a| a.path.as_str()).collect();
        assert_eq!(paths, ["dist/a.deb", "dist/sub/b.deb"]);
        assert_eq!(uploaded, 2);
        let (_, again) = collect(&store, &work, &package).await.expect("collect");
        assert_eq!(again, 0, "stored content is not uploaded again");

        let next = dir.path().join("next");
        let consumer = job(&[], artifacts.clone());
        restore(&store, &next, &consumer).await.expect("restore");
        assert_eq!(
            std::fs::read_to_string(next.join("dist/sub/b.deb")).expect("read"),
            "b"
        );
        let mut evil = artifacts[0].clone();
        evil.path = "../escape".into();
        assert!(restore(&store, &next, &job(&[], vec![evil])).await.is_err());
    }

    #[test]
    fn manifest_tags_are_valid_tags() {
        let mut package = job(&[], Vec::new());
        package.task = "unit.linux-amd64.1".into();
        assert_eq!(manifest_tag(&package), "build-1-unit.linux-amd64.1");
        package.task = "x".repeat(300);
        assert_eq!(manifest_tag(&package).len(), 128);
    }
}

//! Artifacts: after a task passes, the files matching its `artifacts` patterns go to the
//! content-addressed store; before a task runs, the artifacts of the tasks it needs are put
//! back into its checkout at their paths.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use globset::{GlobBuilder, GlobSetBuilder};
use kiln_shared::wire::Artifact;

use crate::blobs::Blobs;
use crate::confine;

/// Stores the files of `workdir` matching `patterns` as artifacts of `task`. Returns them,
/// and how many were new to the store.
pub async fn collect(
    blobs: &Blobs,
    workdir: &Path,
    task: &str,
    patterns: &[String],
) -> io::Result<(Vec<Artifact>, usize)> {
    if patterns.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let (blobs, workdir, task, patterns) = (
        blobs.clone(),
        workdir.to_owned(),
        task.to_owned(),
        patterns.to_vec(),
    );
    tokio::task::spawn_blocking(move || collect_blocking(&blobs, &workdir, &task, &patterns))
        .await
        .map_err(io::Error::other)?
}

fn collect_blocking(
    blobs: &Blobs,
    workdir: &Path,
    task: &str,
    patterns: &[String],
) -> io::Result<(Vec<Artifact>, usize)> {
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
    let mut artifacts = Vec::new();
    let mut uploaded = 0;
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
        if !set.is_match(&path) {
            continue;
        }
        let stored = blobs.put(entry.path())?;
        uploaded += usize::from(stored.uploaded);
        artifacts.push(Artifact {
            task: task.to_owned(),
            path,
            digest: stored.digest,
            size: stored.size,
        });
    }
    Ok((artifacts, uploaded))
}

/// Puts `inputs` into `workdir` at their paths.
pub async fn restore(blobs: &Blobs, workdir: &Path, inputs: &[Artifact]) -> io::Result<()> {
    if inputs.is_empty() {
        return Ok(());
    }
    let (blobs, workdir, inputs) = (blobs.clone(), workdir.to_owned(), inputs.to_vec());
    tokio::task::spawn_blocking(move || {
        let mut placed: BTreeMap<&str, &Artifact> = BTreeMap::new();
        for artifact in &inputs {
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
            let destination = confine::destination(&workdir, Path::new(&artifact.path))?;
            blobs.get(&artifact.digest, &destination)?;
        }
        Ok(())
    })
    .await
    .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn collects_matching_files_and_restores_them_elsewhere() {
        let dir = tempfile::tempdir().expect("dir");
        let blobs = Blobs::new(dir.path().join("store"));
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
        let patterns = vec!["dist/*.deb".to_owned(), "dist/**/b.deb".to_owned()];
        let (artifacts, uploaded) = collect(&blobs, &work, "package", &patterns)
            .await
            .expect("collect");
        let paths: Vec<&str> = artifacts.iter().map(|a| a.path.as_str()).collect();
        assert_eq!(paths, ["dist/a.deb", "dist/sub/b.deb"]);
        assert_eq!(uploaded, 2);
        let (_, again) = collect(&blobs, &work, "package", &patterns)
            .await
            .expect("collect");
        assert_eq!(again, 0, "stored content is not uploaded again");

        let next = dir.path().join("next");
        restore(&blobs, &next, &artifacts).await.expect("restore");
        assert_eq!(
            std::fs::read_to_string(next.join("dist/sub/b.deb")).expect("read"),
            "b"
        );
        let mut evil = artifacts[0].clone();
        evil.path = "../escape".into();
        assert!(restore(&blobs, &next, &[evil]).await.is_err());
    }
}

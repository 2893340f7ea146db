//! `kiln-worker export`: a build's manifest, images and artifacts in one tarball, for a
//! machine with no network.
//!
//! ```text
//! manifest.json            the build's manifest (GET /builds/{id}/manifest)
//! images.tar               its in-tree images: `docker load -i images.tar`
//! artifacts/<task>/<path>  each task's artifacts
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use futures_util::StreamExt;
use kiln_io::registry::oci::ARTIFACTS;
use kiln_shared::wire::Manifest;
use tokio::io::AsyncWriteExt;

use crate::artifacts::ArtifactStore;
use crate::docker::DockerRunner;

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub manifest: Manifest,
    pub bytes: u64,
}

/// Fetches build `build`'s manifest from the bot at `bot_url`, then writes the tarball to
/// `out`. Every image must be on this machine's engine or in the installation's registry,
/// and every artifact in `store`.
pub async fn export(
    bot_url: &str,
    build: u64,
    docker: &DockerRunner,
    store: &ArtifactStore,
    out: &Path,
) -> anyhow::Result<Exported> {
    let manifest = fetch_manifest(bot_url, build).await?;
    let dir = out.parent().filter(|d| !d.as_os_str().is_empty());
    let scratch = tempfile::tempdir_in(dir.unwrap_or(Path::new(".")))
        .context("cannot make a scratch directory beside the output")?;

    let images_tar = scratch.path().join("images.tar");
    let tags: Vec<&str> = manifest.images.iter().map(|i| i.tag.as_str()).collect();
    if !tags.is_empty() {
        for tag in &tags {
            let here = docker.have_in_tree(tag).await?;
            anyhow::ensure!(
                here,
                "image {tag} is neither on this machine nor in the registry"
            );
        }
        let mut file = tokio::fs::File::create(&images_tar).await?;
        let mut stream = docker.engine().export_images(&tags);
        while let Some(chunk) = stream.next().await {
            file.write_all(&chunk.context("the engine stopped sending the images")?)
                .await?;
        }
        file.flush().await?;
    }

    let mut artifacts: Vec<(PathBuf, String)> = Vec::new();
    for (n, artifact) in manifest.artifacts.iter().enumerate() {
        let about = || format!("artifact {} of {}", artifact.path, artifact.task);
        let source = match store {
            ArtifactStore::Directory(blobs) => blobs.path(&artifact.digest).with_context(about)?,
            ArtifactStore::Registry(oci) => {
                let download = scratch.path().join(format!("artifact-{n}"));
                let (digest, size) = (&artifact.digest, artifact.size);
                oci.get_file(&manifest.repo, ARTIFACTS, digest, size, &download)
                    .await
                    .with_context(about)?;
                download
            }
        };
        artifacts.push((
            source,
            format!("artifacts/{}/{}", artifact.task, artifact.path),
        ));
    }

    let manifest_json = serde_json::to_vec_pretty(&manifest)?;
    let out = out.to_owned();
    let with_images = !tags.is_empty();
    let scratch_dir = scratch.path().to_owned();
    let bytes = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let partial = tempfile::NamedTempFile::new_in(&scratch_dir)?;
        let mut archive = tar::Builder::new(partial.as_file());
        let mut header = tar::Header::new_gnu();
        header.set_size(manifest_json.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(now_secs());
        archive.append_data(&mut header, "manifest.json", manifest_json.as_slice())?;
        if with_images {
            archive.append_path_with_name(&images_tar, "images.tar")?;
        }
        for (source, name) in &artifacts {
            archive.append_path_with_name(source, name)?;
        }
        archive.finish()?;
        drop(archive);
        let bytes = partial.as_file().metadata()?.len();
        partial
            .persist(&out)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot write {}", out.display()))?;
        Ok(bytes)
    })
    .await??;
    Ok(Exported { manifest, bytes })
}

async fn fetch_manifest(bot_url: &str, build: u64) -> anyhow::Result<Manifest> {
    let url = format!("{}/builds/{build}/manifest", bot_url.trim_end_matches('/'));
    let response = reqwest::get(&url)
        .await
        .with_context(|| format!("cannot reach the bot at {url}"))?;
    let status = response.status();
    if !status.is_success() {
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let reason = body["error"].as_str().unwrap_or("no reason given");
        anyhow::bail!("the bot answered {status} for build {build}: {reason}");
    }
    response
        .json()
        .await
        .with_context(|| format!("the bot's answer at {url} is not a manifest"))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

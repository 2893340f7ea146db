//! Where ended builds' logs are archived: the installation's registry (blobs of
//! `kiln/<owner>/<name>/logs`, named by one manifest per build, tagged `build-<id>`, so the
//! registry's garbage collection keeps them), or a directory of the bot's host when there is
//! no registry (`sha256/<hex>`, by content).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use kiln_io::digest::sha256;
use kiln_io::registry::oci::{LOGS, LOGS_TYPE, Layer, Oci};
use kiln_shared::build::BuildId;
use kiln_shared::record::ArchivedLog;

/// The store of archived logs.
#[derive(Debug, Clone)]
pub enum Archive {
    Registry(Oci),
    Directory(PathBuf),
}

/// A blob as stored: its digest and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
}

impl Archive {
    /// Stores `bytes`, a log of repository `repo`.
    pub async fn put(&self, repo: &str, bytes: Vec<u8>) -> io::Result<Blob> {
        match self {
            Self::Registry(oci) => {
                let stored = oci.put_bytes(repo, LOGS, bytes).await?;
                Ok(Blob {
                    digest: stored.digest,
                    size: stored.size,
                })
            }
            Self::Directory(dir) => put_file(dir, bytes).await,
        }
    }

    /// The bytes of `log`, a log of repository `repo`, checked against its digest.
    pub async fn get(&self, repo: &str, log: &ArchivedLog) -> io::Result<Vec<u8>> {
        match self {
            Self::Registry(oci) => oci.get_bytes(repo, LOGS, &log.digest, log.size).await,
            Self::Directory(dir) => {
                let path = blob_path(dir, &log.digest)?;
                let bytes = tokio::fs::read(&path).await.map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))
                })?;
                if sha256(&bytes) != log.digest {
                    return Err(io::Error::other(format!(
                        "{} is not {}: the archive is damaged",
                        path.display(),
                        log.digest
                    )));
                }
                Ok(bytes)
            }
        }
    }

    /// Names build `id`'s archived logs, by task, so that the store keeps them.
    pub async fn keep(&self, repo: &str, id: BuildId, logs: &[(String, Blob)]) -> io::Result<()> {
        let Self::Registry(oci) = self else {
            // A directory keeps what it holds.
            return Ok(());
        };
        let layers: Vec<Layer> = logs
            .iter()
            .map(|(task, blob)| Layer {
                path: task.clone(),
                digest: blob.digest.clone(),
                size: blob.size,
            })
            .collect();
        let tag = format!("build-{id}");
        oci.put_manifest(repo, LOGS, &tag, LOGS_TYPE, &layers, BTreeMap::new())
            .await
    }
}

/// Where a blob of `digest` lives under `dir`; a digest that is not `sha256:<hex>` names
/// nothing (it could name a path outside the directory).
fn blob_path(dir: &Path, digest: &str) -> io::Result<PathBuf> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(dir.join("sha256").join(hex))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{digest:?} is not a sha256 digest"),
        )),
    }
}

async fn put_file(dir: &Path, bytes: Vec<u8>) -> io::Result<Blob> {
    let digest = sha256(&bytes);
    let size = bytes.len() as u64;
    let path = blob_path(dir, &digest)?;
    if tokio::fs::try_exists(&path).await? {
        return Ok(Blob { digest, size });
    }
    let parent = path.parent().unwrap_or(dir);
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot make {}: {e}", parent.display())))?;
    // Written aside, then renamed: a reader never sees half a blob.
    let partial = parent.join(format!(".{}.{}", &digest[7..], std::process::id()));
    tokio::fs::write(&partial, &bytes).await?;
    tokio::fs::rename(&partial, &path).await?;
    Ok(Blob { digest, size })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_directory_keeps_blobs_by_content() {
        let dir = tempfile::tempdir().expect("a directory");
        let archive = Archive::Directory(dir.path().to_owned());
        let blob = archive.put("acme/api", b"log".to_vec()).await.expect("put");
        assert_eq!(
            blob,
            archive
                .put("acme/api", b"log".to_vec())
                .await
                .expect("again")
        );
        let log = ArchivedLog {
            digest: blob.digest.clone(),
            size: blob.size,
            lines: 1,
        };
        assert_eq!(archive.get("acme/api", &log).await.expect("get"), b"log");

        let path = blob_path(dir.path(), &blob.digest).expect("a path");
        std::fs::write(&path, b"changed").expect("damaged");
        let error = archive.get("acme/api", &log).await.expect_err("damaged");
        assert!(error.to_string().contains("damaged"), "{error}");
    }

    #[test]
    fn a_digest_names_no_path_outside_the_directory() {
        let dir = Path::new("/archive");
        assert!(blob_path(dir, "sha256:../../etc/passwd").is_err());
        assert!(blob_path(dir, "md5:00").is_err());
        let hex = "a".repeat(64);
        assert_eq!(
            blob_path(dir, &format!("sha256:{hex}")).expect("a path"),
            dir.join("sha256").join(hex)
        );
    }
}

//! The content-addressed store of artifacts: a file is kept once per content, under its
//! SHA-256, in a directory that every worker of an installation shares (a local disk for
//! one host, a network mount for several).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// The store under one root: `sha256/<2 hex>/<64 hex>`.
#[derive(Debug, Clone)]
pub struct Blobs {
    root: PathBuf,
}

impl Blobs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The stored file holding `digest`'s content.
    pub fn path(&self, digest: &str) -> io::Result<PathBuf> {
        let path = self.path_of(digest).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("bad digest {digest}"))
        })?;
        if !path.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("artifact {digest} is not in the store"),
            ));
        }
        Ok(path)
    }

    /// Where the content of `digest` lives, if `digest` is well-formed.
    fn path_of(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        let well_formed = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        well_formed.then(|| self.root.join("sha256").join(&hex[..2]).join(hex))
    }

    /// Stores the file at `path`, unless its content is stored already. Blocking.
    pub fn put(&self, path: &Path) -> io::Result<Stored> {
        let (digest, size) = sha256_file(path)?;
        let target = self
            .path_of(&digest)
            .ok_or_else(|| io::Error::other("bad digest"))?;
        if target.exists() {
            touch(&target)?;
            return Ok(Stored {
                digest,
                size,
                uploaded: false,
            });
        }
        let dir = target.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir)?;
        // Copy beside the target, then rename: a reader never sees half a file.
        let partial = tempfile::NamedTempFile::new_in(dir)?;
        std::fs::copy(path, partial.path())?;
        partial.persist(&target).map_err(|e| e.error)?;
        Ok(Stored {
            digest,
            size,
            uploaded: true,
        })
    }

    /// Copies the content of `digest` to `dest`. Blocking.
    pub fn get(&self, digest: &str, dest: &Path) -> io::Result<()> {
        let source = self.path_of(digest).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("bad digest {digest}"))
        })?;
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(&source, dest).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("artifact {digest} is not in the store: {e}"),
            )
        })?;
        touch(&source)
    }

    /// Every stored digest with its size and last modification, for the garbage collector.
    pub fn list(&self) -> io::Result<Vec<(PathBuf, std::fs::Metadata)>> {
        files_at_depth(&self.root.join("sha256"), 2)
    }
}

/// The files exactly `depth` levels under `root`, with their metadata; none if `root` is
/// missing.
pub fn files_at_depth(root: &Path, depth: usize) -> io::Result<Vec<(PathBuf, std::fs::Metadata)>> {
    let mut found = Vec::new();
    if !root.exists() {
        return Ok(found);
    }
    for entry in walkdir::WalkDir::new(root)
        .min_depth(depth)
        .max_depth(depth)
    {
        let entry = entry.map_err(io::Error::other)?;
        if entry.file_type().is_file() {
            found.push((
                entry.path().to_owned(),
                entry.metadata().map_err(io::Error::other)?,
            ));
        }
    }
    Ok(found)
}

/// Marks a stored file as used now (its modification time), for `kiln-worker gc`.
pub fn touch(path: &Path) -> io::Result<()> {
    File::options()
        .append(true)
        .open(path)?
        .set_modified(std::time::SystemTime::now())
}

pub use kiln_io::digest::{Stored, sha256_file};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_each_content_once_and_gives_it_back() {
        let dir = tempfile::tempdir().expect("dir");
        let blobs = Blobs::new(dir.path().join("store"));
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, "same").expect("write");
        std::fs::write(&b, "same").expect("write");
        let first = blobs.put(&a).expect("put");
        assert!(first.uploaded);
        assert_eq!(
            first.digest,
            // printf same | sha256sum
            "sha256:0967115f2813a3541eaef77de9d9d5773f1c0c04314b0bbfe4ff3b3b1c55b5d5"
        );
        assert_eq!(first.size, 4);
        let second = blobs.put(&b).expect("put");
        assert!(!second.uploaded, "the same content is not stored again");
        assert_eq!(second.digest, first.digest);
        let out = dir.path().join("out/c");
        blobs.get(&first.digest, &out).expect("get");
        assert_eq!(std::fs::read_to_string(out).expect("read"), "same");
        assert!(blobs.get("sha256:nope", &dir.path().join("x")).is_err());
        assert_eq!(blobs.list().expect("list").len(), 1);
    }
}

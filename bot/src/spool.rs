//! Deliveries the bot could only have answered "retry later" (Redis and RabbitMQ both away):
//! kept in files of the bot's state directory, each written whole before the forge is told
//! it was taken, and accepted again once they can be (`http::forge::replay_spooled`). Forges
//! do not send a refused delivery again by themselves; a spooled one is not lost, also across
//! a restart of the bot, as long as its state directory is kept.

use std::path::{Path, PathBuf};

use kiln_shared::ident::RepoName;
use kiln_shared::trigger::ForgeEvent;
use serde::{Deserialize, Serialize};

use crate::config::Forge;

/// A verified delivery, translated, kept for later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spooled {
    pub repo: RepoName,
    pub forge: Forge,
    /// Its delivery id at the forge: accepted later, it is still told from its retries.
    pub delivery: String,
    pub event: ForgeEvent,
}

/// The spool: a directory of one file per delivery.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Keeps `spooled`, on disk before this returns: written to a file of its own, synced,
    /// then renamed into place, so a crash leaves either the whole delivery or none of it.
    pub async fn keep(&self, spooled: &Spooled) -> std::io::Result<()> {
        let json = serde_json::to_vec(spooled).map_err(std::io::Error::other)?;
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(std::io::Error::other)?;
        let name = format!("{:020}-{}", kiln_io::clock::now_ms(), hex::encode(random));
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            std::fs::create_dir_all(&dir)?;
            let writing = dir.join(format!("{name}.writing"));
            let mut file = std::fs::File::create(&writing)?;
            file.write_all(&json)?;
            file.sync_all()?;
            std::fs::rename(&writing, dir.join(format!("{name}.json")))?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// The deliveries kept, oldest first, each with its file; a file that does not read as
    /// one is moved to `unreadable/` beside them, and said so.
    pub async fn kept(&self) -> std::io::Result<Vec<(PathBuf, Spooled)>> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
                Ok(entries) => entries
                    .filter_map(|e| Some(e.ok()?.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "json"))
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(e),
            };
            files.sort();
            Ok(files
                .into_iter()
                .filter_map(|path| match read(&path) {
                    Ok(spooled) => Some((path, spooled)),
                    Err(error) => {
                        let aside = dir.join("unreadable");
                        let moved = std::fs::create_dir_all(&aside).and_then(|()| {
                            std::fs::rename(&path, aside.join(path.file_name().unwrap_or_default()))
                        });
                        tracing::error!(file = %path.display(), %error, moved_aside = moved.is_ok(),
                            "a spooled delivery does not read");
                        None
                    }
                })
                .collect())
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Whether a delivery could be kept now: the directory is there (made if need be) and
    /// takes a file.
    pub async fn writable(&self) -> std::io::Result<()> {
        let dir = self.dir.clone();
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(std::io::Error::other)?;
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            // Each probe its own file: two at once must not remove each other's.
            let probe = dir.join(format!(".probe-{}", hex::encode(random)));
            std::fs::write(&probe, b"")?;
            std::fs::remove_file(&probe)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Forgets the delivery kept in `file`: it was accepted.
    pub async fn done(&self, file: &Path) -> std::io::Result<()> {
        tokio::fs::remove_file(file).await
    }
}

fn read(path: &Path) -> std::io::Result<Spooled> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_shared::trigger::BranchGone;

    #[tokio::test]
    async fn a_kept_delivery_is_read_back_until_it_is_done() {
        let dir = tempfile::tempdir().expect("a directory");
        let spool = Spool::new(dir.path().join("spool"));
        assert!(spool.kept().await.expect("an empty spool").is_empty());
        let gone = |branch: &str| Spooled {
            repo: "acme/api".into(),
            forge: Forge::GitLab,
            delivery: format!("d-{branch}"),
            event: ForgeEvent::BranchGone(BranchGone {
                repo: "acme/api".into(),
                branch: branch.into(),
                why: "deleted".into(),
            }),
        };
        spool.keep(&gone("a")).await.expect("kept");
        spool.keep(&gone("b")).await.expect("kept");
        std::fs::write(dir.path().join("spool/zz.json"), "not json").expect("written");
        let kept = spool.kept().await.expect("read");
        assert!(
            dir.path().join("spool/unreadable/zz.json").exists(),
            "set aside"
        );
        let deliveries: Vec<_> = kept.iter().map(|(_, s)| s.delivery.as_str()).collect();
        assert_eq!(deliveries, ["d-a", "d-b"]);
        assert_eq!(kept[0].1, gone("a"));
        spool.done(&kept[0].0).await.expect("done");
        let left: Vec<_> = spool
            .kept()
            .await
            .expect("read")
            .into_iter()
            .map(|(_, s)| s.delivery)
            .collect();
        assert_eq!(left, ["d-b"]);
    }
}

//! `kiln-worker gc`: frees a worker's disk of in-tree images, artifacts and cache entries that
//! have not been used for a while, or, oldest first, of as many as it takes to fit a size.
//!
//! Each branch's newest image (the one its branch tag names) is kept whatever its age: it is
//! the next build's cache source. Use is tracked without bookkeeping of Kiln's own: every
//! build that uses an image tags it with its branch again (Docker's `LastTagTime`), and every
//! artifact or cache entry read or stored again has its modification time set to now.
//!
//! Also the reaper of leased environments ([`reap_environments`]), which a serving worker runs
//! every second: a container labelled with a lease that no longer runs goes.

pub mod registry;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bollard::Docker;
use bollard::query_parameters::{
    ListImagesOptionsBuilder, PruneImagesOptionsBuilder, RemoveImageOptionsBuilder,
};

use kiln_shared::lease::LeaseId;

use crate::blobs::Blobs;
use crate::cache::Caches;
use crate::docker::DockerRunner;
use crate::store::Store;

/// What may stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Anything unused for longer goes.
    pub max_age: Duration,
    /// Of each kind (images, artifacts, caches), at most this many bytes stay; the least
    /// recently used go first.
    pub max_bytes: u64,
}

/// Something the collector may remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub bytes: u64,
    pub last_used: SystemTime,
    /// Never removed (a branch's newest image); counts towards the size all the same.
    pub keep: bool,
}

/// The candidates to remove, by index: every one not kept that was last used more than
/// `max_age` before `now`, then, least recently used first, as many as it takes to bring
/// the total within `max_bytes`.
pub fn choose(candidates: &[Candidate], policy: Policy, now: SystemTime) -> Vec<usize> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by_key(|&i| (candidates[i].last_used, candidates[i].id.clone()));
    let mut total: u64 = candidates.iter().map(|c| c.bytes).sum();
    let mut chosen = Vec::new();
    for i in order {
        let candidate = &candidates[i];
        if candidate.keep {
            continue;
        }
        let age = now
            .duration_since(candidate.last_used)
            .unwrap_or(Duration::ZERO);
        if age > policy.max_age || total > policy.max_bytes {
            total -= candidate.bytes;
            chosen.push(i);
        }
    }
    chosen.sort_unstable();
    chosen
}

/// What one kind lost and kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Freed {
    pub removed: usize,
    pub bytes: u64,
    pub kept: usize,
}

impl std::fmt::Display for Freed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "removed {} ({:.1} MiB), kept {}",
            self.removed,
            self.bytes as f64 / (1024.0 * 1024.0),
            self.kept
        )
    }
}

/// What a collection did, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub images: Freed,
    pub artifacts: Freed,
    pub caches: Freed,
}

/// Collects images (when `docker` is given), then artifacts and cache entries under
/// `store_dir`. With `dry_run`, only reports what it would remove.
pub async fn collect(
    docker: Option<&Docker>,
    store_dir: &Path,
    policy: Policy,
    dry_run: bool,
) -> anyhow::Result<Report> {
    let now = SystemTime::now();
    let mut report = Report::default();
    if let Some(docker) = docker {
        report.images = collect_images(docker, policy, now, dry_run).await?;
    }
    let blobs = Blobs::new(store_dir.join("artifacts"));
    let caches = Caches::new(store_dir.join("cache"));
    let (artifacts, cached) =
        tokio::task::spawn_blocking(move || anyhow::Ok((blobs.list()?, caches.list()?))).await??;
    report.artifacts = collect_files(artifacts, policy, now, dry_run).await;
    report.caches = collect_files(cached, policy, now, dry_run).await;
    Ok(report)
}

/// Removes the chosen files.
async fn collect_files(
    files: Vec<(PathBuf, std::fs::Metadata)>,
    policy: Policy,
    now: SystemTime,
    dry_run: bool,
) -> Freed {
    let candidates: Vec<Candidate> = files
        .iter()
        .map(|(path, meta)| Candidate {
            id: path.display().to_string(),
            bytes: meta.len(),
            last_used: meta.modified().unwrap_or(now),
            keep: false,
        })
        .collect();
    let chosen = choose(&candidates, policy, now);
    let mut freed = Freed {
        kept: candidates.len() - chosen.len(),
        ..Freed::default()
    };
    for i in chosen {
        let (path, _) = &files[i];
        if !dry_run && let Err(error) = tokio::fs::remove_file(path).await {
            tracing::warn!(path = %path.display(), %error, "cannot remove");
            freed.kept += 1;
            continue;
        }
        freed.removed += 1;
        freed.bytes += candidates[i].bytes;
    }
    freed
}

/// The label every in-tree image carries (see [`crate::docker::image`]).
const REPO_LABEL: &str = "kiln.repo";

/// Removes the chosen in-tree images, then the dangling ones they leave.
async fn collect_images(
    docker: &Docker,
    policy: Policy,
    now: SystemTime,
    dry_run: bool,
) -> anyhow::Result<Freed> {
    let filters = std::collections::HashMap::from([("label", vec![REPO_LABEL])]);
    let options = ListImagesOptionsBuilder::new().filters(&filters).build();
    let images = docker.list_images(Some(options)).await?;
    let mut candidates = Vec::new();
    for image in &images {
        let created = SystemTime::UNIX_EPOCH
            + Duration::from_secs(u64::try_from(image.created).unwrap_or_default());
        let last_tagged = docker
            .inspect_image(&image.id)
            .await
            .ok()
            .and_then(|i| i.metadata?.last_tag_time)
            .and_then(|t| humantime::parse_rfc3339_weak(&t).ok());
        candidates.push(Candidate {
            id: image.id.clone(),
            bytes: u64::try_from(image.size).unwrap_or_default(),
            last_used: last_tagged.map_or(created, |t| t.max(created)),
            keep: image.repo_tags.iter().any(|tag| is_branch_tag(tag)),
        });
    }
    let chosen = choose(&candidates, policy, now);
    let mut freed = Freed {
        kept: candidates.len() - chosen.len(),
        ..Freed::default()
    };
    // An image built on another (a branch-scoped base) cannot go before it: pass again over
    // what is left while a pass removes something.
    let mut left = chosen;
    loop {
        let mut refused = Vec::new();
        for i in left.iter().copied() {
            let candidate = &candidates[i];
            if !dry_run {
                let options = RemoveImageOptionsBuilder::new().force(true).build();
                let removed = docker
                    .remove_image(&candidate.id, Some(options), None)
                    .await;
                if let Err(error) = removed {
                    refused.push((i, error));
                    continue;
                }
            }
            freed.removed += 1;
            freed.bytes += candidate.bytes;
        }
        if refused.is_empty() || refused.len() == left.len() {
            for (i, error) in &refused {
                tracing::warn!(image = %candidates[*i].id, %error, "cannot remove");
            }
            freed.kept += refused.len();
            break;
        }
        left = refused.into_iter().map(|(i, _)| i).collect();
    }
    if !dry_run {
        let filters = std::collections::HashMap::from([
            ("dangling", vec!["true"]),
            ("label", vec![REPO_LABEL]),
        ]);
        let options = PruneImagesOptionsBuilder::new().filters(&filters).build();
        let pruned = docker.prune_images(Some(options)).await?;
        freed.bytes += u64::try_from(pruned.space_reclaimed.unwrap_or_default()).unwrap_or(0);
    }
    Ok(freed)
}

/// Removes every environment container of this installation on `docker` whose lease no
/// longer runs in Redis (released, expired, or ended while it started), whoever started it
/// and whenever; notes each as gone for `env release`. Returns the leases whose containers
/// went. Containers are told by their labels, never by name alone.
pub async fn reap_environments(
    docker: &DockerRunner,
    store: &Store,
) -> anyhow::Result<Vec<LeaseId>> {
    let mut removed = Vec::new();
    for (id, name) in docker.environments().await? {
        if store.lease_runs(id).await? {
            continue;
        }
        tracing::info!(lease = %id, container = %name, "removing the environment of an ended lease");
        docker.remove_environment(&name).await?;
        store.environment_gone(id).await?;
        removed.push(id);
    }
    Ok(removed)
}

/// Whether `reference` (`name:tag`) names a branch's newest image rather than a content tag
/// (20 hexadecimal digits).
fn is_branch_tag(reference: &str) -> bool {
    let tag = reference.rsplit_once(':').map_or("", |(_, tag)| tag);
    !(tag.len() == 20 && tag.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn candidate(id: &str, mib: u64, days_ago: u64, keep: bool) -> Candidate {
        Candidate {
            id: id.into(),
            bytes: mib * MIB,
            last_used: SystemTime::UNIX_EPOCH + Duration::from_secs(100 * 86_400)
                - Duration::from_secs(days_ago * 86_400),
            keep,
        }
    }

    fn chosen(candidates: &[Candidate], max_days: u64, max_mib: u64) -> Vec<&str> {
        let policy = Policy {
            max_age: Duration::from_secs(max_days * 86_400),
            max_bytes: max_mib * MIB,
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100 * 86_400);
        choose(candidates, policy, now)
            .into_iter()
            .map(|i| candidates[i].id.as_str())
            .collect()
    }

    #[test]
    fn removes_by_age_then_least_recently_used_first_to_fit() {
        let all = [
            candidate("old", 10, 30, false),
            candidate("old-head", 10, 60, true),
            candidate("recent", 10, 2, false),
            candidate("newest", 10, 1, false),
        ];
        // (max days, max MiB) → what goes.
        let table: [(u64, u64, &[&str]); 5] = [
            (90, 1000, &[]),
            (14, 1000, &["old"]),
            (14, 20, &["old", "recent"]),
            (14, 0, &["old", "recent", "newest"]),
            (0, 1000, &["old", "recent", "newest"]),
        ];
        for (days, mib, expected) in table {
            assert_eq!(chosen(&all, days, mib), expected, "{days} days, {mib} MiB");
        }
    }

    #[test]
    fn tells_branch_tags_from_content_tags() {
        assert!(!is_branch_tag("kiln/acme/api/build:0123456789abcdef0123"));
        assert!(is_branch_tag("kiln/acme/api/build:master"));
        assert!(is_branch_tag("kiln/acme/api/build:feature-x"));
        assert!(is_branch_tag("localhost:5000/kiln/build:main"));
    }
}

//! `kiln-worker gc --registry`: the installation registry's in-tree images. A branch tag
//! (`<branch slug>-<hash>`) of a branch that is gone is taken out; a content tag (20 hex
//! digits) that no remaining branch tag names, and whose image was made longer than
//! `--max-age` ago, goes with its manifest. Which branches exist is the bot's to say
//! (`GET /api/repositories`, fetched from each repository): a repository it does not know, or
//! whose branches it could not read, is left alone. Artifacts and cache entries are not
//! images and are left to their own repositories' rules.
//!
//! The registry frees the space when its own garbage collection runs (`registry
//! garbage-collect`, with the registry stopped or read-only).

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use kiln_io::registry::catalog::Tagged;
use kiln_io::registry::oci::{ARTIFACTS, CACHE, Oci};
use kiln_shared::template::branch_slug;
use serde::Deserialize;

/// What to take out of one image repository.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Branch tags of gone branches.
    pub untag: Vec<String>,
    /// Manifests (digests) whose content tags are unused and old.
    pub delete: Vec<String>,
}

/// Whether `tag` is a content tag: 20 lowercase hex digits.
fn is_content(tag: &str) -> bool {
    tag.len() == 20
        && tag
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What goes from an image repository whose tags are `tags`, given the branch tags of the
/// branches that exist (`live`), `max_age` and `now`.
pub fn judge(
    tags: &[Tagged],
    live: &BTreeSet<String>,
    max_age: Duration,
    now: SystemTime,
) -> Verdict {
    let mut verdict = Verdict::default();
    let mut named: BTreeSet<&str> = BTreeSet::new();
    for tagged in tags.iter().filter(|t| !is_content(&t.tag)) {
        if live.contains(&tagged.tag) {
            named.insert(&tagged.digest);
        } else {
            verdict.untag.push(tagged.tag.clone());
        }
    }
    let mut delete: BTreeSet<&str> = BTreeSet::new();
    for tagged in tags.iter().filter(|t| is_content(&t.tag)) {
        let old = tagged
            .created
            .and_then(|made| now.duration_since(made).ok())
            .is_some_and(|age| age > max_age);
        if old && !named.contains(tagged.digest.as_str()) {
            delete.insert(&tagged.digest);
        }
    }
    verdict.delete = delete.into_iter().map(str::to_owned).collect();
    verdict
}

/// What the bot says of a repository it builds.
#[derive(Debug, Deserialize)]
struct Known {
    name: String,
    path: String,
    branches: Option<Vec<String>>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Listing {
    repositories: Vec<Known>,
}

/// What a collection of the registry did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub untagged: usize,
    pub deleted: usize,
    /// Image repositories left alone: no repository the bot builds, or its branches unknown.
    pub skipped: usize,
}

impl std::fmt::Display for Pruned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} branch tag(s) and {} image(s) taken out, {} repository(ies) left alone",
            self.untagged, self.deleted, self.skipped
        )
    }
}

/// The bot that says which branches exist, and an operator's token for it.
#[derive(Debug)]
pub struct Bot {
    pub url: String,
    pub token: String,
}

/// Collects the in-tree images of `oci`'s registry, asking `bot` which branches exist. With
/// `dry_run`, only says what it would take out.
pub async fn collect(
    oci: &Oci,
    bot: &Bot,
    max_age: Duration,
    dry_run: bool,
) -> anyhow::Result<Pruned> {
    let url = format!("{}/api/repositories", bot.url.trim_end_matches('/'));
    let listing: Listing = reqwest::Client::new()
        .get(&url)
        .bearer_auth(&bot.token)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| anyhow::anyhow!("cannot ask the bot which branches exist ({url}): {e}"))?
        .json()
        .await
        .map_err(|e| anyhow::anyhow!("the bot's answer at {url} is not a repository list: {e}"))?;
    let now = SystemTime::now();
    let mut pruned = Pruned::default();
    for repository in oci.repositories("kiln/").await? {
        let Some((path, image)) = repository
            .strip_prefix("kiln/")
            .and_then(|r| r.rsplit_once('/'))
        else {
            continue;
        };
        if image == ARTIFACTS || image == CACHE {
            continue;
        }
        let known = listing.repositories.iter().find(|k| k.path == path);
        let Some((known, branches)) = known.and_then(|k| Some((k, k.branches.as_ref()?))) else {
            let why = known
                .and_then(|k| k.error.clone())
                .unwrap_or_else(|| "no repository the bot builds".into());
            println!("{repository}: left alone: {why}");
            pruned.skipped += 1;
            continue;
        };
        let live: BTreeSet<String> = branches.iter().map(|b| branch_slug(b)).collect();
        let tags = oci.tags(&repository).await?;
        let verdict = judge(&tags, &live, max_age, now);
        let verb = if dry_run {
            "would take out"
        } else {
            "takes out"
        };
        for tag in &verdict.untag {
            println!(
                "{repository}:{tag}: {verb} (a branch of {} that is gone)",
                known.name
            );
            if !dry_run {
                oci.untag(&repository, tag).await?;
            }
        }
        for digest in &verdict.delete {
            println!("{repository}@{digest}: {verb} (unused, older than the max age)");
            if !dry_run {
                oci.delete_manifest(&repository, digest).await?;
            }
        }
        pruned.untagged += verdict.untag.len();
        pruned.deleted += verdict.delete.len();
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tagged(tag: &str, digest: &str, days_old: u64) -> Tagged {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100 * 86_400);
        Tagged {
            tag: tag.into(),
            digest: digest.into(),
            created: Some(now - Duration::from_secs(days_old * 86_400)),
        }
    }

    #[test]
    fn gone_branches_lose_their_tags_and_unnamed_old_images_go() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100 * 86_400);
        let master = branch_slug("master");
        let gone = branch_slug("feature/x");
        let tags = [
            tagged(&master, "sha256:m", 30),
            tagged("0123456789abcdef0123", "sha256:m", 30),
            tagged(&gone, "sha256:g", 30),
            tagged("aaaaaaaaaaaaaaaaaaaa", "sha256:g", 30),
            tagged("bbbbbbbbbbbbbbbbbbbb", "sha256:new", 1),
            tagged("cccccccccccccccccccc", "sha256:old", 20),
            Tagged {
                created: None,
                ..tagged("dddddddddddddddddddd", "sha256:unknown", 0)
            },
        ];
        let live = BTreeSet::from([master]);
        let verdict = judge(&tags, &live, Duration::from_secs(14 * 86_400), now);
        assert_eq!(verdict.untag, [gone]);
        assert_eq!(verdict.delete, ["sha256:g", "sha256:old"]);
    }

    #[test]
    fn content_tags_are_twenty_hex_digits() {
        assert!(is_content("0123456789abcdef0123"));
        assert!(!is_content("0123456789ABCDEF0123"));
        assert!(!is_content("master-0123456789ab"));
        assert!(!is_content(&branch_slug("master")));
    }
}

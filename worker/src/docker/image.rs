//! In-tree images: built from the checkout with Docker's classic builder, tagged by content.
//!
//! The tag is the hash of the context's files, the Dockerfile's place, the build arguments,
//! the target, the platform and the ids of the parent images, so an image whose tag exists
//! is never built again (a `VERSION` file in the context is the documented way to force a
//! rebuild). The image is also tagged with the branch, and the next build of the branch, or
//! of the default branch, uses that as its cache source.
//!
//! Every engine names them `kiln/<owner>/<name>/<image>`. With an installation registry, the
//! same path under the registry (`<registry>/kiln/…`) is where they are shared: a worker
//! that builds one pushes its content tag and branch tag; a worker that lacks one pulls it
//! (the content tag instead of building; a parent or a cache source named `kiln/…`) and
//! names it locally as every engine does.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bollard::errors::Error as DockerError;
use bollard::query_parameters::{BuildImageOptionsBuilder, BuilderVersion, TagImageOptionsBuilder};
use futures_util::StreamExt;
use kiln_shared::build::TaskOutcome;
use kiln_shared::plan::PlannedImage;
use kiln_shared::spec::Pull;
use kiln_shared::template::{branch_slug, registry_path, render, repo_path};
use kiln_shared::wire::{ImageUse, JobRequested};
use sha2::{Digest, Sha256};

use super::DockerRunner;
use super::pull::ImageError;
use crate::confine;
use crate::lines::{Fd, LineSplitter, LogSink, note};

/// Branches whose images are the cache source of last resort.
const DEFAULT_BRANCHES: [&str; 2] = ["master", "main"];

/// One lock per image tag, so concurrent tasks of this worker build an image once.
#[derive(Debug, Clone, Default)]
pub struct BuildLocks(Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>);

impl BuildLocks {
    /// Holds `tag`'s lock until the guard drops.
    async fn lock(&self, tag: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.0.lock().unwrap_or_else(|e| e.into_inner());
            // Forget locks nobody holds or waits for, so the map stays small.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            locks.entry(tag.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }
}

/// `kiln/<owner>/<name>/<image>`: where a repository's in-tree images are named.
pub fn image_repository(repo: &str, image: &str) -> String {
    registry_path(repo, image)
}

/// What became of an image the engine lacked.
enum Fetched {
    Pulled,
    /// Neither here nor in the installation's registry (or there is none).
    Missing,
}

/// Why an in-tree image could not be had.
enum Unprepared {
    /// A registry would not give an image or take one.
    Image(ImageError),
    Other(String),
}

impl From<ImageError> for Unprepared {
    fn from(error: ImageError) -> Self {
        Self::Image(error)
    }
}

impl From<String> for Unprepared {
    fn from(reason: String) -> Self {
        Self::Other(reason)
    }
}

impl DockerRunner {
    /// Builds `image` of `job` from the checkout at `workdir`, unless an image with its
    /// content tag exists here or in the installation's registry (then pulled); tags it with
    /// the branch either way, and shares what it built through the registry. Build output
    /// goes to `log`.
    pub async fn prepare_image(
        &self,
        job: &JobRequested,
        image: &PlannedImage,
        workdir: &Path,
        log: &impl LogSink,
    ) -> Result<ImageUse, TaskOutcome> {
        self.prepare(job, image, workdir, log)
            .await
            .map_err(|e| match e {
                Unprepared::Image(error) => error.outcome(),
                Unprepared::Other(reason) => TaskOutcome::Errored { reason },
            })
    }

    async fn prepare(
        &self,
        job: &JobRequested,
        image: &PlannedImage,
        workdir: &Path,
        log: &impl LogSink,
    ) -> Result<ImageUse, Unprepared> {
        let repository = image_repository(&job.build.repo, &image.name);
        let vars = BTreeMap::from([
            ("repo", repo_path(&job.build.repo)),
            ("branch", job.build.branch.to_string()),
            ("branch_slug", branch_slug(&job.build.branch)),
        ]);
        let mut args = BTreeMap::new();
        for (name, value) in &image.spec.args {
            let value = render(value, &vars, &mut |_| {
                Err("build arguments cannot hash files".into())
            })?;
            args.insert(name.clone(), value);
        }
        // Neither may be reached through a link: the context is packed and sent to Docker.
        let context = Path::new(&image.spec.context);
        let dockerfile = context.join(&image.spec.dockerfile);
        let cannot = |e: String| format!("image `{}`: {e}", image.name);
        let context = confine::existing(workdir, context)
            .map_err(|e| cannot(e.to_string()))?
            .filter(|c| c.is_dir())
            .ok_or_else(|| {
                cannot(format!(
                    "no directory {} in the checkout",
                    image.spec.context
                ))
            })?;
        let dockerfile = confine::existing(workdir, &dockerfile)
            .map_err(|e| cannot(e.to_string()))?
            .ok_or_else(|| cannot(format!("no file {} in the checkout", dockerfile.display())))?;
        let dockerfile_text = tokio::fs::read_to_string(&dockerfile)
            .await
            .map_err(|e| cannot(format!("cannot read {}: {e}", dockerfile.display())))?;
        let mut parents = Vec::new();
        for parent in parent_images(&dockerfile_text, &args) {
            self.parent_image(&parent, job.platform.as_str(), log)
                .await?;
            let inspected = self.docker.inspect_image(&parent).await.map_err(|e| {
                format!(
                    "the parent image `{parent}` of `{}` is not on this worker: {e}",
                    image.name
                )
            })?;
            parents.push((parent, inspected.id.unwrap_or_default()));
        }
        let context_hash = hash_dir(&context)
            .await
            .map_err(|e| format!("cannot read the context of image `{}`: {e}", image.name))?;
        let mut hasher = Sha256::new();
        let fields = serde_json::json!({
            "context": context_hash,
            "dockerfile": image.spec.dockerfile,
            "args": args,
            "target": image.spec.target,
            "platform": job.platform.as_str(),
            "parents": parents,
        });
        hasher.update(fields.to_string().as_bytes());
        let content = hex::encode(hasher.finalize())[..20].to_owned();
        let tag = format!("{repository}:{content}");

        let building = self.building.lock(&tag).await;
        let (built, pulled) = match self.docker.inspect_image(&tag).await {
            Ok(_) => (false, false),
            Err(_) => match self.fetch(&tag, job.platform.as_str()).await? {
                Fetched::Pulled => (false, true),
                Fetched::Missing => {
                    self.build(job, image, &context, &tag, &args, log).await?;
                    self.share(&repository, &content).await?;
                    (true, false)
                }
            },
        };
        drop(building);
        let branch = branch_slug(&job.build.branch);
        let branch_image = format!("{repository}:{branch}");
        let moved = self.image_id(&branch_image).await != self.image_id(&tag).await;
        let branch_tag = TagImageOptionsBuilder::new()
            .repo(&repository)
            .tag(&branch)
            .build();
        self.docker
            .tag_image(&tag, Some(branch_tag))
            .await
            .map_err(|e| format!("cannot tag {tag} with the branch: {e}"))?;
        if moved {
            self.share(&repository, &branch).await?;
        }
        if pulled {
            let from = self.registries.home().unwrap_or_default();
            note(
                log,
                format!("image `{}`: pulled {tag} from {from}", image.name),
            )
            .await;
        }
        let id = self
            .image_id(&tag)
            .await
            .ok_or_else(|| format!("image {tag} vanished"))?;
        Ok(ImageUse {
            name: image.name.clone(),
            tag,
            id,
            built,
            pulled,
        })
    }

    /// Makes sure this engine has the in-tree image `local` (`kiln/…:tag`), pulling it from
    /// the installation's registry if need be; false if neither has it.
    pub async fn have_in_tree(&self, local: &str) -> Result<bool, ImageError> {
        if self.docker.inspect_image(local).await.is_ok() {
            return Ok(true);
        }
        // The registry holds one platform's image under each tag: no platform to choose.
        Ok(matches!(self.fetch(local, "").await?, Fetched::Pulled))
    }

    /// The id of `image` on this engine, if it has it.
    async fn image_id(&self, image: &str) -> Option<String> {
        self.docker.inspect_image(image).await.ok()?.id
    }

    /// Where the installation's registry keeps the in-tree image named `local` here.
    fn shared_name(&self, local: &str) -> Option<String> {
        let home = self.registries.home()?;
        local
            .starts_with("kiln/")
            .then(|| format!("{home}/{local}"))
    }

    /// Pulls the in-tree image `local` (`repository:tag`) from the installation's registry
    /// and names it `local` here, if the registry has it.
    async fn fetch(&self, local: &str, platform: &str) -> Result<Fetched, ImageError> {
        let Some(shared) = self.shared_name(local) else {
            return Ok(Fetched::Missing);
        };
        if !self.in_registry(&shared).await? {
            return Ok(Fetched::Missing);
        }
        self.pull(&shared, platform).await?;
        let (repository, tag) = local.rsplit_once(':').unwrap_or((local, "latest"));
        let options = TagImageOptionsBuilder::new()
            .repo(repository)
            .tag(tag)
            .build();
        self.docker
            .tag_image(&shared, Some(options))
            .await
            .map_err(|e| ImageError {
                image: shared.clone(),
                refused: super::registry::Refused::Unreachable,
                detail: format!("cannot name it {local}: {e}"),
            })?;
        Ok(Fetched::Pulled)
    }

    /// Pushes this engine's `repository:tag` to the installation's registry, if it has one.
    async fn share(&self, repository: &str, tag: &str) -> Result<(), ImageError> {
        let Some(shared) = self.shared_name(repository) else {
            return Ok(());
        };
        let options = TagImageOptionsBuilder::new().repo(&shared).tag(tag).build();
        self.docker
            .tag_image(&format!("{repository}:{tag}"), Some(options))
            .await
            .map_err(|e| ImageError {
                image: format!("{shared}:{tag}"),
                refused: super::registry::Refused::Unreachable,
                detail: format!("cannot name it for the registry: {e}"),
            })?;
        self.push(&shared, tag).await
    }

    /// Makes sure the engine has `parent`, an image a Dockerfile builds `FROM`: an in-tree
    /// image from the installation's registry, any other from its own registry.
    async fn parent_image(
        &self,
        parent: &str,
        platform: &str,
        log: &impl LogSink,
    ) -> Result<(), Unprepared> {
        if self.docker.inspect_image(parent).await.is_ok() {
            return Ok(());
        }
        if self.shared_name(parent).is_some() {
            if let Fetched::Pulled = self.fetch(parent, platform).await? {
                note(
                    log,
                    format!("image `{parent}`: pulled from the installation's registry"),
                )
                .await;
            }
            return Ok(());
        }
        if let Some(took) = self
            .ensure_image(parent, Pull::IfNotPresent, platform)
            .await?
        {
            let took = took.as_secs_f64();
            note(log, format!("image `{parent}`: pulled in {took:.1} s")).await;
        }
        Ok(())
    }

    async fn build(
        &self,
        job: &JobRequested,
        image: &PlannedImage,
        context: &Path,
        tag: &str,
        args: &BTreeMap<String, String>,
        log: &impl LogSink,
    ) -> Result<(), String> {
        let repository = image_repository(&job.build.repo, &image.name);
        let mut cache_from = Vec::new();
        let branches = std::iter::once(job.build.branch.as_str())
            .chain(DEFAULT_BRANCHES)
            .map(branch_slug);
        for branch in branches {
            let candidate = format!("{repository}:{branch}");
            if cache_from.contains(&candidate) {
                continue;
            }
            let here = self.docker.inspect_image(&candidate).await.is_ok()
                // A cache source is an optimisation: one the registry cannot give is skipped.
                || matches!(
                    self.fetch(&candidate, job.platform.as_str()).await,
                    Ok(Fetched::Pulled)
                );
            if here {
                cache_from.push(candidate);
            }
        }
        let context_tar = tar_dir(context)
            .await
            .map_err(|e| format!("cannot pack the context of image `{}`: {e}", image.name))?;
        let args: HashMap<&str, &str> =
            args.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let labels = HashMap::from([
            ("kiln.repo", job.build.repo.as_str()),
            ("kiln.image", image.name.as_str()),
        ]);
        let mut options = BuildImageOptionsBuilder::new()
            .dockerfile(&image.spec.dockerfile)
            .t(tag)
            .buildargs(&args)
            .labels(&labels)
            .cachefrom(&cache_from)
            .platform(job.platform.as_str())
            .rm(true)
            .forcerm(true)
            .version(BuilderVersion::BuilderV1);
        if let Some(target) = &image.spec.target {
            options = options.target(target);
        }
        let mut stream = self.docker.build_image(
            options.build(),
            None,
            Some(bollard::body_full(context_tar.into())),
        );
        let mut splitter = LineSplitter::default();
        let mut lines = Vec::new();
        let mut failure = None;
        while let Some(info) = stream.next().await {
            match info {
                Ok(info) => {
                    if let Some(text) = info.stream {
                        splitter.push(Fd::Out, text.as_bytes(), &mut lines);
                    }
                    if let Some(detail) = info.error_detail {
                        failure = detail.message;
                    }
                }
                Err(DockerError::DockerStreamError { error }) => failure = Some(error),
                Err(error) => failure = Some(error.to_string()),
            }
            log.write(&lines).await;
            lines.clear();
        }
        splitter.finish(&mut lines);
        log.write(&lines).await;
        match failure {
            Some(message) => Err(format!("building image `{}` failed: {message}", image.name)),
            None => Ok(()),
        }
    }
}

/// The images a Dockerfile builds `FROM`, with `ARG`s substituted; `scratch` and earlier
/// stages are not images.
fn parent_images(dockerfile: &str, args: &BTreeMap<String, String>) -> Vec<String> {
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    let mut stages = Vec::new();
    let mut parents = Vec::new();
    for line in dockerfile.lines() {
        let mut words = line.split_whitespace();
        let Some(instruction) = words.next() else {
            continue;
        };
        if instruction.eq_ignore_ascii_case("ARG") && parents.is_empty() && stages.is_empty() {
            if let Some(declaration) = words.next() {
                let (name, default) = declaration.split_once('=').unwrap_or((declaration, ""));
                let value = args
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| default.to_owned());
                values.insert(name.to_owned(), value);
            }
        } else if instruction.eq_ignore_ascii_case("FROM") {
            let rest: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
            let Some(image) = rest.first() else { continue };
            let image = substitute(image, &values);
            let earlier_stage = stages.contains(&image.to_ascii_lowercase());
            if let [_, as_word, name] = rest.as_slice()
                && as_word.eq_ignore_ascii_case("as")
            {
                stages.push(name.to_ascii_lowercase());
            }
            if image != "scratch" && !earlier_stage {
                parents.push(image);
            }
        }
    }
    parents.sort();
    parents.dedup();
    parents
}

/// Replaces `${NAME}` and `$NAME` with their values, longest names first (so `$SOURCE`
/// does not eat the start of `$SOURCE_IMAGE`).
fn substitute(text: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = text.to_owned();
    let mut names: Vec<(&String, &String)> = values.iter().collect();
    names.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    for (name, value) in names {
        out = out.replace(&format!("${{{name}}}"), value);
        out = out.replace(&format!("${name}"), value);
    }
    out
}

/// A hash of every file under `dir` (paths and contents), `.git` left out.
async fn hash_dir(dir: &Path) -> io::Result<String> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut hasher = Sha256::new();
        let walk = walkdir::WalkDir::new(&dir)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.file_name() != ".git");
        for entry in walk {
            let entry = entry.map_err(io::Error::other)?;
            let relative = entry.path().strip_prefix(&dir).unwrap_or(entry.path());
            hasher.update(relative.to_string_lossy().as_bytes());
            hasher.update([0]);
            if entry.file_type().is_file() {
                let (digest, _) = crate::blobs::sha256_file(entry.path())?;
                hasher.update(digest.as_bytes());
            } else if entry.file_type().is_symlink() {
                let target = std::fs::read_link(entry.path())?;
                hasher.update(target.to_string_lossy().as_bytes());
            }
            hasher.update([0]);
        }
        Ok(hex::encode(hasher.finalize()))
    })
    .await
    .map_err(io::Error::other)?
}

/// The build context as a tar archive.
async fn tar_dir(dir: &Path) -> io::Result<Vec<u8>> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut archive = tar::Builder::new(Vec::new());
        archive.follow_symlinks(false);
        archive.append_dir_all(".", &dir)?;
        archive.into_inner()
    })
    .await
    .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_parent_images_with_their_arguments() {
        let dockerfile = "ARG SOURCE_IMAGE=kiln/busybox:latest\nARG OTHER\nFROM ${SOURCE_IMAGE} AS base\nRUN true\nFROM --platform=linux/amd64 base\nFROM scratch\nCOPY --from=base /a /a\nFROM $OTHER\n";
        let args = BTreeMap::from([("OTHER".to_owned(), "kiln/acme/api/base:main".to_owned())]);
        assert_eq!(
            parent_images(dockerfile, &args),
            ["kiln/acme/api/base:main", "kiln/busybox:latest"]
        );
        let args = BTreeMap::from([("SOURCE_IMAGE".to_owned(), "x:1".to_owned())]);
        assert_eq!(
            parent_images("ARG SOURCE_IMAGE\nFROM ${SOURCE_IMAGE}\n", &args),
            ["x:1"]
        );
        let args = BTreeMap::from([
            ("SOURCE".to_owned(), "wrong".to_owned()),
            ("SOURCE_IMAGE".to_owned(), "right:1".to_owned()),
        ]);
        assert_eq!(
            parent_images("ARG SOURCE\nARG SOURCE_IMAGE\nFROM $SOURCE_IMAGE\n", &args),
            ["right:1"]
        );
    }

    #[test]
    fn names_images_under_the_repository() {
        assert_eq!(image_repository("Acme/API", "build"), "kiln/acme/api/build");
        assert_eq!(repo_path("Acme/My_API"), "acme/my_api");
    }
}

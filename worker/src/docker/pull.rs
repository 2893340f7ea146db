//! Getting images from registries and putting in-tree images into the installation's, through
//! the engine, with the registry's credentials.

use std::fmt;
use std::time::{Duration, Instant};

use bollard::errors::Error as DockerError;
use bollard::query_parameters::{CreateImageOptionsBuilder, PushImageOptionsBuilder};
use futures_util::StreamExt;
use kiln_shared::build::TaskOutcome;
use kiln_shared::spec::Pull;

use super::DockerRunner;
use super::registry::{Refused, registry_of};

/// An image the engine could not get, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageError {
    pub image: String,
    pub refused: Refused,
    /// The engine's own words.
    pub detail: String,
}

impl ImageError {
    /// How the task ends: a missing image or refused credentials fail it once (another
    /// attempt would fail alike); an unreachable registry errs it, to be tried again.
    pub fn outcome(&self) -> TaskOutcome {
        let reason = self.to_string();
        if self.refused.may_pass_later() {
            TaskOutcome::Errored { reason }
        } else {
            TaskOutcome::Unrunnable { reason }
        }
    }
}

impl std::error::Error for ImageError {}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "image `{}` from registry {}: {} ({})",
            self.image,
            registry_of(&self.image),
            self.refused,
            self.detail
        )
    }
}

impl DockerRunner {
    /// Makes sure the engine has `image` for `platform`: pulls it when it is missing, or
    /// every time with [`Pull::Always`]. Returns how long a pull took, if one was made.
    pub(super) async fn ensure_image(
        &self,
        image: &str,
        pull: Pull,
        platform: &str,
    ) -> Result<Option<Duration>, ImageError> {
        if pull == Pull::IfNotPresent && self.docker.inspect_image(image).await.is_ok() {
            return Ok(None);
        }
        let started = Instant::now();
        self.pull(image, platform).await?;
        Ok(Some(started.elapsed()))
    }

    /// Pulls `image` (with its tag) for `platform` (the engine's own when empty).
    pub(super) async fn pull(&self, image: &str, platform: &str) -> Result<(), ImageError> {
        let mut options = CreateImageOptionsBuilder::new().from_image(image);
        if !platform.is_empty() {
            options = options.platform(platform);
        }
        let options = options.build();
        let credentials = self.registries.credentials(image);
        let stream = self.docker.create_image(Some(options), None, credentials);
        let failure = last_error(stream, |info| info.error_detail.and_then(|d| d.message)).await;
        match failure {
            None => Ok(()),
            Some(detail) => Err(ImageError {
                image: image.to_owned(),
                refused: Refused::of(&detail),
                detail,
            }),
        }
    }

    /// Whether the registry of `image` has it (the engine asks the registry for its
    /// manifest; nothing is downloaded).
    pub(super) async fn in_registry(&self, image: &str) -> Result<bool, ImageError> {
        let credentials = self.registries.credentials(image);
        match self.docker.inspect_registry_image(image, credentials).await {
            Ok(_) => Ok(true),
            Err(error) => {
                let detail = message_of(error);
                match Refused::of(&detail) {
                    Refused::NotFound => Ok(false),
                    refused => Err(ImageError {
                        image: image.to_owned(),
                        refused,
                        detail,
                    }),
                }
            }
        }
    }

    /// Pushes `repository:tag` to its registry.
    pub(super) async fn push(&self, repository: &str, tag: &str) -> Result<(), ImageError> {
        let image = format!("{repository}:{tag}");
        let options = PushImageOptionsBuilder::new().tag(tag).build();
        let credentials = self.registries.credentials(&image);
        let stream = self
            .docker
            .push_image(repository, Some(options), credentials);
        let failure = last_error(stream, |info| info.error_detail.and_then(|d| d.message)).await;
        match failure {
            None => Ok(()),
            Some(detail) => Err(ImageError {
                refused: Refused::of(&detail),
                image,
                detail,
            }),
        }
    }
}

/// Reads an engine's progress stream to its end; the last error it reported, if any
/// (`error_of` finds one in a progress message).
async fn last_error<T>(
    stream: impl futures_util::Stream<Item = Result<T, DockerError>>,
    error_of: impl Fn(T) -> Option<String>,
) -> Option<String> {
    let mut stream = std::pin::pin!(stream);
    let mut failure = None;
    while let Some(info) = stream.next().await {
        match info {
            Ok(info) => failure = error_of(info).or(failure),
            Err(error) => failure = Some(message_of(error)),
        }
    }
    failure
}

/// The engine's message, without bollard's wrapping.
fn message_of(error: DockerError) -> String {
    match error {
        DockerError::DockerResponseServerError { message, .. } => message,
        DockerError::DockerStreamError { error } => error,
        other => other.to_string(),
    }
}

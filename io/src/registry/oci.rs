//! The installation's registry as the store of artifacts and caches, through the OCI
//! distribution API: every file is a blob addressed by its SHA-256, uploaded only when the
//! registry lacks it (a `HEAD` first), and kept alive by a manifest that names it (one per
//! task's artifacts, one per cache entry), so the registry's own garbage collection keeps
//! what a manifest names and nothing else.
//!
//! A repository's artifacts are blobs of `kiln/<owner>/<name>/artifacts`, its cache entries
//! of `kiln/<owner>/<name>/cache`, as its in-tree images are under `kiln/<owner>/<name>/`.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use futures_util::TryStreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use tokio::io::AsyncWriteExt;

use kiln_shared::template::registry_path;

use super::Credentials;
use crate::digest::{Stored, sha256, sha256_file};

/// The blob repository of a repository's artifacts, beside its images.
pub const ARTIFACTS: &str = "artifacts";
/// The blob repository of a repository's cache entries.
pub const CACHE: &str = "cache";
/// The blob repository of a repository's archived task logs.
pub const LOGS: &str = "logs";

/// The empty JSON object, the config of every artifact manifest (OCI image spec 1.1).
const EMPTY_CONFIG: &[u8] = b"{}";
const EMPTY_CONFIG_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// What a manifest of a task's artifacts, or of a cache entry, holds.
pub const ARTIFACTS_TYPE: &str = "application/vnd.kiln.artifacts.v1";
pub const CACHE_TYPE: &str = "application/vnd.kiln.cache.v1";
/// What a manifest of a build's archived logs holds.
pub const LOGS_TYPE: &str = "application/vnd.kiln.logs.v1";
/// A file's layer: its bytes, as they were.
const FILE_LAYER_TYPE: &str = "application/octet-stream";
/// Where a layer's path in the checkout is written.
pub const TITLE: &str = "org.opencontainers.image.title";

/// A blob larger than this is uploaded in a stream, not read whole into memory.
const STREAM_ABOVE: u64 = 8 * 1024 * 1024;

/// How much a file is read or written at a time: each read or write of a Tokio file is a
/// hop to a blocking thread, so small ones cost more than the bytes.
const IO_CHUNK: usize = 1024 * 1024;

/// The registry, and how the worker signs in to it.
#[derive(Clone)]
pub struct Oci {
    pub(super) client: Client,
    pub(super) registry: String,
    pub(super) auth: RegistryAuth,
    /// `http` for a registry on loopback, else `https`.
    pub(super) scheme: &'static str,
}

impl std::fmt::Debug for Oci {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oci")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

/// A file in a manifest: where it goes, and its blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub path: String,
    pub digest: String,
    pub size: u64,
}

impl Oci {
    /// The registry at `registry` (`host[:port]`), signed in to with `credentials`. Plain
    /// HTTP is spoken to a registry on loopback only.
    pub fn new(registry: &str, credentials: Option<&Credentials>) -> Self {
        let registry = registry.to_owned();
        let auth = credentials.map_or(RegistryAuth::Anonymous, |c| {
            RegistryAuth::Basic(c.username.clone(), c.password.clone())
        });
        let host = registry.split(':').next().unwrap_or_default();
        let loopback = host == "localhost" || host.starts_with("127.") || host == "[::1]";
        let (protocol, scheme) = if loopback {
            (ClientProtocol::HttpsExcept(vec![registry.clone()]), "http")
        } else {
            (ClientProtocol::Https, "https")
        };
        // Its HTTPS uses the process's default crypto: graviola's, as every connection here.
        crate::tls::install_default_provider();
        let client = Client::new(ClientConfig {
            protocol,
            // One PUT per blob: chunked PATCHes cost a round trip each and gain nothing here.
            use_monolithic_push: true,
            ..Default::default()
        });
        Self {
            client,
            registry,
            auth,
            scheme,
        }
    }

    /// The blob repository of `repo`'s `kind` (`artifacts`, `cache`), at `tag`.
    fn reference(&self, repo: &str, kind: &str, tag: &str) -> Reference {
        Reference::with_tag(
            self.registry.clone(),
            registry_path(repo, kind),
            tag.to_owned(),
        )
    }

    pub(super) async fn signed_in(
        &self,
        reference: &Reference,
        operation: RegistryOperation,
    ) -> io::Result<()> {
        self.client
            .auth(reference, &self.auth, operation)
            .await
            .map(|_| ())
            .map_err(|e| failed("sign in to", reference, e))
    }

    /// Whether the registry has blob `digest` in `reference`'s repository.
    async fn has_blob(&self, reference: &Reference, digest: &str) -> io::Result<bool> {
        self.client
            .blob_exists(reference, digest)
            .await
            .map_err(|e| failed("ask", reference, e))
    }

    /// Uploads the file at `path` as a blob of `repo`'s `kind`, unless the registry has its
    /// content already.
    pub async fn put_file(&self, repo: &str, kind: &str, path: &Path) -> io::Result<Stored> {
        let file = path.to_owned();
        let (digest, size) = tokio::task::spawn_blocking(move || sha256_file(&file))
            .await
            .map_err(io::Error::other)??;
        let reference = self.reference(repo, kind, "latest");
        self.signed_in(&reference, RegistryOperation::Push).await?;
        let uploaded = self.put_blob(&reference, path, &digest, size).await?;
        Ok(Stored {
            digest,
            size,
            uploaded,
        })
    }

    /// Uploads `bytes` as a blob of `repo`'s `kind`, unless the registry has them already.
    pub async fn put_bytes(&self, repo: &str, kind: &str, bytes: Vec<u8>) -> io::Result<Stored> {
        let digest = sha256(&bytes);
        let size = bytes.len() as u64;
        let reference = self.reference(repo, kind, "latest");
        self.signed_in(&reference, RegistryOperation::Push).await?;
        let exists = self.has_blob(&reference, &digest).await?;
        if !exists {
            self.client
                .push_blob(&reference, bytes, &digest)
                .await
                .map_err(|e| failed("upload to", &reference, e))?;
        }
        Ok(Stored {
            digest,
            size,
            uploaded: !exists,
        })
    }

    /// The blob `digest` of `repo`'s `kind`, read whole and checked against its digest.
    pub async fn get_bytes(
        &self,
        repo: &str,
        kind: &str,
        digest: &str,
        size: u64,
    ) -> io::Result<Vec<u8>> {
        let reference = self.reference(repo, kind, "latest");
        self.signed_in(&reference, RegistryOperation::Pull).await?;
        let descriptor = file_descriptor(digest, size);
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        self.client
            .pull_blob(&reference, &descriptor, &mut bytes)
            .await
            .map_err(|e| failed("download from", &reference, e))?;
        if sha256(&bytes) != digest {
            return Err(io::Error::other(format!(
                "the registry {} gave a blob that is not {digest}",
                self.registry
            )));
        }
        Ok(bytes)
    }

    async fn put_blob(
        &self,
        reference: &Reference,
        path: &Path,
        digest: &str,
        size: u64,
    ) -> io::Result<bool> {
        let exists = self.has_blob(reference, digest).await?;
        if exists {
            return Ok(false);
        }
        let pushed = if size > STREAM_ABOVE {
            let file = tokio::fs::File::open(path).await?;
            let stream = tokio_util::io::ReaderStream::with_capacity(file, IO_CHUNK)
                .map_err(OciDistributionError::from);
            self.client
                .push_blob_stream(reference, stream, digest, Some(size))
                .await
        } else {
            let bytes = tokio::fs::read(path).await?;
            self.client.push_blob(reference, bytes, digest).await
        };
        pushed.map_err(|e| failed("upload to", reference, e))?;
        Ok(true)
    }

    /// Writes the blob `digest` of `repo`'s `kind` to `dest`, checking its digest.
    pub async fn get_file(
        &self,
        repo: &str,
        kind: &str,
        digest: &str,
        size: u64,
        dest: &Path,
    ) -> io::Result<()> {
        let reference = self.reference(repo, kind, "latest");
        self.signed_in(&reference, RegistryOperation::Pull).await?;
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let descriptor = file_descriptor(digest, size);
        let file = tokio::fs::File::create(dest).await?;
        let mut out = tokio::io::BufWriter::with_capacity(IO_CHUNK, file);
        self.client
            .pull_blob(&reference, &descriptor, &mut out)
            .await
            .map_err(|e| failed("download from", &reference, e))?;
        out.flush().await
    }

    /// The blob `digest` of `repo`'s `kind` as a stream of its bytes, checked against its
    /// digest as it goes (a mismatch ends the stream with an error).
    pub async fn blob_stream(
        &self,
        repo: &str,
        kind: &str,
        digest: &str,
        size: u64,
    ) -> io::Result<oci_client::client::SizedStream> {
        let reference = self.reference(repo, kind, "latest");
        self.signed_in(&reference, RegistryOperation::Pull).await?;
        let descriptor = file_descriptor(digest, size);
        self.client
            .pull_blob_stream(&reference, &descriptor)
            .await
            .map_err(|e| failed("download from", &reference, e))
    }

    /// Names `layers` (blobs of `repo`'s `kind`, uploaded already) in a manifest tagged
    /// `tag`, with `annotations`.
    pub async fn put_manifest(
        &self,
        repo: &str,
        kind: &str,
        tag: &str,
        artifact_type: &str,
        layers: &[Layer],
        annotations: BTreeMap<String, String>,
    ) -> io::Result<()> {
        let reference = self.reference(repo, kind, tag);
        self.signed_in(&reference, RegistryOperation::Push).await?;
        let config_digest = sha256(EMPTY_CONFIG);
        let exists = self.has_blob(&reference, &config_digest).await?;
        if !exists {
            self.client
                .push_blob(&reference, EMPTY_CONFIG.to_vec(), &config_digest)
                .await
                .map_err(|e| failed("upload to", &reference, e))?;
        }
        let manifest = OciImageManifest {
            media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
            artifact_type: Some(artifact_type.to_owned()),
            config: OciDescriptor {
                media_type: EMPTY_CONFIG_TYPE.into(),
                digest: config_digest,
                size: 2,
                ..Default::default()
            },
            layers: layers
                .iter()
                .map(|layer| OciDescriptor {
                    media_type: FILE_LAYER_TYPE.into(),
                    digest: layer.digest.clone(),
                    size: i64::try_from(layer.size).unwrap_or(i64::MAX),
                    annotations: Some(BTreeMap::from([(TITLE.to_owned(), layer.path.clone())])),
                    ..Default::default()
                })
                .collect(),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..Default::default()
        };
        self.client
            .push_manifest(&reference, &OciManifest::Image(manifest))
            .await
            .map_err(|e| failed("write a manifest to", &reference, e))?;
        Ok(())
    }

    /// The layers of the manifest tagged `tag` in `repo`'s `kind`; `None` if there is none.
    pub async fn manifest(
        &self,
        repo: &str,
        kind: &str,
        tag: &str,
    ) -> io::Result<Option<Vec<Layer>>> {
        let reference = self.reference(repo, kind, tag);
        self.signed_in(&reference, RegistryOperation::Pull).await?;
        match self
            .client
            .pull_image_manifest(&reference, &self.auth)
            .await
        {
            Ok((manifest, _)) => Ok(Some(
                manifest
                    .layers
                    .into_iter()
                    .map(|layer| Layer {
                        path: layer
                            .annotations
                            .and_then(|mut a| a.remove(TITLE))
                            .unwrap_or_default(),
                        digest: layer.digest,
                        size: u64::try_from(layer.size).unwrap_or(0),
                    })
                    .collect(),
            )),
            Err(error) if is_not_found(&error) => Ok(None),
            Err(error) => Err(failed("read a manifest from", &reference, error)),
        }
    }
}

/// The descriptor of a file's blob, `digest` of `size` bytes.
fn file_descriptor(digest: &str, size: u64) -> OciDescriptor {
    OciDescriptor {
        media_type: FILE_LAYER_TYPE.into(),
        digest: digest.to_owned(),
        size: i64::try_from(size).unwrap_or(i64::MAX),
        ..Default::default()
    }
}

/// Whether the registry said it has no such manifest or blob.
pub(super) fn is_not_found(error: &OciDistributionError) -> bool {
    match error {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::ServerError { code, .. } => *code == 404,
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                oci_client::errors::OciErrorCode::ManifestUnknown
                    | oci_client::errors::OciErrorCode::NameUnknown
                    | oci_client::errors::OciErrorCode::BlobUnknown
            )
        }),
        _ => false,
    }
}

pub(super) fn failed(what: &str, reference: &Reference, error: OciDistributionError) -> io::Error {
    io::Error::other(format!(
        "cannot {what} the registry {} ({}): {error}",
        reference.registry(),
        reference.repository()
    ))
}

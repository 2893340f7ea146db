//! TLS for the connections both binaries open: `amqps://` to RabbitMQ and `rediss://` to
//! Redis, each server's certificate verified against the CA the operator names
//! (`--tls-ca`), or else the system's roots.
//!
//! rustls with graviola's crypto: pure Rust (with its own assembly), no C compiler and no
//! platform SDK at build time, so a macOS worker is built on Linux with TLS like every other.
//! redis-rs builds its own rustls configuration from the process's default provider, which
//! [`install_default_provider`] makes graviola's when no other is installed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

/// Why the trusted certificates could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the CA file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the CA file {path} holds no usable PEM certificate{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    NoCertificate {
        path: PathBuf,
        detail: Option<String>,
    },
    #[error("TLS set-up failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Whom a process trusts to be its RabbitMQ and Redis: one CA (a file of PEM certificates),
/// or the system's roots. Cheap to clone.
#[derive(Clone)]
pub struct Trust {
    /// The CA file's PEM, handed to redis-rs; `None` for the system's roots.
    ca_pem: Option<Arc<Vec<u8>>>,
    ca_path: Option<PathBuf>,
    client: Arc<ClientConfig>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust")
            .field("ca", &self.ca_path)
            .finish_non_exhaustive()
    }
}

/// The crypto of every connection Kiln makes itself: graviola's.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls_graviola::default_provider())
}

/// Makes graviola's provider the process's default unless one is installed already:
/// redis-rs builds its configuration with `ClientConfig::builder()`, which needs one.
pub(crate) fn install_default_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Lost a race with another installer: theirs serves as well.
        let _ =
            rustls::crypto::CryptoProvider::install_default(rustls_graviola::default_provider());
    }
}

impl Trust {
    /// Trusts the certificates in the PEM file `ca`, or the system's roots when `None`.
    pub fn load(ca: Option<&Path>) -> Result<Self, TlsError> {
        let provider = provider();
        let mut roots = RootCertStore::empty();
        let ca_pem = match ca {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| TlsError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<_, _>>()
                    .map_err(|e| TlsError::NoCertificate {
                        path: path.to_owned(),
                        detail: Some(e.to_string()),
                    })?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(TlsError::NoCertificate {
                        path: path.to_owned(),
                        detail: None,
                    });
                }
                Some(Arc::new(pem))
            }
            None => {
                let found = rustls_native_certs();
                roots.add_parsable_certificates(found);
                None
            }
        };
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            ca_pem,
            ca_path: ca.map(Path::to_owned),
            client: Arc::new(client),
        })
    }

    /// The system's roots (no CA file).
    pub fn system() -> Result<Self, TlsError> {
        Self::load(None)
    }

    /// The rustls configuration of an `amqps://` connection.
    pub(crate) fn client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }

    /// The CA's PEM, for redis-rs; `None` when the system's roots are trusted.
    pub(crate) fn ca_pem(&self) -> Option<Vec<u8>> {
        self.ca_pem.as_deref().cloned()
    }
}

/// The system's root certificates (what redis-rs reads too); unreadable ones are skipped.
fn rustls_native_certs() -> Vec<CertificateDer<'static>> {
    let found = ::rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "a system root certificate could not be read");
    }
    found.certs
}

/// `url` with its password replaced by `***`, for logs and error messages: a worker's URLs
/// carry its credentials.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_hides_the_password_only() {
        let check = |url: &str, expect: &str| assert_eq!(redacted(url), expect, "{url}");
        check(
            "amqps://w1:s3cret@mq.example.com:5671/%2f",
            "amqps://w1:***@mq.example.com:5671/%2f",
        );
        check(
            "rediss://w1:p@ss@127.0.0.1:6380/",
            "rediss://w1:***@127.0.0.1:6380/",
        );
        check("redis://127.0.0.1:6379/", "redis://127.0.0.1:6379/");
        check("not a url", "not a url");
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing.pem");
        let error = Trust::load(Some(&missing)).expect_err("no file");
        assert!(error.to_string().contains("missing.pem"), "{error}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let error = Trust::load(Some(&empty)).expect_err("no certificate");
        assert!(
            error.to_string().contains("no usable PEM certificate"),
            "{error}"
        );
    }
}

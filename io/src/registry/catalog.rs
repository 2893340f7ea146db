//! What the installation's registry holds, and taking tags and manifests out of it: the
//! registry side of `kiln-worker gc --registry`.
//!
//! The distribution API deletes a manifest by digest only, and with it every tag that names
//! it (CNCF Distribution 2.x has no tag deletion). A registry with a token service (Harbor,
//! GitLab's) is answered with a token for the credentials. A tag alone is taken out by moving it to a
//! placeholder manifest of its own, then deleting that. The space goes when the registry's
//! own `garbage-collect` runs.

use std::io;
use std::time::SystemTime;

use std::collections::BTreeMap;

use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use reqwest::header::{HeaderValue, WWW_AUTHENTICATE};

use super::oci::{Oci, failed, is_not_found};

/// How many names a page of the catalog or of a tag list asks for.
const PAGE: usize = 1000;

/// What a tag names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    pub tag: String,
    /// The manifest's digest.
    pub digest: String,
    /// When its image was made (its config's `created`), if it says.
    pub created: Option<SystemTime>,
}

impl Oci {
    fn at(&self, repository: &str, tag: &str) -> Reference {
        Reference::with_tag(self.registry.clone(), repository.to_owned(), tag.to_owned())
    }

    /// Every repository of the registry whose name starts with `prefix`.
    pub async fn repositories(&self, prefix: &str) -> io::Result<Vec<String>> {
        let any = self.at("kiln", "latest");
        self.signed_in(&any, RegistryOperation::Pull).await?;
        let mut all = Vec::new();
        loop {
            let last = all.last().cloned();
            let page = self
                .client
                .catalog(&any, &self.auth, Some(PAGE), last.as_deref())
                .await
                .map_err(|e| failed("list the repositories of", &any, e))?;
            let full = page.repositories.len() >= PAGE;
            all.extend(page.repositories);
            if !full {
                break;
            }
        }
        all.retain(|name| name.starts_with(prefix));
        Ok(all)
    }

    /// The tags of `repository`, each with its manifest's digest and its image's creation.
    pub async fn tags(&self, repository: &str) -> io::Result<Vec<Tagged>> {
        let any = self.at(repository, "latest");
        self.signed_in(&any, RegistryOperation::Pull).await?;
        let mut names: Vec<String> = Vec::new();
        loop {
            let last = names.last().cloned();
            let page = match self
                .client
                .list_tags(&any, &self.auth, Some(PAGE), last.as_deref())
                .await
            {
                Ok(page) => page,
                Err(error) if is_not_found(&error) => break,
                Err(error) => return Err(failed("list the tags of", &any, error)),
            };
            let full = page.tags.len() >= PAGE;
            names.extend(page.tags);
            if !full {
                break;
            }
        }
        let mut tagged = Vec::with_capacity(names.len());
        for tag in names {
            let reference = self.at(repository, &tag);
            match self
                .client
                .pull_manifest_and_config(&reference, &self.auth)
                .await
            {
                Ok((_, digest, config)) => tagged.push(Tagged {
                    tag,
                    digest,
                    created: created(&config),
                }),
                // Not an image (an artifact's manifest), or gone meanwhile: its digest only.
                Err(_) => match self
                    .client
                    .fetch_manifest_digest(&reference, &self.auth)
                    .await
                {
                    Ok(digest) => tagged.push(Tagged {
                        tag,
                        digest,
                        created: None,
                    }),
                    Err(error) if is_not_found(&error) => {}
                    Err(error) => return Err(failed("read a manifest of", &reference, error)),
                },
            }
        }
        Ok(tagged)
    }

    /// Deletes the manifest `digest` of `repository`, and so every tag that names it.
    pub async fn delete_manifest(&self, repository: &str, digest: &str) -> io::Result<()> {
        let url = format!(
            "{}://{}/v2/{repository}/manifests/{digest}",
            self.scheme, self.registry
        );
        let answer = self
            .delete(&url)
            .await
            .map_err(|e| io::Error::other(format!("cannot delete {repository}@{digest}: {e}")))?;
        match answer.status().as_u16() {
            202 | 200 | 404 => Ok(()),
            status => {
                let body = answer.text().await.unwrap_or_default();
                Err(io::Error::other(format!(
                    "cannot delete {repository}@{digest}: the registry answered {status} {body}"
                )))
            }
        }
    }

    /// Sends `DELETE url`, signed in as the registry asks: with the credentials, or with a
    /// token its token service gives for them (a `WWW-Authenticate: Bearer` challenge).
    async fn delete(&self, url: &str) -> Result<reqwest::Response, reqwest::Error> {
        let http = reqwest::Client::new();
        let signed = |request: reqwest::RequestBuilder| match &self.auth {
            RegistryAuth::Basic(user, password) => request.basic_auth(user, Some(password)),
            _ => request,
        };
        let answer = signed(http.delete(url)).send().await?;
        let challenge = answer
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_challenge);
        let Some(challenge) = challenge.filter(|_| answer.status() == 401) else {
            return Ok(answer);
        };
        let mut query = Vec::new();
        for key in ["service", "scope"] {
            if let Some(value) = challenge.get(key) {
                query.push((key, value.as_str()));
            }
        }
        let realm = challenge.get("realm").map_or("", String::as_str);
        let granted: serde_json::Value = signed(http.get(realm).query(&query))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let token = granted["token"]
            .as_str()
            .or_else(|| granted["access_token"].as_str())
            .unwrap_or_default();
        http.delete(url).bearer_auth(token).send().await
    }

    /// Takes `tag` out of `repository`, leaving any other tag of its manifest.
    pub async fn untag(&self, repository: &str, tag: &str) -> io::Result<()> {
        let reference = self.at(repository, tag);
        self.signed_in(&reference, RegistryOperation::Push).await?;
        // An empty image manifest whose annotation makes its digest this tag's own.
        let placeholder = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": EMPTY_DIGEST,
                "size": 2,
            },
            "layers": [],
            "annotations": { "dev.kiln.untagged": format!("{repository}:{tag}") },
        });
        self.client
            .push_blob(&reference, b"{}".to_vec(), EMPTY_DIGEST)
            .await
            .map_err(|e| failed("write a placeholder to", &reference, e))?;
        let body = serde_json::to_vec(&placeholder).map_err(io::Error::other)?;
        let digest = crate::digest::sha256(&body);
        let content_type = HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json");
        self.client
            .push_manifest_raw(&reference, body, content_type)
            .await
            .map_err(|e| failed("move a tag of", &reference, e))?;
        self.delete_manifest(repository, &digest).await
    }
}

/// The digest of `{}`, the empty config.
const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/// The parameters of a `Bearer realm="…",service="…",scope="…"` challenge.
fn bearer_challenge(header: &str) -> Option<BTreeMap<String, String>> {
    let rest = header.strip_prefix("Bearer ")?;
    let mut params = BTreeMap::new();
    let mut rest = rest.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let after = after.strip_prefix('"')?;
        let (value, more) = after.split_once('"')?;
        params.insert(key.trim().to_owned(), value.to_owned());
        rest = more.trim_start_matches(',').trim();
    }
    params.contains_key("realm").then_some(params)
}

/// An image config's `created`, if it has one that reads.
fn created(config: &str) -> Option<SystemTime> {
    let config: serde_json::Value = serde_json::from_str(config).ok()?;
    let created = config.get("created")?.as_str()?;
    humantime::parse_rfc3339_weak(created.split('.').next()?.trim_end_matches('Z')).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_images_creation_is_read_from_its_config() {
        let config = r#"{"created":"2026-11-02T10:20:30.123456789Z","os":"linux"}"#;
        let expected = humantime::parse_rfc3339("2026-11-02T10:20:30Z").expect("time");
        assert_eq!(created(config), Some(expected));
        assert_eq!(created(r#"{"os":"linux"}"#), None);
        assert_eq!(created("not json"), None);
    }

    #[test]
    fn a_bearer_challenge_gives_its_realm_service_and_scope() {
        let header = r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:kiln/acme/api/app:delete,pull""#;
        let params = bearer_challenge(header).expect("a challenge");
        assert_eq!(params["realm"], "https://auth.example.com/token");
        assert_eq!(params["service"], "registry.example.com");
        assert_eq!(params["scope"], "repository:kiln/acme/api/app:delete,pull");
        assert_eq!(bearer_challenge(r#"Basic realm="Registry""#), None);
        assert_eq!(bearer_challenge("Bearer service=\"x\""), None);
    }

    #[test]
    fn the_empty_configs_digest_is_that_of_two_braces() {
        assert_eq!(crate::digest::sha256(b"{}"), EMPTY_DIGEST);
    }
}

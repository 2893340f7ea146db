//! `POST /hooks/github`: a delivery is named by `X-GitHub-Event` and `X-GitHub-Delivery`,
//! signed in `X-Hub-Signature-256` with the repository's secret.

use axum::http::HeaderMap;
use kiln_shared::trigger::ForgeEvent;

use crate::config::Forge;
use crate::http::forge::{Door, Refusal};

/// GitHub's webhook door.
#[derive(Debug)]
pub struct GitHub;

/// A header's value, if it is there and is text.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `X-GitHub-Event`, which every delivery has.
fn event(headers: &HeaderMap) -> Result<&str, Refusal> {
    header(headers, "x-github-event").ok_or_else(|| Refusal::bad("missing X-GitHub-Event header"))
}

impl Door for GitHub {
    const FORGE: Forge = Forge::GitHub;
    const REPOSITORY: &str = "GitHub repository";

    fn repository(headers: &HeaderMap, body: &[u8]) -> Result<String, Refusal> {
        let event = event(headers)?;
        if header(headers, "x-github-delivery").is_none() {
            return Err(Refusal::bad("missing X-GitHub-Delivery header"));
        }
        if header(headers, "x-hub-signature-256").is_none() {
            return Err(Refusal::unsigned(
                "missing X-Hub-Signature-256 header: set a secret on the webhook",
            ));
        }
        super::repository_name(event, body).map_err(Refusal::bad)
    }

    fn verify(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<(), Refusal> {
        let signature = header(headers, "x-hub-signature-256").unwrap_or_default();
        if super::verify_signature(secret, body, signature) {
            Ok(())
        } else {
            Err(Refusal::unsigned(
                "the signature does not match the webhook secret",
            ))
        }
    }

    fn translate(headers: &HeaderMap, body: &[u8]) -> Result<ForgeEvent, Refusal> {
        super::translate(event(headers)?, body).map_err(Refusal::bad)
    }

    fn delivery(headers: &HeaderMap, _body: &[u8]) -> String {
        header(headers, "x-github-delivery")
            .unwrap_or_default()
            .to_owned()
    }
}

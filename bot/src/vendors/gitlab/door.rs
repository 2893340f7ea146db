//! `POST /hooks/gitlab`: a delivery is named by `X-Gitlab-Event`; GitLab does not sign it but
//! sends the hook's secret token in `X-Gitlab-Token`.

use axum::http::HeaderMap;
use kiln_shared::trigger::ForgeEvent;

use crate::config::Forge;
use crate::http::forge::{Door, Refusal};
use crate::http::respond::header;

/// GitLab's webhook door.
#[derive(Debug)]
pub struct GitLab;

/// `X-Gitlab-Event`, which every delivery has.
fn event(headers: &HeaderMap) -> Result<&str, Refusal> {
    Some(header(headers, "x-gitlab-event"))
        .filter(|e| !e.is_empty())
        .ok_or_else(|| Refusal::bad("missing X-Gitlab-Event header"))
}

impl Door for GitLab {
    const FORGE: Forge = Forge::GitLab;
    const REPOSITORY: &str = "GitLab project";

    fn repository(headers: &HeaderMap, body: &[u8]) -> Result<String, Refusal> {
        let event = event(headers)?;
        if header(headers, "x-gitlab-token").is_empty() {
            return Err(Refusal::unsigned(
                "missing X-Gitlab-Token header: set a secret token on the webhook",
            ));
        }
        super::project_name(event, body).map_err(Refusal::bad)
    }

    fn verify(secret: &[u8], headers: &HeaderMap, _body: &[u8]) -> Result<(), Refusal> {
        if super::verify_token(secret, header(headers, "x-gitlab-token")) {
            Ok(())
        } else {
            Err(Refusal::unsigned(
                "the token does not match the webhook secret",
            ))
        }
    }

    fn translate(headers: &HeaderMap, body: &[u8]) -> Result<ForgeEvent, Refusal> {
        super::translate(event(headers)?, body).map_err(Refusal::bad)
    }

    /// Every push has an identity; only events Kiln ignores may have none.
    fn delivery(headers: &HeaderMap, body: &[u8]) -> String {
        super::delivery_id(
            header(headers, "idempotency-key"),
            header(headers, "x-gitlab-event-uuid"),
            body,
        )
        .unwrap_or_default()
    }
}

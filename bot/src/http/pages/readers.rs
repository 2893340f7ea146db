//! Who reads a page: someone signed in (a session in Redis, its id in a signed cookie), an
//! operator's `Authorization: Bearer` token, or, when access is public, anyone. What they
//! may read, and the token that proves a form came from one of Kiln's own pages.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use hmac::{Hmac, KeyInit, Mac};
use kiln_shared::ident::RepoName;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::app::App;
use secrecy::ExposeSecret;

use crate::config::Operator;
use crate::http::respond::{error, operator};
use crate::store::Session;

/// The cookie that holds a session's id, signed (so a cookie planted by a sibling subdomain
/// is not taken).
pub const COOKIE: &str = "kiln_session";

/// The one who asked for a page.
#[derive(Debug, Clone)]
pub struct Reader {
    /// Who signed in or presented a token; none: someone anonymous.
    session: Option<Session>,
    /// The signed-in session's id; its forms carry a token made of it.
    session_id: Option<String>,
    /// Whether anyone may read.
    public: bool,
    /// The installation's signing key.
    key: Vec<u8>,
}

impl Reader {
    /// Whether they may read `repo`'s builds, logs and artifacts.
    pub fn may_read(&self, repo: &RepoName) -> bool {
        self.public
            || self.session.as_ref().is_some_and(|s| {
                s.operator || s.repos.contains(&repo.as_str().to_ascii_lowercase())
            })
    }

    /// Whether they may read anything at all; when not, they are asked to sign in.
    pub fn may_read_some(&self) -> bool {
        self.public || self.session.is_some()
    }

    /// The token a form of theirs carries; none when nobody signed in.
    pub fn form_token(&self) -> Option<String> {
        Some(sign(
            &self.key,
            &format!("form:{}", self.session_id.as_ref()?),
        ))
    }

    /// Whether `token` is the one their forms carry.
    pub fn checks(&self, token: &str) -> bool {
        self.form_token()
            .is_some_and(|t| bool::from(t.as_bytes().ct_eq(token.as_bytes())))
    }

    /// Who they are as commands see them, if signed in.
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// Whether they are an operator, who sees everything.
    pub fn is_operator(&self) -> bool {
        self.session.as_ref().is_some_and(|s| s.operator)
    }

    /// The refusal of a form that does not carry their token, if it does not.
    pub fn refuse_form(&self, token: &str) -> Option<Response> {
        (!self.checks(token)).then(|| {
            (
                StatusCode::FORBIDDEN,
                "this form is not from your page: load the page again",
            )
                .into_response()
        })
    }
}

/// The session of `operator`, whose token is marked with `key`.
pub fn operator_session(key: &[u8], operator: &Operator) -> Session {
    Session {
        name: operator.name.clone(),
        id: format!("operator:{}", operator.name),
        operator: true,
        token_mark: Some(sign(key, operator.token.expose_secret())),
        repos: Default::default(),
    }
}

/// Whether `session` still holds: an operator's only while their token is configured.
fn still_holds(app: &App, key: &[u8], session: &Session) -> bool {
    if !session.operator {
        return true;
    }
    session.token_mark.as_ref().is_some_and(|mark| {
        app.config.operators.iter().any(|o| {
            bool::from(
                sign(key, o.token.expose_secret())
                    .as_bytes()
                    .ct_eq(mark.as_bytes()),
            )
        })
    })
}

/// `value`'s signature under `key`, in hex.
pub fn sign(key: &[u8], value: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(value.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The value of a cookie that holds `value` signed: `<value>.<signature>`.
pub fn signed(key: &[u8], value: &str) -> String {
    format!("{value}.{}", sign(key, value))
}

/// The value a signed cookie holds, if its signature is right.
pub fn unsigned<'a>(key: &[u8], cookie: &'a str) -> Option<&'a str> {
    let (value, signature) = cookie.rsplit_once('.')?;
    bool::from(sign(key, value).as_bytes().ct_eq(signature.as_bytes())).then_some(value)
}

/// The cookie of a new session `id`.
pub fn session_cookie(key: &[u8], id: &str) -> Cookie<'static> {
    Cookie::build((COOKIE, signed(key, id)))
        .path("/")
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Lax)
        .build()
}

impl FromRequestParts<App> for Reader {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let unavailable = |e: redis::RedisError| {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("Kiln cannot read its sessions now: {e}"),
            )
        };
        let key = app.store.web_key().await.map_err(unavailable)?;
        let mut reader = Reader {
            session: None,
            session_id: None,
            public: app.config.access.public,
            key,
        };
        if let Some(op) = operator(app, &parts.headers) {
            reader.session = Some(operator_session(&reader.key, op));
            return Ok(reader);
        }
        let jar = CookieJar::from_headers(&parts.headers);
        if let Some(id) = jar
            .get(COOKIE)
            .and_then(|c| unsigned(&reader.key, c.value()))
        {
            let session = app.store.session(id).await.map_err(unavailable)?;
            if let Some(session) = session.filter(|s| still_holds(app, &reader.key, s)) {
                reader.session = Some(session);
                reader.session_id = Some(id.to_owned());
            }
        }
        Ok(reader)
    }
}

/// A refusal of a form another site made the browser send: browsers say where a request
/// comes from in `Sec-Fetch-Site`.
pub fn from_elsewhere(headers: &axum::http::HeaderMap) -> Option<Response> {
    let site = headers.get("sec-fetch-site")?.to_str().unwrap_or_default();
    (site != "same-origin" && site != "none").then(|| {
        (
            StatusCode::FORBIDDEN,
            "Kiln takes forms from its own pages only",
        )
            .into_response()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_value_is_read_back_only_unaltered() {
        let key = b"0123456789abcdef0123456789abcdef";
        let cookie = signed(key, "abc");
        assert_eq!(unsigned(key, &cookie), Some("abc"));
        assert_eq!(unsigned(key, &cookie.replace("abc", "abd")), None);
        assert_eq!(unsigned(b"another key", &cookie), None);
        assert_eq!(unsigned(key, "abc"), None);
    }
}

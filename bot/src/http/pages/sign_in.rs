//! Signing in to the pages: with an operator's token, or through GitHub or GitLab (OAuth's
//! authorization code with PKCE). A forge's reader reads the configured repositories the
//! forge lets them read, as it says at sign-in; the forge's token is not kept.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use futures_util::future::join_all;
use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::readers::{
    COOKIE, Reader, from_elsewhere, operator_session, session_cookie, signed, unsigned,
};
use super::view::Who;
use super::{render, unavailable};
use crate::app::App;
use crate::config::{Forge, OAuthApp};
use crate::store::Session;
use crate::vendors::{github, gitlab};

/// The cookie that carries a forge sign-in's state from its start to its callback.
const FLOW_COOKIE: &str = "kiln_sign_in";

#[derive(Debug, Serialize)]
struct Page {
    who: Who,
    title: String,
    next: String,
    /// `next`, in a query.
    next_query: String,
    forges: Vec<&'static str>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Next {
    /// Where to go once signed in: a path of this site.
    #[serde(default)]
    next: String,
}

/// `next` if it is a path of this site, else `/`: a sign-in never sends anyone elsewhere.
/// Browsers drop tabs and newlines from a URL and read `\\` as `/`, so a path with any of
/// them (or starting `//`) could name another site.
fn local(next: &str) -> String {
    let plain = next
        .chars()
        .all(|c| !c.is_control() && !c.is_whitespace() && c != '\\');
    if plain && next.starts_with('/') && !next.starts_with("//") {
        next.to_owned()
    } else {
        "/".into()
    }
}

fn forges(app: &App) -> Vec<&'static str> {
    let access = &app.config.access;
    [
        ("github", access.github.is_some()),
        ("gitlab", access.gitlab.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect()
}

fn sign_in_page(app: &App, reader: &Reader, next: &str, error: Option<String>) -> Response {
    let mut page = render(
        app,
        "sign_in.html",
        &Page {
            who: Who::of(reader),
            title: "Sign in".into(),
            next: local(next),
            next_query: super::build::encoded(&local(next)),
            forges: forges(app),
            error: error.clone(),
        },
    );
    if error.is_some() {
        *page.status_mut() = StatusCode::UNAUTHORIZED;
    }
    page
}

/// `GET /login`.
pub async fn page(State(app): State<App>, reader: Reader, Query(next): Query<Next>) -> Response {
    sign_in_page(&app, &reader, &next.next, None)
}

#[derive(Debug, Deserialize)]
pub struct TokenForm {
    token: String,
    #[serde(default)]
    next: String,
}

/// Opens a session for `session` and answers with its cookie, on the way to `next`.
async fn open(app: &App, jar: CookieJar, session: Session, next: &str) -> Response {
    let mut id = [0u8; 32];
    if getrandom::fill(&mut id).is_err() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "no randomness for a session",
        )
            .into_response();
    }
    let id = hex::encode(id);
    let key = match app.store.web_key().await {
        Ok(key) => key,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    };
    if let Err(e) = app
        .store
        .open_session(&id, &session, app.config.access.session)
        .await
    {
        return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response();
    }
    tracing::info!(reader = %session.id, "signed in to the pages");
    let jar = jar
        .add(session_cookie(&key, &id))
        .remove(Cookie::build(FLOW_COOKIE).path("/login").build());
    (jar, Redirect::to(&local(next))).into_response()
}

/// `POST /login`: an operator's token.
pub async fn with_token(
    State(app): State<App>,
    headers: HeaderMap,
    reader: Reader,
    jar: CookieJar,
    Form(form): Form<TokenForm>,
) -> Response {
    if let Some(refusal) = from_elsewhere(&headers) {
        return refusal;
    }
    let Some(operator) = app.config.operator(form.token.trim()) else {
        return sign_in_page(
            &app,
            &reader,
            &form.next,
            Some("That is not an operator's token.".into()),
        );
    };
    let key = match app.store.web_key().await {
        Ok(key) => key,
        Err(e) => return unavailable(&app, &reader, e),
    };
    open(&app, jar, operator_session(&key, operator), &form.next).await
}

/// `POST /logout`.
pub async fn sign_out(State(app): State<App>, headers: HeaderMap, jar: CookieJar) -> Response {
    if let Some(refusal) = from_elsewhere(&headers) {
        return refusal;
    }
    if let (Ok(key), Some(cookie)) = (app.store.web_key().await, jar.get(COOKIE))
        && let Some(id) = unsigned(&key, cookie.value())
        && let Err(e) = app.store.close_session(id).await
    {
        return unavailable_text(e);
    }
    let jar = jar.remove(Cookie::build(COOKIE).path("/").build());
    (jar, Redirect::to("/")).into_response()
}

fn unavailable_text(e: impl std::fmt::Display) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("Kiln cannot do that now: {e}"),
    )
        .into_response()
}

/// An OAuth client with its authorization and token endpoints set.
type OAuthClient = oauth2::Client<
    oauth2::basic::BasicErrorResponse,
    oauth2::basic::BasicTokenResponse,
    oauth2::basic::BasicTokenIntrospectionResponse,
    oauth2::StandardRevocableToken,
    oauth2::basic::BasicRevocationErrorResponse,
    oauth2::EndpointSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

/// A forge people sign in with, as configured.
struct Provider<'a> {
    forge: Forge,
    app: &'a OAuthApp,
    /// Where they sign in.
    url: String,
    api: String,
    authorize: &'static str,
    token: &'static str,
    scopes: &'static [&'static str],
}

fn provider<'a>(app: &'a App, forge: &str) -> Option<Provider<'a>> {
    let access = &app.config.access;
    match forge {
        "github" => {
            let oauth = access.github.as_ref()?;
            let url = oauth
                .url
                .clone()
                .unwrap_or_else(|| github::sign_in::URL.into());
            Some(Provider {
                forge: Forge::GitHub,
                app: oauth,
                api: oauth
                    .api_url
                    .clone()
                    .unwrap_or_else(|| github::sign_in::API.into()),
                url,
                authorize: github::sign_in::AUTHORIZE,
                token: github::sign_in::TOKEN,
                scopes: github::sign_in::SCOPES,
            })
        }
        "gitlab" => {
            let oauth = access.gitlab.as_ref()?;
            let url = oauth
                .url
                .clone()
                .unwrap_or_else(|| gitlab::sign_in::URL.into());
            Some(Provider {
                forge: Forge::GitLab,
                app: oauth,
                api: oauth
                    .api_url
                    .clone()
                    .unwrap_or_else(|| gitlab::sign_in::api(&url)),
                url,
                authorize: gitlab::sign_in::AUTHORIZE,
                token: gitlab::sign_in::TOKEN,
                scopes: gitlab::sign_in::SCOPES,
            })
        }
        _ => None,
    }
}

impl Provider<'_> {
    fn name(&self) -> &'static str {
        match self.forge {
            Forge::GitHub => "github",
            Forge::GitLab => "gitlab",
        }
    }

    fn client(&self, public_url: &str) -> anyhow::Result<OAuthClient> {
        let base = self.url.trim_end_matches('/');
        Ok(BasicClient::new(ClientId::new(self.app.client_id.clone()))
            .set_client_secret(ClientSecret::new(
                self.app.client_secret.expose_secret().to_owned(),
            ))
            .set_auth_uri(AuthUrl::new(format!("{base}{}", self.authorize))?)
            .set_token_uri(TokenUrl::new(format!("{base}{}", self.token))?)
            .set_redirect_uri(RedirectUrl::new(format!(
                "{}/login/{}/callback",
                public_url.trim_end_matches('/'),
                self.name()
            ))?))
    }

    async fn login(
        &self,
        http: &reqwest::Client,
        token: &SecretString,
    ) -> anyhow::Result<(u64, String)> {
        match self.forge {
            Forge::GitHub => github::sign_in::login(http, &self.api, token).await,
            Forge::GitLab => gitlab::sign_in::login(http, &self.api, token).await,
        }
    }

    async fn reads(
        &self,
        http: &reqwest::Client,
        token: &SecretString,
        repo: &str,
    ) -> anyhow::Result<bool> {
        match self.forge {
            Forge::GitHub => github::sign_in::reads(http, &self.api, token, repo).await,
            Forge::GitLab => gitlab::sign_in::reads(http, &self.api, token, repo).await,
        }
    }
}

/// `GET /login/{forge}`: off to the forge, which sends the reader back to the callback.
pub async fn to_forge(
    State(app): State<App>,
    reader: Reader,
    jar: CookieJar,
    Path(forge): Path<String>,
    Query(next): Query<Next>,
) -> Response {
    let Some(provider) = provider(&app, &forge) else {
        return super::not_found(&app, &reader);
    };
    let client = match provider.client(&app.config.public_url) {
        Ok(client) => client,
        Err(e) => return unavailable(&app, &reader, format!("{e:#}")),
    };
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(CsrfToken::new_random)
        .set_pkce_challenge(challenge);
    for scope in provider.scopes {
        request = request.add_scope(Scope::new((*scope).into()));
    }
    let (url, state) = request.url();
    let key = match app.store.web_key().await {
        Ok(key) => key,
        Err(e) => return unavailable(&app, &reader, e),
    };
    let flow = format!(
        "{}|{}|{}|{}",
        provider.name(),
        state.secret(),
        verifier.secret(),
        local(&next.next)
    );
    let cookie = Cookie::build((FLOW_COOKIE, signed(&key, &flow)))
        .path("/login")
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Lax)
        .build();
    (jar.add(cookie), Redirect::to(url.as_str())).into_response()
}

#[derive(Debug, Deserialize)]
pub struct Callback {
    #[serde(default)]
    code: String,
    #[serde(default)]
    state: String,
    /// Set instead of `code` when the reader refused, or the forge could not ask them.
    error: Option<String>,
}

/// `GET /login/{forge}/callback`: the forge's answer. The code is traded for a token, the
/// token tells who signed in and what they read, and a session is opened for that.
pub async fn back_from_forge(
    State(app): State<App>,
    reader: Reader,
    jar: CookieJar,
    Path(forge): Path<String>,
    Query(callback): Query<Callback>,
) -> Response {
    let Some(provider) = provider(&app, &forge) else {
        return super::not_found(&app, &reader);
    };
    let refuse = |why: String| sign_in_page(&app, &reader, "/", Some(why));
    if let Some(error) = callback.error {
        return refuse(format!("{forge} did not sign you in: {error}."));
    }
    let key = match app.store.web_key().await {
        Ok(key) => key,
        Err(e) => return unavailable(&app, &reader, e),
    };
    let flow = jar
        .get(FLOW_COOKIE)
        .and_then(|c| unsigned(&key, c.value()))
        .map(str::to_owned);
    let Some(flow) = flow else {
        return refuse("This sign-in did not start here, or took too long: try again.".into());
    };
    let mut parts = flow.splitn(4, '|');
    let (Some(name), Some(state), Some(verifier), Some(next)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return refuse("This sign-in did not start here: try again.".into());
    };
    if name != provider.name() || state != callback.state || callback.code.is_empty() {
        return refuse("This sign-in did not start here: try again.".into());
    }
    let http = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
    {
        Ok(http) => http,
        Err(e) => return unavailable(&app, &reader, e),
    };
    let client = match provider.client(&app.config.public_url) {
        Ok(client) => client,
        Err(e) => return unavailable(&app, &reader, format!("{e:#}")),
    };
    let token = match client
        .exchange_code(AuthorizationCode::new(callback.code))
        .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
        .request_async(&http)
        .await
    {
        Ok(answer) => SecretString::from(answer.access_token().secret().to_owned()),
        Err(e) => return refuse(format!("{forge} did not give Kiln a token: {e}")),
    };
    let (user_id, login) = match provider.login(&http, &token).await {
        Ok(user) => user,
        Err(e) => return refuse(format!("{forge} did not say who you are: {e:#}")),
    };
    let repos: Vec<&str> = app
        .config
        .repositories
        .iter()
        .filter(|r| r.forge == provider.forge)
        .map(|r| r.name.as_str())
        .collect();
    let checks = join_all(repos.iter().map(|repo| provider.reads(&http, &token, repo))).await;
    let mut readable = std::collections::BTreeSet::new();
    for (repo, check) in repos.iter().zip(checks) {
        match check {
            Ok(true) => {
                readable.insert(repo.to_ascii_lowercase());
            }
            Ok(false) => {}
            Err(e) => return refuse(format!("{forge} did not say what you may read: {e:#}")),
        }
    }
    if readable.is_empty() {
        return refuse(format!(
            "{login} may read none of the repositories this Kiln builds on {forge}."
        ));
    }
    let session = Session {
        id: format!("{}:{user_id}", provider.name()),
        name: login,
        operator: false,
        token_mark: None,
        repos: readable,
    };
    open(&app, jar, session, next).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sign_in_goes_on_to_this_site_only() {
        for kept in ["/", "/builds/7?task=unit&page=2", "/repos/acme/api"] {
            assert_eq!(local(kept), kept);
        }
        for elsewhere in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/ /evil.example",
            "evil",
            "",
        ] {
            assert_eq!(local(elsewhere), "/", "{elsewhere:?}");
        }
    }
}

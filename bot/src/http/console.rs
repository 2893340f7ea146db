//! `/console`: the web console, the local way to use Kiln with no chat account. An operator
//! signs in with their token, which is kept in a cookie the browser sends only to this page
//! (`HttpOnly`, `Secure`, `SameSite=Strict`), types the commands chat takes, and sees the
//! recent builds' cards.

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use kiln_shared::view::BuildMessage;
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::commands::{self, Actor, Reply};
use crate::config::Operator;
use crate::notify::cards;

/// The cookie that holds the operator's token.
const COOKIE: &str = "kiln_console";

/// How many recent builds the page shows.
const BUILDS_SHOWN: u64 = 10;

/// What the page shows.
#[derive(Debug, Default, Serialize)]
struct Page {
    /// Who is signed in; nobody: the sign-in form.
    operator: Option<String>,
    /// The command just given, kept in the box.
    command: String,
    reply: Option<Reply>,
    builds: Vec<BuildMessage>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct SignIn {
    token: String,
}

#[derive(Debug, Deserialize)]
pub struct CommandForm {
    command: String,
}

/// A refusal of a form another site made the browser send: browsers say where a request
/// comes from in `Sec-Fetch-Site`, and `SameSite=Strict` alone lets a sibling subdomain in.
fn from_elsewhere(headers: &HeaderMap) -> Option<Response> {
    let site = headers.get("sec-fetch-site")?.to_str().unwrap_or_default();
    (site != "same-origin" && site != "none").then(|| {
        (
            StatusCode::FORBIDDEN,
            "the console takes forms from its own pages only",
        )
            .into_response()
    })
}

/// The operator whose token the cookie holds.
fn signed_in<'a>(app: &'a App, jar: &CookieJar) -> Option<&'a Operator> {
    app.config.operator(jar.get(COOKIE)?.value())
}

/// `GET /console`.
pub async fn show(State(app): State<App>, jar: CookieJar) -> Response {
    match signed_in(&app, &jar) {
        Some(operator) => page(&app, operator, String::new(), None).await,
        None => render(&app, StatusCode::OK, &Page::default()),
    }
}

/// `POST /console/login`: a known token is kept in the cookie; another is refused.
pub async fn sign_in(
    State(app): State<App>,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<SignIn>,
) -> Response {
    if let Some(refusal) = from_elsewhere(&headers) {
        return refusal;
    }
    let token = form.token.trim();
    if app.config.operator(token).is_none() {
        let page = Page {
            error: Some("That is not an operator's token.".into()),
            ..Page::default()
        };
        return render(&app, StatusCode::UNAUTHORIZED, &page);
    }
    let cookie = Cookie::build((COOKIE, token.to_owned()))
        .path("/console")
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .build();
    (jar.add(cookie), Redirect::to("/console")).into_response()
}

/// `POST /console/logout`.
pub async fn sign_out(headers: HeaderMap, jar: CookieJar) -> Response {
    if let Some(refusal) = from_elsewhere(&headers) {
        return refusal;
    }
    let cookie = Cookie::build(COOKIE).path("/console").build();
    (jar.remove(cookie), Redirect::to("/console")).into_response()
}

/// `POST /console`: the command, as the signed-in operator.
pub async fn command(
    State(app): State<App>,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<CommandForm>,
) -> Response {
    if let Some(refusal) = from_elsewhere(&headers) {
        return refusal;
    }
    let Some(operator) = signed_in(&app, &jar) else {
        let page = Page {
            error: Some("Sign in first.".into()),
            ..Page::default()
        };
        return render(&app, StatusCode::UNAUTHORIZED, &page);
    };
    let id = format!("operator:{}", operator.name);
    let actor = Actor {
        name: &operator.name,
        via: "console",
        id: &id,
        operator: true,
        channel: None,
        writes: None,
        roles: &[],
    };
    let reply = commands::run(&app, actor, &form.command).await;
    page(&app, operator, form.command, Some(reply)).await
}

/// The signed-in page: the command box, the answer, the recent builds.
async fn page(app: &App, operator: &Operator, command: String, reply: Option<Reply>) -> Response {
    let mut page = Page {
        operator: Some(operator.name.clone()),
        command,
        reply,
        ..Page::default()
    };
    match recent_cards(app).await {
        Ok(builds) => page.builds = builds,
        Err(error) => page.error = Some(format!("Kiln cannot read its builds now: {error:#}")),
    }
    render(app, StatusCode::OK, &page)
}

async fn recent_cards(app: &App) -> anyhow::Result<Vec<BuildMessage>> {
    let mut shown = Vec::new();
    for record in app.store.recent_builds(BUILDS_SHOWN).await? {
        shown.push(cards::current(app, &record).await?.0);
    }
    Ok(shown)
}

fn render(app: &App, status: StatusCode, page: &Page) -> Response {
    match app.templates.console(page) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot render the console");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the console cannot be shown",
            )
                .into_response()
        }
    }
}

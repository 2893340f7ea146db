//! `/console`: the web console, the local way to use Kiln with no chat account. An operator
//! signs in with their token, which is kept in a cookie the browser sends only to this page
//! (`HttpOnly`, `Secure`, `SameSite=Strict`), types the commands chat takes, and sees the
//! recent builds' cards. An operator signed in to the pages (`/login`) is signed in here
//! too. The console is for operators only: its commands (`logs`, `status`) read every
//! repository.

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use kiln_shared::view::BuildMessage;
use serde::{Deserialize, Serialize};

use super::pages::readers::{Reader, from_elsewhere, operator_session};
use super::pages::view::Who;
use crate::app::App;
use crate::commands::{self, Actor, Reply};
use crate::notify::{Buttons, cards};
use crate::store::Session;

/// The cookie that holds the operator's token.
const COOKIE: &str = "kiln_console";

/// How many recent builds the page shows.
const BUILDS_SHOWN: u64 = 10;

/// What the page shows.
#[derive(Debug, Serialize)]
struct Page {
    who: Who,
    title: &'static str,
    /// Who is signed in; nobody: the sign-in form.
    operator: Option<String>,
    /// The token the command form carries, when signed in to the pages rather than here
    /// (whose sign-out is the pages').
    form_token: Option<String>,
    /// The command just given, kept in the box.
    command: String,
    reply: Option<Reply>,
    builds: Vec<Card>,
    error: Option<String>,
}

/// A recent build's card, with the commands its chat card's buttons give, as buttons.
#[derive(Debug, Serialize)]
struct Card {
    build: BuildMessage,
    commands: Vec<CardCommand>,
}

#[derive(Debug, Serialize)]
struct CardCommand {
    label: &'static str,
    command: String,
}

#[derive(Debug, Deserialize)]
pub struct SignIn {
    token: String,
}

#[derive(Debug, Deserialize)]
pub struct CommandForm {
    command: String,
    /// Carried by the form of someone signed in to the pages.
    #[serde(default)]
    form_token: String,
}

impl Page {
    /// The sign-in form, for `reader`.
    fn signed_out(reader: &Reader) -> Self {
        Self {
            who: Who::of(reader),
            title: "Console",
            operator: None,
            form_token: None,
            command: String::new(),
            reply: None,
            builds: Vec::new(),
            error: None,
        }
    }
}

/// The operator who gives the console's commands: by the console's cookie, or signed in to
/// the pages.
fn signed_in(app: &App, jar: &CookieJar, reader: &Reader) -> Option<Session> {
    if let Some(operator) = jar.get(COOKIE).and_then(|c| app.config.operator(c.value())) {
        return Some(operator_session(b"console", operator));
    }
    reader.session().filter(|s| s.operator).cloned()
}

/// `GET /console`.
pub async fn show(State(app): State<App>, jar: CookieJar, reader: Reader) -> Response {
    match signed_in(&app, &jar, &reader) {
        Some(session) => page(&app, &reader, &session, String::new(), None).await,
        None => render(&app, StatusCode::OK, &Page::signed_out(&reader)),
    }
}

/// `POST /console/login`: a known token is kept in the cookie; another is refused.
pub async fn sign_in(
    State(app): State<App>,
    headers: HeaderMap,
    jar: CookieJar,
    reader: Reader,
    Form(form): Form<SignIn>,
) -> Response {
    if let Some(refusal) = from_elsewhere(&headers) {
        return refusal;
    }
    let token = form.token.trim();
    if app.config.operator(token).is_none() {
        let page = Page {
            error: Some("That is not an operator's token.".into()),
            ..Page::signed_out(&reader)
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
    reader: Reader,
    Form(form): Form<CommandForm>,
) -> Response {
    if let Some(refusal) = from_elsewhere(&headers) {
        return refusal;
    }
    let Some(session) = signed_in(&app, &jar, &reader) else {
        let page = Page {
            error: Some("Sign in first.".into()),
            ..Page::signed_out(&reader)
        };
        return render(&app, StatusCode::UNAUTHORIZED, &page);
    };
    // A page sign-in's cookie goes with every request to the site: its forms carry a token.
    let by_console_cookie = jar
        .get(COOKIE)
        .is_some_and(|c| app.config.operator(c.value()).is_some());
    if !by_console_cookie && !reader.checks(&form.form_token) {
        return (
            StatusCode::FORBIDDEN,
            "this form is not from your page: load the page again",
        )
            .into_response();
    }
    let actor = Actor {
        name: &session.name,
        via: "console",
        id: &session.id,
        operator: session.operator,
        channel: None,
        writes: None,
        roles: &[],
    };
    let reply = commands::run(&app, actor, &form.command).await;
    page(&app, &reader, &session, form.command, Some(reply)).await
}

/// The signed-in page: the command box, the answer, the recent builds `reader` may read.
async fn page(
    app: &App,
    reader: &Reader,
    session: &Session,
    command: String,
    reply: Option<Reply>,
) -> Response {
    // A page sign-in's form carries its token; the console's own cookie needs none.
    let by_page = reader.session().is_some_and(|s| s.id == session.id);
    let mut page = Page {
        operator: Some(session.name.clone()),
        form_token: by_page.then(|| reader.form_token()).flatten(),
        command,
        reply,
        ..Page::signed_out(reader)
    };
    match recent_cards(app).await {
        Ok(builds) => page.builds = builds,
        Err(error) => page.error = Some(format!("Kiln cannot read its builds now: {error:#}")),
    }
    render(app, StatusCode::OK, &page)
}

async fn recent_cards(app: &App) -> anyhow::Result<Vec<Card>> {
    let mut shown = Vec::new();
    for record in app.store.recent_builds(BUILDS_SHOWN).await? {
        let build = cards::current(app, &record).await?.0;
        let commands = Buttons::card(&build)
            .commands
            .into_iter()
            .map(|(label, command)| CardCommand { label, command })
            .collect();
        shown.push(Card { build, commands });
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

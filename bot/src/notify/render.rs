//! Chat messages rendered by tera: one `Tera` per dialect, each escaping user text its own
//! way. A dialect (its escaping and its templates) belongs to its vendor (`vendors/*`); this
//! module only compiles and renders them, and the web console's own HTML.

use std::collections::BTreeMap;

use kiln_shared::view::{BuildMessage, PromotionMessage};
use tera::{Context, Tera};

/// How a chat vendor writes: its escaping of user text and its templates, each rendered from
/// a view model of `kiln_shared::view`.
#[derive(Debug)]
pub struct Dialect {
    /// Its name, and the suffix of its templates (`build.<name>.md`).
    pub name: &'static str,
    /// Escapes user text (a commit subject, a branch) so it can neither format, mention nor
    /// link in this dialect.
    pub escape: fn(&str, &mut dyn std::io::Write) -> std::io::Result<()>,
    /// A build's card ([`BuildMessage`]).
    pub card: &'static str,
    /// The notification of a build's failure ([`BuildMessage`]).
    pub failure: &'static str,
    /// A promotion's card ([`PromotionMessage`]).
    pub promotion: &'static str,
}

/// The message templates, compiled once at start-up.
#[derive(Debug)]
pub struct Templates {
    /// By dialect name.
    dialects: BTreeMap<&'static str, Tera>,
    /// The web console's page, HTML-escaped.
    html: Tera,
}

/// The web pages and their parts, by name.
const PAGES: [(&str, &str); 12] = [
    (
        "layout.html",
        include_str!("../../templates/html/layout.html"),
    ),
    ("card.html", include_str!("../../templates/html/card.html")),
    (
        "console.html",
        include_str!("../../templates/html/console.html"),
    ),
    (
        "index.html",
        include_str!("../../templates/html/index.html"),
    ),
    ("rows.html", include_str!("../../templates/html/rows.html")),
    (
        "build.html",
        include_str!("../../templates/html/build.html"),
    ),
    (
        "graph.html",
        include_str!("../../templates/html/graph.html"),
    ),
    ("log.html", include_str!("../../templates/html/log.html")),
    ("repo.html", include_str!("../../templates/html/repo.html")),
    (
        "workers.html",
        include_str!("../../templates/html/workers.html"),
    ),
    (
        "sign_in.html",
        include_str!("../../templates/html/sign_in.html"),
    ),
    ("said.html", include_str!("../../templates/html/said.html")),
];

/// One dialect's templates, compiled.
fn compile(dialect: &Dialect) -> tera::TeraResult<Tera> {
    let suffix = format!(".{}.md", dialect.name);
    let mut tera = Tera::new();
    tera.autoescape_on([suffix.clone()]);
    tera.set_escape_fn(dialect.escape);
    tera.add_raw_templates([
        (format!("build{suffix}"), dialect.card),
        (format!("build_failed{suffix}"), dialect.failure),
        (format!("promotion{suffix}"), dialect.promotion),
    ])?;
    Ok(tera)
}

impl Templates {
    /// Compiles every template of `dialects` and the console's; a broken template stops the
    /// bot at start-up, not at the first build.
    pub fn new<'a>(dialects: impl IntoIterator<Item = &'a Dialect>) -> tera::TeraResult<Self> {
        Ok(Self {
            dialects: dialects
                .into_iter()
                .map(|d| Ok((d.name, compile(d)?)))
                .collect::<tera::TeraResult<_>>()?,
            html: {
                // tera escapes `.html` templates for HTML by default.
                let mut html = Tera::new();
                html.add_raw_templates(PAGES)?;
                html
            },
        })
    }

    /// The web console's page for `page`.
    pub fn console(&self, page: &impl serde::Serialize) -> tera::TeraResult<String> {
        self.page("console.html", page)
    }

    /// The web page (or part of one) `name` (`index.html`), for `view`.
    pub fn page(&self, name: &str, view: &impl serde::Serialize) -> tera::TeraResult<String> {
        self.html.render(name, &Context::from_serialize(view)?)
    }

    /// A build's card, as it is now.
    pub fn card(&self, dialect: &Dialect, message: &BuildMessage) -> tera::TeraResult<String> {
        self.render(dialect, "build", message)
    }

    /// The notification of a build's failure.
    pub fn failure(&self, dialect: &Dialect, message: &BuildMessage) -> tera::TeraResult<String> {
        self.render(dialect, "build_failed", message)
    }

    /// A promotion's card.
    pub fn promotion(
        &self,
        dialect: &Dialect,
        message: &PromotionMessage,
    ) -> tera::TeraResult<String> {
        self.render(dialect, "promotion", message)
    }

    fn render(
        &self,
        dialect: &Dialect,
        name: &str,
        message: &impl serde::Serialize,
    ) -> tera::TeraResult<String> {
        let tera = self.dialects.get(dialect.name).ok_or_else(|| {
            tera::Error::message(format!("no templates of dialect `{}`", dialect.name))
        })?;
        let context = Context::from_serialize(message)?;
        Ok(tera
            .render(&format!("{name}.{}.md", dialect.name), &context)?
            .trim_end()
            .to_owned())
    }
}

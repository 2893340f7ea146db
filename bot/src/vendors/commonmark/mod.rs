//! The markdown GitHub and GitLab both read, in the comments Kiln posts on pull and merge
//! requests: its escaping and its templates.

use crate::notify::render::Dialect;

/// Request comments' dialect.
pub static DIALECT: Dialect = Dialect {
    name: "forge",
    escape,
    card: include_str!("templates/build.forge.md"),
    failure: include_str!("templates/build_failed.forge.md"),
    promotion: include_str!("templates/promotion.forge.md"),
};

/// Escapes text for GitHub's and GitLab's markdown: every punctuation character markdown
/// reads gets a backslash, `<`, `>` and `&` become entities (no HTML), and an `@` gets a
/// zero-width space after it, so no user, team or group is mentioned.
fn escape(input: &str, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    for c in input.chars() {
        match c {
            '\\' | '*' | '_' | '~' | '`' | '|' | '#' | '[' | ']' | '(' | ')' | ':' | '-' | '+'
            | '!' => write!(out, "\\{c}")?,
            '<' => write!(out, "&lt;")?,
            '>' => write!(out, "&gt;")?,
            '&' => write!(out, "&amp;")?,
            '@' => write!(out, "@\u{200B}")?,
            '\n' | '\r' => write!(out, " ")?,
            c => write!(out, "{c}")?,
        }
    }
    Ok(())
}

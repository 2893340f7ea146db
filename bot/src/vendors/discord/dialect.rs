//! Discord's markdown: its escaping and its templates.

use crate::notify::render::Dialect;

/// Discord's dialect.
pub static DIALECT: Dialect = Dialect {
    name: "discord",
    escape,
    card: include_str!("templates/build.discord.md"),
    failure: include_str!("templates/build_failed.discord.md"),
    promotion: include_str!("templates/promotion.discord.md"),
};

/// Escapes text for Discord markdown: every formatting character gets a backslash, and an
/// `@` gets a zero-width space after it so `@everyone` and `@here` can never be mentions,
/// even where `allowed_mentions` is not set.
fn escape(input: &str, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    for c in input.chars() {
        match c {
            '\\' | '*' | '_' | '~' | '`' | '|' | '>' | '#' | '[' | ']' | '(' | ')' | '<' | ':'
            | '-' => write!(out, "\\{c}")?,
            '@' => write!(out, "@\u{200B}")?,
            '\n' | '\r' => write!(out, " ")?,
            c => write!(out, "{c}")?,
        }
    }
    Ok(())
}

//! Slack's mrkdwn: its escaping and its templates.

use crate::notify::render::Dialect;

/// Slack's dialect.
pub static DIALECT: Dialect = Dialect {
    name: "slack",
    escape: escape_into,
    card: include_str!("templates/build.slack.md"),
    failure: include_str!("templates/build_failed.slack.md"),
    promotion: include_str!("templates/promotion.slack.md"),
};

/// `text` as Slack mrkdwn shows it literally: `&`, `<` and `>` are Slack's only control
/// characters, so escaped text can neither mention `<!channel>` nor make a link.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Escapes text for Slack mrkdwn: `&`, `<` and `>` are its only control characters, so
/// escaped text can neither mention `<!channel>`, make a link nor start a quote. (Slack has
/// no escape for `*`, `_` or `` ` ``: a subject can still make itself bold.)
fn escape_into(input: &str, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    write!(out, "{}", escape(input))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_text_cannot_mention_or_link() {
        assert_eq!(
            escape("<!channel> & <https://evil|click>"),
            "&lt;!channel&gt; &amp; &lt;https://evil|click&gt;"
        );
    }
}

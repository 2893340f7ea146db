//! A log line as HTML: its text escaped, its SGR colours and weights as classes, and every
//! other control sequence dropped. What a line cannot do is hide text: concealment,
//! backgrounds (text the colour of its background), cursor moves and carriage returns are
//! not rendered, so every character the task printed is on the page.

use std::fmt::Write as _;

use anstyle_parse::{DefaultCharAccumulator, Params, Parser, Perform};

/// `line` as HTML, ready to be put in an element.
pub fn to_html(line: &str) -> String {
    let mut html = Html::default();
    let mut parser = Parser::<DefaultCharAccumulator>::new();
    for byte in line.bytes() {
        parser.advance(&mut html, byte);
    }
    html.close();
    html.out
}

/// The style in force: a foreground colour (0–15) and weights.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Style {
    colour: Option<u8>,
    bold: bool,
    dim: bool,
    italic: bool,
    underline: bool,
}

impl Style {
    fn classes(self) -> String {
        let mut classes = Vec::new();
        if let Some(colour) = self.colour {
            classes.push(format!("f{colour}"));
        }
        for (on, class) in [
            (self.bold, "b"),
            (self.dim, "d"),
            (self.italic, "i"),
            (self.underline, "u"),
        ] {
            if on {
                classes.push(class.to_owned());
            }
        }
        classes.join(" ")
    }

    /// Applies one SGR sequence's parameters.
    fn apply(&mut self, params: &Params) {
        let mut params = params.iter().map(|p| p.first().copied().unwrap_or(0));
        let mut any = false;
        while let Some(code) = params.next() {
            any = true;
            match code {
                0 => *self = Self::default(),
                1 => self.bold = true,
                2 => self.dim = true,
                3 => self.italic = true,
                4 => self.underline = true,
                22 => (self.bold, self.dim) = (false, false),
                23 => self.italic = false,
                24 => self.underline = false,
                30..=37 => self.colour = Some((code - 30) as u8),
                90..=97 => self.colour = Some((code - 90 + 8) as u8),
                39 => self.colour = None,
                // 256 colours: the first 16 are the named ones; the others are left as
                // the default colour. Truecolour is left the same way.
                38 => match params.next() {
                    Some(5) => {
                        self.colour = params
                            .next()
                            .and_then(|n| u8::try_from(n).ok())
                            .filter(|n| *n < 16)
                    }
                    Some(2) => {
                        params.by_ref().take(3).for_each(drop);
                    }
                    _ => {}
                },
                // Backgrounds are skipped with their arguments, never rendered.
                48 => match params.next() {
                    Some(5) => {
                        params.next();
                    }
                    Some(2) => {
                        params.by_ref().take(3).for_each(drop);
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        if !any {
            *self = Self::default();
        }
    }
}

/// The HTML written so far, and the span open.
#[derive(Debug, Default)]
struct Html {
    out: String,
    style: Style,
    /// The style of the span open in `out`, if any.
    open: Option<Style>,
}

impl Html {
    fn close(&mut self) {
        if self.open.take().is_some() {
            self.out.push_str("</span>");
        }
    }

    /// Makes the open span the current style's before a character is written.
    fn styled(&mut self) {
        if self.open == Some(self.style) || (self.open.is_none() && self.style == Style::default())
        {
            return;
        }
        self.close();
        if self.style != Style::default() {
            let _ = write!(self.out, "<span class=\"{}\">", self.style.classes());
            self.open = Some(self.style);
        }
    }
}

impl Perform for Html {
    fn print(&mut self, c: char) {
        self.styled();
        match c {
            '<' => self.out.push_str("&lt;"),
            '>' => self.out.push_str("&gt;"),
            '&' => self.out.push_str("&amp;"),
            '"' => self.out.push_str("&quot;"),
            '\'' => self.out.push_str("&#39;"),
            // Characters that change the text's direction could reorder what is shown.
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {}
            c => self.out.push(c),
        }
    }

    fn execute(&mut self, byte: u8) {
        if byte == b'\t' {
            self.print('\t');
        }
    }

    fn csi_dispatch(&mut self, params: &Params, _intermediates: &[u8], ignore: bool, action: u8) {
        if action == b'm' && !ignore {
            self.style.apply(params);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            to_html("<script>alert(\"x\")</script> & 'y'"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn colours_and_weights_become_classes() {
        assert_eq!(
            to_html("\x1b[1;31mfailed\x1b[0m: 3 tests"),
            "<span class=\"f1 b\">failed</span>: 3 tests"
        );
        assert_eq!(
            to_html("\x1b[92mok\x1b[39m done \x1b[38;5;12mblue\x1b[m"),
            "<span class=\"f10\">ok</span> done <span class=\"f12\">blue</span>"
        );
    }

    #[test]
    fn nothing_can_hide_text() {
        // Concealed, the background's colour, overwritten by a carriage return, erased.
        assert_eq!(to_html("\x1b[8msecret\x1b[0m"), "secret");
        assert_eq!(
            to_html("\x1b[30;40mblack\x1b[0m"),
            "<span class=\"f0\">black</span>"
        );
        assert_eq!(to_html("shown\r\x1b[2Kover"), "shownover");
        assert_eq!(to_html("a\x1b]0;title\x07b\x1b[5Dc"), "abc");
        assert_eq!(to_html("abc\u{202e}def"), "abcdef");
    }

    #[test]
    fn a_sequence_cut_short_ends_the_span() {
        assert_eq!(
            to_html("\x1b[33mwarn\x1b["),
            "<span class=\"f3\">warn</span>"
        );
    }
}

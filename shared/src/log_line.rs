//! A line of a task's log as people read it (the plain-text log, its live follow, chat
//! cards, `logs`). A line is stored with the stream it came from (`fd`): `out`, `err`, or
//! [`KILN_FD`] for Kiln's own lines. What a task prints is shown so that it can pass neither
//! for Kiln's word nor hide text from whoever reads it in a terminal: a task's line that
//! begins like Kiln's is escaped, and control characters are shown as their pictures (␛, ␍,
//! …), colours (SGR sequences) excepted.

/// The `fd` of Kiln's own lines.
pub const KILN_FD: &str = "kiln";

/// How Kiln's own lines begin.
pub const KILN_PREFIX: &str = "[kiln]";

/// `text`, from the stream `fd`, as it is shown.
pub fn shown(fd: &str, text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 1);
    if fd != KILN_FD && text.starts_with(KILN_PREFIX) {
        out.push('\\');
    }
    let mut rest = text;
    while let Some(at) = rest.find(|c: char| c.is_control() && c != '\t') {
        out.push_str(&rest[..at]);
        let c = rest[at..].chars().next().expect("a character is there");
        let after = &rest[at + c.len_utf8()..];
        match sgr_len(after).filter(|_| c == '\u{1b}') {
            Some(len) => {
                out.push(c);
                out.push_str(&after[..len]);
                rest = &after[len..];
            }
            None => {
                out.push(picture(c));
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The length of a colour sequence's body (`[1;31m`) at the start of `text`, after its ESC.
fn sgr_len(text: &str) -> Option<usize> {
    let body = text.strip_prefix('[')?;
    let params = body
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b';')
        .count();
    (body.as_bytes().get(params) == Some(&b'm')).then_some(1 + params + 1)
}

/// The Unicode picture of a control character (U+2400 onwards), or the replacement
/// character for those without one.
fn picture(c: char) -> char {
    match u32::from(c) {
        code @ 0..=0x1f => char::from_u32(0x2400 + code).unwrap_or('\u{fffd}'),
        0x7f => '\u{2421}',
        _ => '\u{fffd}',
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kilns_own_lines_are_shown_as_they_are() {
        assert_eq!(
            shown(KILN_FD, "[kiln] cache: restored"),
            "[kiln] cache: restored"
        );
    }

    #[test]
    fn a_task_cannot_pass_for_kiln() {
        assert_eq!(shown("out", "[kiln] task passed"), "\\[kiln] task passed");
        assert_eq!(shown("err", "[kiln] cache: saved"), "\\[kiln] cache: saved");
        assert_eq!(shown("out", "said [kiln] later"), "said [kiln] later");
    }

    #[test]
    fn colours_stay_and_what_could_hide_text_shows() {
        assert_eq!(
            shown("out", "\u{1b}[1;31merror\u{1b}[0m"),
            "\u{1b}[1;31merror\u{1b}[0m"
        );
        // Carriage return, erase line, cursor up: each would let a later text cover an
        // earlier one in a terminal.
        assert_eq!(shown("out", "rm -rf /\rharmless"), "rm -rf /␍harmless");
        assert_eq!(shown("out", "x\u{1b}[2Ky"), "x␛[2Ky");
        assert_eq!(shown("out", "\u{1b}[1Aup"), "␛[1Aup");
        assert_eq!(shown("out", "\u{1b}]0;title\u{7}"), "␛]0;title␇");
        assert_eq!(shown("out", "a\tb\u{7f}\u{85}"), "a\tb␡\u{fffd}");
        assert_eq!(shown("out", "trailing \u{1b}"), "trailing ␛");
        assert_eq!(shown("out", "\u{1b}[31"), "␛[31");
    }
}

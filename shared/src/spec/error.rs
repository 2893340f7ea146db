//! [`SpecError`]: why a `.kiln.yml` cannot be used, and the line and column to show the person
//! who wrote it. The bot renders it to chat as it is, so the message is a sentence for that
//! person, naming the step and field, never a Rust type.

use serde_saphyr::Location;

use super::SPEC_FILE;

/// Why a `.kiln.yml` cannot be used, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} line {line}, column {column}: {message}", SPEC_FILE)]
pub struct SpecError {
    /// 1-based line, or 0 when the problem is the file as a whole.
    pub line: u64,
    /// 1-based column, or 0 when the problem is the file as a whole.
    pub column: u64,
    /// What is wrong, in words for the person who wrote the file.
    pub message: String,
}

impl SpecError {
    /// An error at `location`: the place of the field whose value is wrong.
    pub(crate) fn at(location: Location, message: impl Into<String>) -> Self {
        Self {
            line: location.line(),
            column: location.column(),
            message: message.into(),
        }
    }

    /// A file that is not YAML, or whose YAML is not of `.kiln.yml`'s shape: serde-saphyr
    /// knows where it stopped.
    pub(super) fn from_yaml(error: &serde_saphyr::Error) -> Self {
        let (line, column) = error.location().map_or((0, 0), |l| (l.line(), l.column()));
        let message = first_line(&error.to_string());
        let message = match PLAIN_WORDS.iter().find(|(said, _)| *said == message) {
            Some((_, plain)) => (*plain).to_owned(),
            None => message,
        };
        Self {
            line,
            column,
            message,
        }
    }
}

/// serde-saphyr's words for a node of the wrong kind, and what a person in chat reads instead.
const PLAIN_WORDS: [(&str, &str); 3] = [
    (
        "expected string scalar",
        "expected a single value here, not a list or a map",
    ),
    (
        "expected sequence start",
        "expected a list here, such as `[a, b]`",
    ),
    (
        "expected mapping start",
        "expected a map here, such as `{ name: value }`",
    ),
];

/// serde-saphyr renders `error: line L column C: message` and a snippet of the file below it;
/// [`SpecError`] carries the place itself, so keep the message alone.
fn first_line(rendered: &str) -> String {
    let line = rendered.lines().next().unwrap_or(rendered).trim();
    let line = line.strip_prefix("error: ").unwrap_or(line);
    match line
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((_place, message)) => message.to_owned(),
        None => line.to_owned(),
    }
}

//! How a build's and a task's records are stored: each a Redis hash, whose field names and
//! value encodings are written here once, for the bot and the workers both.
//!
//! A codec maps a typed record to field/value pairs and back; it does no I/O (the stores
//! send the pairs). A field that does not decode is a [`RecordError`], never a default: a
//! drifted or corrupt record is seen as unreadable instead of silently becoming, say, a
//! build with no artifacts.

pub mod build;
pub mod task;

use std::collections::HashMap;
use std::str::FromStr;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use build::{BuildField, BuildRecord};
pub use task::{ArchivedLog, TaskField, TaskRecord};

/// Field/value pairs to write to a record's hash.
pub type Fields = Vec<(&'static str, String)>;

/// How many characters of a bad value an error shows: enough to recognise it, not a whole
/// plan.
const SHOWN_VALUE_CHARS: usize = 120;

/// Why a stored record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// A field every such record has is not there.
    #[error("field `{field}` is missing")]
    Missing { field: &'static str },
    /// A field holds a value that does not decode as its type.
    #[error("field `{field}` holds {}, which does not decode: {reason}", shown(.value))]
    Malformed {
        field: &'static str,
        value: String,
        reason: String,
    },
}

/// A bad value as an error shows it: quoted, and cut short if long.
fn shown(value: &str) -> String {
    match value.char_indices().nth(SHOWN_VALUE_CHARS) {
        Some((end, _)) => format!("{:?}…", &value[..end]),
        None => format!("{value:?}"),
    }
}

/// A value as JSON. The stored types are plain data (no maps with non-text keys), which
/// serde_json always encodes.
fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("stored records are plain data")
}

/// A record's hash as read, and the one way each kind of value is decoded from it.
struct Reader<'a> {
    fields: &'a HashMap<String, String>,
}

impl<'a> Reader<'a> {
    fn get(&self, field: &'static str) -> Option<&'a str> {
        self.fields.get(field).map(String::as_str)
    }

    /// A text field every such record has.
    fn text(&self, field: &'static str) -> Result<String, RecordError> {
        self.get(field)
            .map(str::to_owned)
            .ok_or(RecordError::Missing { field })
    }

    /// A field that is a number (or another `FromStr` type), if it is there.
    fn parsed<T>(&self, field: &'static str) -> Result<Option<T>, RecordError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        self.get(field)
            .map(|value| {
                value.parse().map_err(|e: T::Err| RecordError::Malformed {
                    field,
                    value: value.to_owned(),
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    /// A field that is JSON, if it is there.
    fn json<T: DeserializeOwned>(&self, field: &'static str) -> Result<Option<T>, RecordError> {
        self.get(field)
            .map(|value| decode_json(field, value))
            .transpose()
    }
}

/// One JSON field's value.
fn decode_json<T: DeserializeOwned>(field: &'static str, value: &str) -> Result<T, RecordError> {
    serde_json::from_str(value).map_err(|e| RecordError::Malformed {
        field,
        value: value.to_owned(),
        reason: e.to_string(),
    })
}

/// A field that must be there.
fn required<T>(field: &'static str, value: Option<T>) -> Result<T, RecordError> {
    value.ok_or(RecordError::Missing { field })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::STATUS_TRANSITION_SCRIPT;

    #[test]
    fn the_status_script_names_the_codecs_status_field() {
        for field in [BuildField::Status.name(), TaskField::Status.name()] {
            let quoted = format!("'{field}'");
            assert_eq!(
                STATUS_TRANSITION_SCRIPT.matches(&quoted).count(),
                2,
                "{field}"
            );
        }
    }

    #[test]
    fn an_error_names_the_field_and_shows_the_value_cut_short() {
        let error = RecordError::Malformed {
            field: "plan",
            value: "x".repeat(500),
            reason: "expected value".into(),
        };
        let text = error.to_string();
        assert!(text.starts_with("field `plan` holds \"xxx"), "{text}");
        assert!(
            text.ends_with("…, which does not decode: expected value"),
            "{text}"
        );
        assert!(text.len() < 200, "{text}");
        assert_eq!(
            RecordError::Missing { field: "status" }.to_string(),
            "field `status` is missing"
        );
    }
}

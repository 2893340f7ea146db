//! `.kiln.yml`, version 0: the pipeline a repository asks Kiln to run.
//!
//! ```yaml
//! steps:
//!   build:
//!     image: kiln/busybox
//!     run: make
//!   test:
//!     image: kiln/busybox
//!     needs: [build]
//!     env: { RUST_LOG: debug }
//!     timeout: 10m
//!     run:
//!       - make test
//!       - make lint
//! ```
//!
//! The file is untrusted input read from the commit under test. Every way it can be wrong is a
//! [`SpecError`] carrying the line and column to show the person who wrote it; nothing here
//! panics on any input.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// The name of the pipeline file at the root of a repository.
pub const SPEC_FILE: &str = ".kiln.yml";

/// The largest `.kiln.yml` Kiln reads. A pipeline is a page of text; anything far larger is a
/// mistake or an attack, and refusing it early keeps a planner's memory bounded.
pub const MAX_SPEC_BYTES: usize = 256 * 1024;

/// How long a step may run when its spec gives no `timeout`.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// A parsed `.kiln.yml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The steps by name. Names are unique because they are map keys.
    pub steps: BTreeMap<String, Spanned<Step>>,
}

/// One named step of the pipeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The container image the step runs in; it must already exist on the worker.
    pub image: String,
    /// The commands, run in order by `sh` in the repository's checkout; the first that fails
    /// ends the step.
    pub run: Commands,
    /// Steps that must pass before this one starts.
    #[serde(default)]
    pub needs: Vec<Spanned<String>>,
    /// Environment variables set for the commands.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// How long the step may run before it is killed and fails.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

/// The commands of a step: `run: make` or `run: [make, make test]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commands(pub Vec<String>);

impl<'de> Deserialize<'de> for Commands {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrMany;

        impl<'de> Visitor<'de> for OneOrMany {
            type Value = Commands;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a command or a list of commands")
            }

            fn visit_str<E: de::Error>(self, command: &str) -> Result<Commands, E> {
                Ok(Commands(vec![command.to_owned()]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Commands, A::Error> {
                let mut commands = Vec::new();
                while let Some(command) = seq.next_element::<String>()? {
                    commands.push(command);
                }
                Ok(Commands(commands))
            }
        }

        deserializer.deserialize_any(OneOrMany)
    }
}

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
    pub(crate) fn at(location: serde_saphyr::Location, message: impl Into<String>) -> Self {
        Self {
            line: location.line(),
            column: location.column(),
            message: message.into(),
        }
    }
}

impl Spec {
    /// Parses and validates a `.kiln.yml`.
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        if text.len() > MAX_SPEC_BYTES {
            return Err(SpecError {
                line: 0,
                column: 0,
                message: format!(
                    "the file is {} bytes; the most Kiln reads is {MAX_SPEC_BYTES}",
                    text.len()
                ),
            });
        }
        let spec: Spec = serde_saphyr::from_str(text).map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            SpecError {
                line,
                column,
                message: first_line(&e.to_string()),
            }
        })?;
        spec.validate()?;
        Ok(spec)
    }

    fn validate(&self) -> Result<(), SpecError> {
        if self.steps.is_empty() {
            return Err(SpecError {
                line: 1,
                column: 1,
                message: "`steps` is empty: there is nothing to run".into(),
            });
        }
        for (name, step) in &self.steps {
            let valid_name = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
            if !valid_name {
                return Err(SpecError::at(
                    step.referenced,
                    format!("step name `{name}` may only use letters, digits, `-` and `_`"),
                ));
            }
            if step.value.run.0.is_empty() {
                return Err(SpecError::at(
                    step.referenced,
                    format!("step `{name}` has an empty `run`"),
                ));
            }
            if step.value.image.trim().is_empty() {
                return Err(SpecError::at(
                    step.referenced,
                    format!("step `{name}` has an empty `image`"),
                ));
            }
        }
        Ok(())
    }
}

impl Step {
    /// The step's timeout, or [`DEFAULT_STEP_TIMEOUT`].
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_STEP_TIMEOUT)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> SpecError {
        Spec::parse(text).expect_err("the spec should be refused")
    }

    #[test]
    fn parses_a_full_step() {
        let spec = Spec::parse(
            "steps:\n  build:\n    image: kiln/busybox\n    run: make\n  test:\n    image: kiln/busybox\n    needs: [build]\n    env: { A: b }\n    timeout: 90s\n    run:\n      - make test\n      - make lint\n",
        )
        .expect("valid spec");
        let test = &spec.steps["test"].value;
        assert_eq!(
            test.run,
            Commands(vec!["make test".into(), "make lint".into()])
        );
        assert_eq!(test.needs[0].value, "build");
        assert_eq!(
            (
                test.needs[0].referenced.line(),
                test.needs[0].referenced.column()
            ),
            (7, 13)
        );
        assert_eq!(test.env["A"], "b");
        assert_eq!(test.timeout(), Duration::from_secs(90));
        assert_eq!(spec.steps["build"].value.timeout(), DEFAULT_STEP_TIMEOUT);
    }

    #[test]
    fn broken_inputs_name_line_and_column() {
        let check = |text: &str, line: u64, column: u64, needle: &str| {
            let e = error(text);
            assert_eq!((e.line, e.column), (line, column), "{e}");
            assert!(
                e.message.contains(needle),
                "`{}` should mention `{needle}`",
                e.message
            );
        };
        // A tab where YAML wants spaces.
        check("steps:\n  a:\n\timage: x\n", 3, 2, "tabs");
        // Unclosed flow sequence.
        check(
            "steps:\n  a:\n    image: x\n    run: [make\n",
            4,
            10,
            "unclosed bracket",
        );
        // A misspelt key is refused, not ignored.
        check(
            "steps:\n  a:\n    image: x\n    runs: make\n",
            4,
            5,
            "unknown field `runs`",
        );
        // A field of the wrong shape.
        check(
            "steps:\n  a:\n    image: x\n    run: { make: 1 }\n",
            4,
            10,
            "command",
        );
        check(
            "steps:\n  a:\n    image: x\n    run: make\n    timeout: soon\n",
            5,
            5,
            "duration",
        );
        check("steps:\n  a:\n    run: make\n", 3, 5, "image");
        check("steps: {}\n", 1, 1, "empty");
        check("steps:\n  a b:\n    image: x\n    run: make\n", 3, 5, "a b");
        check(
            "steps:\n  a:\n    image: x\n    run: []\n",
            3,
            5,
            "empty `run`",
        );
    }

    #[test]
    fn refuses_oversized_files() {
        let e = error(&"#".repeat(MAX_SPEC_BYTES + 1));
        assert!(e.message.contains("most Kiln reads"), "{e}");
    }

    #[test]
    fn error_text_names_the_file() {
        let e = SpecError {
            line: 4,
            column: 2,
            message: "bad".into(),
        };
        assert_eq!(e.to_string(), ".kiln.yml line 4, column 2: bad");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,200}") {
            let _ = Spec::parse(&text);
        }

        #[test]
        fn never_panics_on_yamlish_input(text in "(steps|image|run|needs|[:\\-\\[\\]{} \n]|a|b){0,60}") {
            let _ = Spec::parse(&text);
        }
    }
}

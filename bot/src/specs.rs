//! Pipelines read lately, parsed. Most commits of a repository carry the same `.kiln.yml`,
//! and parsing it (YAML, then every check) costs more than the rest of planning a build, so
//! a text parsed once is not parsed again while it is kept.

use std::sync::Arc;

use kiln_shared::spec::{Spec, SpecError};
use sha2::{Digest, Sha256};

use crate::kept::Kept;

/// What the parsed pipelines kept may weigh, by their texts' sizes times
/// [`PARSED_PER_TEXT_BYTE`].
const KEPT_BYTES: u64 = 4 * 1024 * 1024;

/// About how many bytes a pipeline takes parsed per byte of its text (its names, commands
/// and maps, each an allocation of its own).
const PARSED_PER_TEXT_BYTE: usize = 4;

/// Parsed pipelines by the SHA-256 of their text; cheap to clone.
#[derive(Debug, Clone)]
pub struct Specs(Kept<[u8; 32], Arc<Spec>>);

impl Default for Specs {
    fn default() -> Self {
        Self(Kept::new(KEPT_BYTES, 4 * 1024))
    }
}

impl Specs {
    /// What the parsed pipelines kept weigh, by their texts.
    pub fn kept(&self) -> u64 {
        self.0.bytes()
    }

    /// `text` parsed, or why it cannot be used (which is not kept: it is read again and
    /// explained again each time).
    pub fn parse(&self, text: &str) -> Result<Arc<Spec>, SpecError> {
        let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        if let Some(spec) = self.0.get(&digest) {
            return Ok(spec);
        }
        let spec = Arc::new(Spec::parse(text)?);
        self.0
            .insert(digest, spec.clone(), text.len() * PARSED_PER_TEXT_BYTE);
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_text_is_parsed_once_and_a_broken_one_every_time() {
        let specs = Specs::default();
        let text = "steps:\n  t:\n    runner: shell\n    run: 'true'\n";
        let first = specs.parse(text).expect("a spec");
        let again = specs.parse(text).expect("a spec");
        assert!(Arc::ptr_eq(&first, &again), "kept");
        let other = specs
            .parse("steps:\n  u:\n    runner: shell\n    run: 'true'\n")
            .expect("a spec");
        assert!(!Arc::ptr_eq(&first, &other));
        assert!(other.steps.contains_key("u"));
        let broken = "steps:\n  t:\n    runs: make\n";
        for _ in 0..2 {
            let error = specs.parse(broken).expect_err("broken");
            assert_eq!(error.line, 3, "{error}");
        }
    }

    #[test]
    fn what_is_kept_is_bounded_by_bytes() {
        let specs = Specs::default();
        let padding = "#".repeat(64 * 1024);
        for i in 0..200 {
            specs
                .parse(&format!(
                    "{padding}\nsteps:\n  t{i}:\n    runner: shell\n    run: 'true'\n"
                ))
                .expect("a spec");
        }
        assert!(specs.0.bytes() <= KEPT_BYTES, "{}", specs.0.bytes());
        assert!(specs.0.entries() < 200);
    }
}

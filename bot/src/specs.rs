//! Pipelines read lately, parsed. Most commits of a repository carry the same `.kiln.yml`,
//! and parsing it (YAML, then every check) costs more than the rest of planning a build, so
//! a text parsed once is not parsed again while it is kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use kiln_shared::spec::{Spec, SpecError};
use sha2::{Digest, Sha256};

/// How many parsed pipelines are kept; past that the kept ones are dropped.
const KEPT: usize = 64;

/// Parsed pipelines by the SHA-256 of their text; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Specs(Arc<Mutex<HashMap<[u8; 32], Arc<Spec>>>>);

impl Specs {
    /// `text` parsed, or why it cannot be used (which is not kept: it is read again and
    /// explained again each time).
    pub fn parse(&self, text: &str) -> Result<Arc<Spec>, SpecError> {
        let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        if let Some(spec) = self.kept().get(&digest) {
            return Ok(spec.clone());
        }
        let spec = Arc::new(Spec::parse(text)?);
        let mut kept = self.kept();
        if kept.len() >= KEPT {
            kept.clear();
        }
        kept.insert(digest, spec.clone());
        Ok(spec)
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Arc<Spec>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
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
    fn no_more_than_are_kept_are_kept() {
        let specs = Specs::default();
        for i in 0..KEPT + 1 {
            specs
                .parse(&format!(
                    "steps:\n  t{i}:\n    runner: shell\n    run: 'true'\n"
                ))
                .expect("a spec");
        }
        assert!(specs.kept().len() <= KEPT);
    }
}

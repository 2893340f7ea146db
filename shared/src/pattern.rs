//! Branch and path patterns (`*` within a path segment, `**` across them), as `when:`,
//! subscriptions and permissions use them.
//!
//! Compiling a pattern builds a regular expression, which costs far more than matching with
//! it, and the same few patterns are matched for every build. So each is compiled once and
//! kept, up to [`KEPT`] of them.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};

use globset::{Glob, GlobBuilder, GlobMatcher};

/// How many compiled patterns of each kind are kept; past that the kept ones are dropped
/// and compiled again as they are used.
const KEPT: usize = 1024;

/// Whether `branch` matches `pattern`. A pattern that does not compile matches nothing.
pub fn branch_matches(pattern: &str, branch: &str) -> bool {
    with_compiled(&BRANCHES, pattern, branch_glob, |m| m.is_match(branch))
}

/// Whether any of `paths` matches `pattern`, where `*` stops at a `/`. A pattern that does
/// not compile matches nothing.
pub fn any_path_matches(pattern: &str, paths: &[String]) -> bool {
    with_compiled(&PATHS, pattern, path_glob, |m| {
        paths.iter().any(|path| m.is_match(path))
    })
}

/// Whether `pattern` is a pattern [`branch_matches`] can use.
pub fn is_branch_pattern(pattern: &str) -> bool {
    branch_glob(pattern).is_ok()
}

/// `pattern` as a branch pattern, or why it is not one.
pub(crate) fn branch_glob(pattern: &str) -> Result<Glob, globset::Error> {
    Glob::new(pattern)
}

/// `pattern` as a path pattern, or why it is not one.
pub(crate) fn path_glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern).literal_separator(true).build()
}

/// Compiled patterns of one kind, by their text; `None` for one that does not compile.
type Kept = LazyLock<Mutex<HashMap<String, Option<GlobMatcher>>>>;

static BRANCHES: Kept = LazyLock::new(Mutex::default);
static PATHS: Kept = LazyLock::new(Mutex::default);

/// `matches` with `pattern` compiled by `glob`, compiling it only if it is not kept.
fn with_compiled(
    kept: &Kept,
    pattern: &str,
    glob: fn(&str) -> Result<Glob, globset::Error>,
    matches: impl FnOnce(&GlobMatcher) -> bool,
) -> bool {
    let mut kept = kept.lock().unwrap_or_else(PoisonError::into_inner);
    if !kept.contains_key(pattern) {
        if kept.len() >= KEPT {
            kept.clear();
        }
        let compiled = glob(pattern).ok().map(|g| g.compile_matcher());
        kept.insert(pattern.to_owned(), compiled);
    }
    kept[pattern].as_ref().is_some_and(matches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_patterns_match_within_and_across_segments() {
        assert!(branch_matches("master", "master"));
        assert!(!branch_matches("master", "main"));
        assert!(branch_matches("release/*", "release/1.2"));
        assert!(branch_matches("*", "release/1.2"), "* spans / in a branch");
        assert!(branch_matches("feature/**", "feature/a/b"));
        // Asked again, from what was kept: the same answers.
        assert!(branch_matches("release/*", "release/1.3"));
        assert!(!branch_matches("release/*", "hotfix/1.3"));
    }

    #[test]
    fn path_patterns_stop_a_star_at_a_slash() {
        let paths = ["docs/guide/intro.md".to_owned()];
        assert!(any_path_matches("docs/**", &paths));
        assert!(!any_path_matches("docs/*", &paths));
        assert!(any_path_matches("docs/*/*.md", &paths));
        assert!(!any_path_matches("src/**", &paths));
        assert!(!any_path_matches("docs/**", &[]));
    }

    #[test]
    fn a_pattern_that_does_not_compile_matches_nothing() {
        assert!(!is_branch_pattern("release/[1"));
        assert!(!branch_matches("release/[1", "release/[1"));
        assert!(
            !branch_matches("release/[1", "release/[1"),
            "kept as not compiling"
        );
        assert!(!any_path_matches("a/[", &["a/[".to_owned()]));
    }

    #[test]
    fn more_patterns_than_are_kept_still_match() {
        for i in 0..KEPT + 10 {
            assert!(branch_matches(&format!("b{i}/*"), &format!("b{i}/x")));
        }
        assert!(branch_matches("b0/*", "b0/y"));
    }
}

//! A build's variables: `KEY=VALUE` pairs someone asked for a build with (`build acme/api
//! master DEPLOY_TO=staging`). Its tasks see them in their environment, above the step's own
//! `env` and below Kiln's; `when: { vars: … }` can test them. They are shown on the build's
//! card: they are not secrets.

use std::collections::BTreeMap;

/// No variables, for a build asked for without.
pub static NONE: BTreeMap<String, String> = BTreeMap::new();

/// The most variables one build takes.
pub const MAX_VARS: usize = 32;

/// The longest a value may be, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024;

/// Why a name is not a variable's, if it is not: letters, digits and `_`, not starting with
/// a digit, at most 64; never Kiln's own (`KILN_…`, `CI`).
pub fn check_name(name: &str) -> Result<(), String> {
    let shown: String = name.chars().take(40).collect();
    let well_formed = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !well_formed {
        return Err(format!(
            "`{shown}` is not a variable name: letters, digits and `_`, not starting with a digit"
        ));
    }
    if name.starts_with("KILN_") || name == "CI" {
        return Err(format!("`{shown}` is Kiln's own variable"));
    }
    Ok(())
}

/// Why a value is not one `name` may have, if it is not: at most [`MAX_VALUE_BYTES`].
fn check_value(name: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "the value of `{name}` is over {MAX_VALUE_BYTES} bytes"
        ));
    }
    Ok(())
}

/// `KEY=VALUE` as a variable, if the word is an assignment (`None` if it has no `=` after a
/// first character); an error if it is a bad one.
pub fn assignment(word: &str) -> Option<Result<(String, String), String>> {
    let (name, value) = word.split_once('=').filter(|(name, _)| !name.is_empty())?;
    let checked = check_name(name).and_then(|()| check_value(name, value));
    Some(checked.map(|()| (name.to_owned(), value.to_owned())))
}

/// Checks a whole set of variables: how many, and each name and value.
pub fn check(vars: &BTreeMap<String, String>) -> Result<(), String> {
    if vars.len() > MAX_VARS {
        return Err(format!("at most {MAX_VARS} variables, not {}", vars.len()));
    }
    vars.iter().try_for_each(|(name, value)| {
        check_name(name)?;
        check_value(name, value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_shell_names_and_never_kilns() {
        assert_eq!(check_name("DEPLOY_TO"), Ok(()));
        assert_eq!(check_name("_x1"), Ok(()));
        for bad in ["", "1X", "A-B", "A B", "Ü", &"A".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(
            check_name("KILN_TAG")
                .expect_err("Kiln's")
                .contains("Kiln's own")
        );
        assert!(check_name("CI").expect_err("Kiln's").contains("Kiln's own"));
    }

    #[test]
    fn an_assignment_is_a_word_with_an_equals_sign_after_a_name() {
        assert_eq!(
            assignment("DEPLOY_TO=eu=west"),
            Some(Ok(("DEPLOY_TO".into(), "eu=west".into())))
        );
        assert_eq!(
            assignment("EMPTY="),
            Some(Ok(("EMPTY".into(), String::new())))
        );
        assert_eq!(assignment("master"), None);
        assert_eq!(assignment("=x"), None);
        assert!(matches!(assignment("a-b=1"), Some(Err(_))));
        let long = format!("X={}", "v".repeat(MAX_VALUE_BYTES + 1));
        assert!(assignment(&long).is_some_and(|r| r.is_err()));
        let many: BTreeMap<String, String> = (0..=MAX_VARS)
            .map(|i| (format!("V{i}"), String::new()))
            .collect();
        assert!(check(&many).is_err());
    }
}

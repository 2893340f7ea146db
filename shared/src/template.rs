//! The small templates of `.kiln.yml`: cache keys and image build arguments.
//!
//! Two forms only: `{{ name }}` (a variable: `repo`, `branch`, `branch_slug`, `step`,
//! `platform`) and `{{ hash('path') }}` (the SHA-256 of a file of the checkout, computed by
//! the caller, which has the files). Anything else is an error the spec reports. A template
//! engine's functions take named arguments only, and `hash('Cargo.lock')` is the form people
//! know from other CI systems, so this is its own few lines.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// `kiln/<owner>/<name>/<what>`: where a repository's in-tree images (`<what>` is the
/// image's name), artifacts and cache entries are named in engines and registries.
pub fn registry_path(repo: &str, what: &str) -> String {
    format!("kiln/{}/{what}", repo_path(repo))
}

/// The repository's name made safe for such paths, one slug per segment: `Acme/My_API` →
/// `acme/my_api`; what `{{ repo }}` gives image build arguments.
pub fn repo_path(repo: &str) -> String {
    repo.split('/').map(slug).collect::<Vec<_>>().join("/")
}

/// A variable's value, made safe for image tags and file names: lowercase letters, digits,
/// `.`, `_` and `-`, at most 63 characters (`feature/Login` → `feature-login`).
pub fn slug(text: &str) -> String {
    let slug: String = text
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.' | '_' | '-') => c,
            _ => '-',
        })
        .take(63)
        .collect();
    let slug = slug.trim_matches(['-', '.']);
    if slug.is_empty() {
        "x".to_owned()
    } else {
        slug.to_owned()
    }
}

/// A branch's name as image tags and cache directories use it (`{{ branch_slug }}`): its
/// [`slug`] and the start of the SHA-256 of the name itself (`feature/x` →
/// `feature-x-5f1e2a9c0b7d`). The slug alone would be shared by `Master`, `master-` and
/// `master`, letting one branch write where another reads.
pub fn branch_slug(branch: &str) -> String {
    let hash = hex::encode(Sha256::digest(branch.as_bytes()));
    format!("{}-{}", slug(branch), &hash[..12])
}

/// Renders `text`, looking variables up in `vars` and file hashes up with `hash`.
pub fn render(
    text: &str,
    vars: &BTreeMap<&str, String>,
    hash: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("`{{{{` without `}}}}` in `{text}`"))?;
        let expression = after[..end].trim();
        out.push_str(&evaluate(expression, vars, hash)?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn evaluate(
    expression: &str,
    vars: &BTreeMap<&str, String>,
    hash: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<String, String> {
    if let Some(argument) = expression
        .strip_prefix("hash(")
        .and_then(|a| a.strip_suffix(')'))
    {
        let argument = argument.trim();
        let path = argument
            .strip_prefix('\'')
            .and_then(|a| a.strip_suffix('\''))
            .or_else(|| argument.strip_prefix('"').and_then(|a| a.strip_suffix('"')))
            .ok_or_else(|| {
                format!("`hash` takes a quoted path, as in hash('Cargo.lock'), not {argument}")
            })?;
        return hash(path);
    }
    vars.get(expression).cloned().ok_or_else(|| {
        let known: Vec<&str> = vars.keys().copied().collect();
        format!(
            "unknown `{{{{ {expression} }}}}`; known are {} and hash('path')",
            known.join(", ")
        )
    })
}

/// Checks a template's form without files: what [`crate::spec::Spec::parse`] does. `hash()`
/// is allowed only with `hashes`, and only of a path inside the repository.
pub fn check(text: &str, names: &[&str], hashes: bool) -> Result<(), String> {
    let vars = names.iter().map(|n| (*n, String::new())).collect();
    render(text, &vars, &mut |path| {
        if !hashes {
            return Err("`hash()` cannot be used here".into());
        }
        let inside = !path.is_empty()
            && !path.starts_with('/')
            && !path.split(['/', '\\']).any(|part| part == "..");
        if inside {
            Ok(String::new())
        } else {
            Err(format!(
                "`hash('{path}')` must name a file inside the repository"
            ))
        }
    })
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_variables_and_hashes() {
        let vars = BTreeMap::from([
            ("repo", "acme/api".to_owned()),
            ("branch_slug", "main".into()),
        ]);
        let mut asked = Vec::new();
        let text = render(
            "kiln/{{ repo }}/base:{{branch_slug}}-{{ hash('Cargo.lock') }}-{{ hash(\"a b\") }}",
            &vars,
            &mut |path| {
                asked.push(path.to_owned());
                Ok("h".into())
            },
        )
        .expect("renders");
        assert_eq!(text, "kiln/acme/api/base:main-h-h");
        assert_eq!(asked, ["Cargo.lock", "a b"]);
        assert_eq!(
            render("plain", &vars, &mut |_| Ok(String::new())),
            Ok("plain".into())
        );
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        let names = ["repo", "step"];
        assert!(
            check("{{ nope }}", &names, true)
                .expect_err("unknown")
                .contains("known are repo, step")
        );
        assert!(
            check("{{ hash(Cargo.lock) }}", &names, true)
                .expect_err("unquoted")
                .contains("quoted")
        );
        assert!(
            check("{{ repo", &names, true)
                .expect_err("open")
                .contains("without")
        );
        assert_eq!(check("{{ step }}", &names, true), Ok(()));
        assert_eq!(check("{{ hash('a/Cargo.lock') }}", &names, true), Ok(()));
        for outside in ["/etc/kiln/secrets/TOKEN", "../x", "a/../../x", ""] {
            let text = format!("{{{{ hash('{outside}') }}}}");
            let why = check(&text, &names, true).expect_err(outside);
            assert!(why.contains("inside the repository"), "{why}");
        }
        assert!(
            check("{{ hash('a') }}", &names, false)
                .expect_err("no hashes here")
                .contains("cannot be used here")
        );
    }

    #[test]
    fn slugs_are_safe_in_tags() {
        assert_eq!(slug("feature/Login_2"), "feature-login_2");
        assert_eq!(slug("..."), "x");
        assert_eq!(slug(&"a".repeat(100)).len(), 63);
        let master = branch_slug("master");
        assert!(master.starts_with("master-") && master.len() == "master-".len() + 12);
        for other in ["Master", "master-", "master@", "MASTER"] {
            assert_ne!(branch_slug(other), master, "{other}");
        }
        assert_ne!(branch_slug("feature/x"), branch_slug("feature-x"));
        assert!(branch_slug(&"b".repeat(200)).len() <= 63 + 13);
    }
}

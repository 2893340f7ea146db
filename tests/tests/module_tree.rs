//! Modules form a tree: in each crate, no module imports, through any chain of `crate::`
//! paths, a module that imports it back. A handler that needs its dispatcher, or two modules
//! that need each other, mean a third, smaller module is missing. Test code is left out:
//! a test may use whatever it checks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates whose modules must form a tree.
const CRATES: [&str; 4] = ["bot", "worker", "shared", "io"];

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source folder") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The module a file under `src` is: `notify::cards` for `src/notify/cards.rs`.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file
        .strip_prefix(src)
        .expect("under src")
        .with_extension("");
    let parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .filter(|p| p != "mod")
        .collect();
    match parts.as_slice() {
        [only] if only == "lib" || only == "main" => "crate".to_owned(),
        _ => parts.join("::"),
    }
}

/// `text` without comments, and without what follows its first `#[cfg(test)]`.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths a use tree starting at `rest` names (`a::b`, `{a, b::{c, d}}`).
fn paths(prefix: &str, rest: &str, out: &mut Vec<String>) {
    let rest = rest.trim_start();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    paths(prefix, &inner[start..i], out);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    paths(prefix, &inner[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        return;
    }
    let name: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if name.is_empty() || name == "self" {
        if !prefix.is_empty() {
            out.push(prefix.to_owned());
        }
        return;
    }
    let path = if prefix.is_empty() {
        name.clone()
    } else {
        format!("{prefix}::{name}")
    };
    match rest[name.len()..].strip_prefix("::") {
        Some(after) => paths(&path, after, out),
        None => out.push(path),
    }
}

/// The modules of `modules` that `text` names through `crate::` paths, by the longest
/// module each path starts with.
fn imports(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let before = text[..i].chars().last();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        paths("", &text[i + "crate::".len()..], &mut found);
    }
    found
        .iter()
        .filter_map(|path| {
            let parts: Vec<&str> = path.split("::").collect();
            (1..=parts.len())
                .rev()
                .map(|n| parts[..n].join("::"))
                .find(|m| modules.contains(m))
        })
        .collect()
}

/// The cycles among `edges`: each strongly connected set of more than one module.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    let reaches = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_owned()];
        while let Some(next) = todo.pop() {
            for to in edges.get(&next).into_iter().flatten() {
                if seen.insert(to.clone()) {
                    todo.push(to.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&String, BTreeSet<String>> =
        edges.keys().map(|m| (m, reaches(m))).collect();
    let mut found: Vec<BTreeSet<String>> = Vec::new();
    for (module, reached) in &reach {
        if !reached.contains(*module) || found.iter().any(|c| c.contains(*module)) {
            continue;
        }
        let cycle: BTreeSet<String> = reached
            .iter()
            .filter(|other| reach[other].contains(*module))
            .cloned()
            .collect();
        found.push(cycle);
    }
    found
}

#[test]
fn every_crates_modules_form_a_tree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut report = Vec::new();
    for krate in CRATES {
        let src = root.join(krate).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
        let mut edges = BTreeMap::new();
        for file in &files {
            let module = module_of(&src, file);
            let text = code(&std::fs::read_to_string(file).expect("a source file"));
            let mut named = imports(&text, &modules);
            named.remove(&module);
            edges.insert(module, named);
        }
        for cycle in cycles(&edges) {
            let chain: Vec<String> = cycle
                .iter()
                .map(|m| {
                    let into: Vec<&String> = edges[m].intersection(&cycle).collect();
                    format!("  {m} -> {into:?}")
                })
                .collect();
            report.push(format!("{krate}:\n{}", chain.join("\n")));
        }
    }
    assert!(report.is_empty(), "import cycles:\n{}", report.join("\n"));
}

#[test]
fn use_trees_are_read_whole() {
    let modules: BTreeSet<String> = ["app", "notify", "notify::cards", "store", "vendors::slack"]
        .map(str::to_owned)
        .into();
    let text = "use crate::{app::App, notify::{cards, Buttons}};\nlet x = crate::store::Store::new();\nuse crate::vendors::slack::{self, escape};";
    let found: Vec<String> = imports(text, &modules).into_iter().collect();
    assert_eq!(
        found,
        ["app", "notify", "notify::cards", "store", "vendors::slack"]
    );
    let edges: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(m, to)| (m.to_owned(), to.into_iter().map(str::to_owned).collect()))
    .collect();
    let found = cycles(&edges);
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0],
        ["a", "b", "c"].map(str::to_owned).into_iter().collect()
    );
}

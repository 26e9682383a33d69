//! The runtime's structure, checked on every test run: no circle of source
//! files that import each other (through `crate::`, `super::` or `self::`
//! paths), none among its top-level folders and root files either, and no
//! source file over 600 lines (docs/architecture.md,
//! "Dependency order").

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, by module path (`["transport", "local",
/// "wire"]`; `lib.rs` is `[]`, a folder's `mod.rs` is the folder).
fn modules(root: &Path, dir: &Path, out: &mut BTreeMap<Vec<String>, PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            modules(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(parts.last().map(String::as_str), Some("lib" | "mod")) {
                parts.pop();
            }
            out.insert(parts, path);
        }
    }
}

/// The text without its unit tests (`#[cfg(test)] mod tests { ... }` to the
/// end of the file), which may import anything.
fn without_tests(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    }
}

/// The text without its comment lines: comments and doc comments name
/// paths (doc links) without importing them.
fn without_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path that starts with `crate`, `super` or `self`, as its segments,
/// including those inside `use x::{a, b::c}` groups (one level deep).
fn paths(text: &str) -> Vec<(String, Vec<String>)> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let at_word_start = i == 0 || !is_ident(bytes[i - 1]);
        let rest: String = bytes[i..bytes.len().min(i + 7)].iter().collect();
        let base = ["crate::", "super::", "self::"]
            .into_iter()
            .find(|b| at_word_start && rest.starts_with(b));
        let Some(base) = base else {
            i += 1;
            continue;
        };
        i += base.len();
        let mut segs = Vec::new();
        loop {
            let start = i;
            while i < bytes.len() && is_ident(bytes[i]) {
                i += 1;
            }
            if i > start {
                segs.push(bytes[start..i].iter().collect::<String>());
            }
            if i + 2 < bytes.len()
                && bytes[i] == ':'
                && bytes[i + 1] == ':'
                && is_ident(bytes[i + 2])
            {
                i += 2;
                continue;
            }
            if i + 2 < bytes.len() && bytes[i] == ':' && bytes[i + 1] == ':' && bytes[i + 2] == '{'
            {
                // A group: every item names its own path.
                let close = bytes[i..]
                    .iter()
                    .position(|&c| c == '}')
                    .map_or(bytes.len(), |p| i + p);
                let group: String = bytes[i + 3..close].iter().collect();
                for item in group.split(',') {
                    let head: Vec<String> = item
                        .split("::")
                        .map(|s| s.split_whitespace().next().unwrap_or("").to_string())
                        .filter(|s| !s.is_empty() && s.chars().all(is_ident))
                        .take(2)
                        .collect();
                    if !head.is_empty() {
                        let mut full = segs.clone();
                        full.extend(head);
                        out.push((base.trim_end_matches("::").to_string(), full));
                    }
                }
                i = close;
                segs.clear();
            }
            break;
        }
        if !segs.is_empty() {
            out.push((base.trim_end_matches("::").to_string(), segs));
        }
    }
    out
}

/// The longest module path that is a file.
fn resolve(mods: &BTreeMap<Vec<String>, PathBuf>, path: &[String]) -> Vec<String> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| mods.contains_key(p))
        .unwrap_or_default()
}

/// The import graph of the runtime's files: module path -> the modules it
/// imports (the crate root, the facade, neither imports nor is imported).
type Graph = BTreeMap<Vec<String>, BTreeSet<Vec<String>>>;

fn import_graph(root: &Path) -> (BTreeMap<Vec<String>, PathBuf>, Graph) {
    let mut mods = BTreeMap::new();
    modules(root, root, &mut mods);
    let mut graph = Graph::new();
    for (m, file) in &mods {
        let text = std::fs::read_to_string(file).unwrap();
        let mut edges = BTreeSet::new();
        for (base, segs) in paths(&without_comments(without_tests(&text))) {
            let full: Vec<String> = match base.as_str() {
                "crate" => segs,
                "self" => m.iter().cloned().chain(segs).collect(),
                _ => m[..m.len().saturating_sub(1)]
                    .iter()
                    .cloned()
                    .chain(segs)
                    .collect(),
            };
            let target = resolve(&mods, &full);
            if &target != m && !target.is_empty() && !m.is_empty() {
                edges.insert(target);
            }
        }
        graph.insert(m.clone(), edges);
    }
    (mods, graph)
}

/// The nodes of `graph` that reach themselves.
fn in_circles(graph: &Graph) -> Vec<&Vec<String>> {
    let mut circles = Vec::new();
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&Vec<String>> = graph[start].iter().collect();
        while let Some(m) = stack.pop() {
            if m == start {
                circles.push(start);
                break;
            }
            if seen.insert(m) {
                stack.extend(graph.get(m).into_iter().flatten());
            }
        }
    }
    circles
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (mods, graph) = import_graph(&root);
    let circles: Vec<String> = in_circles(&graph)
        .into_iter()
        .map(|m| mods[m].strip_prefix(&root).unwrap().display().to_string())
        .collect();
    assert!(
        circles.is_empty(),
        "these files import a module that imports them back: {circles:?}"
    );
}

/// The top-level folders and root files form a line: `call/` (the caller's
/// side and the transport contract) below `transport/` (the data paths)
/// below the router, never a folder that imports one that imports it back
/// (docs/architecture.md, "Dependency order").
#[test]
fn no_top_level_folder_imports_one_that_imports_it_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (_, files) = import_graph(&root);
    let mut folders = Graph::new();
    for (m, targets) in &files {
        let top = m[..m.len().min(1)].to_vec();
        let edges = folders.entry(top.clone()).or_default();
        edges.extend(
            targets
                .iter()
                .map(|t| t[..t.len().min(1)].to_vec())
                .filter(|t| *t != top),
        );
    }
    let circles: Vec<String> = in_circles(&folders)
        .into_iter()
        .map(|m| m.join("/"))
        .collect();
    assert!(
        circles.is_empty(),
        "these top-level modules import one that imports them back: {circles:?}"
    );
}

#[test]
fn no_source_file_is_over_600_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut mods = BTreeMap::new();
    modules(&root, &root, &mut mods);
    let long: Vec<String> = mods
        .values()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).unwrap().lines().count();
            (lines > 600).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these files: {long:?}");
}

#[test]
fn the_checker_sees_imports() {
    let found =
        paths("use crate::call::{CallMeta, route::Route};\nlet x = super::wire::Header::new();");
    assert!(found.contains(&("crate".into(), vec!["call".into(), "CallMeta".into()])));
    assert!(found.contains(&(
        "crate".into(),
        vec!["call".into(), "route".into(), "Route".into()]
    )));
    assert!(found.contains(&(
        "super".into(),
        vec!["wire".into(), "Header".into(), "new".into()]
    )));
}

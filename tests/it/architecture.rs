//! The module graph of `src/`: which top-level module uses which (`crate::NAME` paths), with no
//! circles, and the membership core depending on the etcd client layer alone. A new arrow that
//! closes a circle fails here, naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// Top-level module → the top-level modules its files name with `crate::`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(&src) {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative.components().next().unwrap().as_os_str().to_string_lossy();
        let module = top.trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let uses = graph.entry(module.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let name: String = text[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != module && name.chars().next().unwrap().is_lowercase() {
                uses.insert(name);
            }
        }
    }
    graph
}

/// A circle through `from`, if there is one, as the path walked.
fn circle(
    graph: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    at: &str,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    for next in graph.get(at).into_iter().flatten() {
        if next == from {
            let mut found = path.clone();
            found.push(next.clone());
            return Some(found);
        }
        if !path.contains(next) {
            path.push(next.clone());
            if let Some(found) = circle(graph, from, next, path) {
                return Some(found);
            }
            path.pop();
        }
    }
    None
}

#[test]
fn modules_of_src_form_no_circle() {
    let graph = graph();
    assert!(graph.contains_key("membership") && graph.contains_key("controller"), "{graph:?}");
    for module in graph.keys() {
        let mut path = vec![module.clone()];
        if let Some(found) = circle(&graph, module, module, &mut path) {
            panic!("a circle in src/: {}", found.join(" → "));
        }
    }
}

#[test]
fn the_membership_core_depends_on_the_etcd_client_layer_alone() {
    let graph = graph();
    let uses: Vec<&String> = graph["membership"].iter().collect();
    assert_eq!(uses, ["etcd"], "membership must not reach into adapters, controllers or the CLI");
}

//! The runtime's module layers, checked: a module imports only from the layers below it, so the import
//! graph has no circles (docs/ARCHITECTURE.md states the same order as absences).
//!
//! The check reads the `crate::<module>` paths of each source file (test files and inline test modules
//! excluded; `lib.rs` is only the doors). It is a test, not a build step: a new edge upward fails it.

use std::collections::BTreeMap;
use std::path::Path;

/// The layers, lowest first. A module may use modules of lower layers only, never its own layer's others.
const LAYERS: &[&[&str]] = &[
    // The basics: errors, the boxed future, where a database lives, ids, HTTP values, deploys.
    &["error", "future", "location"],
    // A WebSocket end, which a response can carry.
    &["websocket"],
    &["id", "http", "deploy"],
    // What the embedder provides, and the messages between nodes.
    &["world", "wire"],
    // Storage, the directory of owners and the calls between nodes, then what runs beside them: the gates and the alarm index.
    &["storage", "directory", "rpc"],
    &["gate", "alarm", "storage_node", "replication", "stream"],
    &["config"],
    // The event loop's turns and critical sections.
    &["turn", "hibernation"],
    // The user's API, then the instance that runs it.
    &["state", "namespace"],
    &["env"],
    &["object"],
    &["instance"],
    // The host: routing, containers, alarm runs, the builder.
    &["host"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The upward or sideways edges of `edges` (module → the modules it uses), and the modules no layer names.
fn violations(edges: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut found = Vec::new();
    for (from, tos) in edges {
        let Some(lf) = layer_of(from) else {
            found.push(format!("{from} is in no layer"));
            continue;
        };
        for to in tos {
            match layer_of(to) {
                None => found.push(format!("{from} uses {to}, which is in no layer")),
                Some(lt) if lt >= lf => found.push(format!("{from} (layer {lf}) uses {to} (layer {lt})")),
                Some(_) => {}
            }
        }
    }
    found
}

/// The source of a file without its comments and inline test modules.
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests {").next().unwrap_or("");
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == "tests.rs"
        || name.ends_with("_tests.rs")
        || path.components().any(|c| c.as_os_str() == "conformance")
}

/// Adds the modules the code under `path` (a file, or a directory of them) uses to `uses`.
fn collect(path: &Path, module: &str, uses: &mut Vec<String>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            collect(&entry.unwrap().path(), module, uses);
        }
        return;
    }
    if path.extension().is_none_or(|e| e != "rs") || is_test_file(path) {
        return;
    }
    let code = code_of(&std::fs::read_to_string(path).unwrap());
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let name: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
        if !name.is_empty() && name != module {
            uses.push(name);
        }
    }
}

/// Module → the modules its code uses, from the sources.
fn edges() -> BTreeMap<String, Vec<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut edges: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let module = path.file_stem().unwrap().to_str().unwrap().to_string();
        if module == "lib" || module == "layers" {
            continue;
        }
        let uses = edges.entry(module.clone()).or_default();
        collect(&path, &module, uses);
        uses.sort();
        uses.dedup();
    }
    edges
}

#[test]
fn every_module_uses_only_lower_layers() {
    let edges = edges();
    assert!(edges.len() >= 15, "the check reads the modules: {edges:?}");
    assert!(edges["host"].contains(&"namespace".to_string()), "the check sees edges: {edges:?}");
    let found = violations(&edges);
    assert!(found.is_empty(), "import edges against the layers: {found:#?}");
}

/// Negative control: the circle this check exists for (namespace taking its types out of host) is found.
#[test]
fn an_upward_edge_is_reported() {
    let mut edges = edges();
    edges.get_mut("namespace").unwrap().push("host".to_string());
    let found = violations(&edges);
    assert_eq!(found, vec!["namespace (layer 8) uses host (layer 12)".to_string()]);
}

//! The tidy test: mechanical rules of the house, checked over every Rust source file of the workspace
//! (rust-analyzer's habit). Each rule names the file and line that breaks it and says what to do.
//!
//! - Every source file opens with a `//!` doc saying what it is.
//! - A spawned task that is detached (`drop(…spawn…(…))` or `let _ = …spawn…(…)`) has a comment, on its line
//!   or just above, saying why it may outlive its caller: a fire-and-forget task is where work silently gets
//!   lost or outlives what it belongs to.
//! - No `Default` for a type that holds a seed: a default seed would make runs that never chose one look
//!   chosen, and hide which seed they ran.
//! - Every `select!` is `biased;`: an unbiased one picks its branch order from tokio's thread RNG, which is
//!   seeded from a process-wide counter, so a second run of a seed in one process polled its branches in
//!   another order (the object-cluster scenario diverged so).
//!
//! Rules that clippy can check (unordered maps, wall time, threads) are in `clippy.toml`, not here.

use std::path::{Path, PathBuf};

/// The directories whose Rust files the rules cover, from the workspace root.
const SOURCE_DIRS: [&str; 8] = ["sim", "runtime", "scenarios", "xtask", "src", "tests", "benches", "fuzz"];

/// How far above a detached spawn its comment may stand (the lines of a multi-line call's opening).
const DETACHED_COMMENT_LINES_ABOVE: usize = 3;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Every `.rs` file under the source directories, in order, skipping build output.
fn rust_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if p.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    walk(&p, out);
                }
            } else if name.ends_with(".rs") {
                out.push(p);
            }
        }
    }
    let root = workspace_root();
    let mut out = Vec::new();
    for d in SOURCE_DIRS {
        walk(&root.join(d), &mut out);
    }
    assert!(out.len() > 50, "the tidy test found only {} Rust files under {}", out.len(), root.display());
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(workspace_root()).unwrap_or(path).display().to_string()
}

/// The violations of the `//!` rule in one file's text.
fn missing_module_doc(text: &str) -> bool {
    let first = text.lines().map(str::trim).find(|l| !l.is_empty());
    !first.is_some_and(|l| l.starts_with("//!"))
}

/// True if `line` detaches a spawned task.
fn detaches_a_spawn(line: &str) -> bool {
    let code = line.split("//").next().unwrap_or("").trim_start();
    let detached = code.starts_with("drop(") || code.starts_with("let _ =");
    detached && code.contains("spawn")
}

/// The 1-based lines of `text` that detach a spawned task without a comment saying why.
fn uncommented_detached_spawns(text: &str) -> Vec<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !detaches_a_spawn(line) {
            continue;
        }
        let same_line = line.contains("//");
        let above = lines[i.saturating_sub(DETACHED_COMMENT_LINES_ABOVE)..i]
            .iter()
            .any(|l| l.trim_start().starts_with("//"));
        if !same_line && !above {
            out.push(i + 1);
        }
    }
    out
}

/// How many lines after a `select!` its `biased;` may come.
const BIASED_LINES_BELOW: usize = 3;

/// The lines (from 1) of `text` that open a `select!` without `biased;` in the next lines.
fn unbiased_selects(text: &str) -> Vec<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        if !code.contains("select!") || code.contains("select_biased!") {
            continue;
        }
        let end = (i + 1 + BIASED_LINES_BELOW).min(lines.len());
        if !lines[i..end].iter().any(|l| l.split("//").next().unwrap_or("").contains("biased;")) {
            out.push(i + 1);
        }
    }
    out
}

/// The names of the structs in `text` that hold a seed (a field named `…seed…` or of type `Seed`).
fn structs_holding_a_seed(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<(String, usize)> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some((name, depth)) = &mut current {
            let holds = t.split_once(':').is_some_and(|(field, ty)| {
                let field = field.trim().trim_start_matches("pub(crate) ").trim_start_matches("pub ");
                // A seed: a field named for one (`seed`, `base_seed`), or of a type that holds one (`Seed`,
                // `Option<Seed>`, `Vec<Seed>`); not a count of seeds (`seeds: u64`).
                let ty = ty.trim().trim_end_matches(',');
                let named = field == "seed" || field.ends_with("_seed") || field.starts_with("seed_");
                let typed = ty.split(|c: char| !c.is_alphanumeric() && c != '_').any(|w| w == "Seed");
                !field.contains(' ') && (named || typed)
            });
            if holds && !out.contains(name) {
                out.push(name.clone());
            }
            *depth += t.matches('{').count();
            *depth = depth.saturating_sub(t.matches('}').count());
            if *depth == 0 {
                current = None;
            }
            continue;
        }
        let decl = t.trim_start_matches("pub(crate) ").trim_start_matches("pub ");
        if let Some(rest) = decl.strip_prefix("struct ") {
            if t.ends_with('{') {
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                current = Some((name, 1));
            }
        }
    }
    out
}

/// True if `text` gives the struct `name` a `Default` (derived just above its declaration, or implemented).
fn has_default(text: &str, name: &str) -> bool {
    if text.contains(&format!("impl Default for {name} "))
        || text.contains(&format!("impl Default for {name}{{"))
    {
        return true;
    }
    let lines: Vec<&str> = text.lines().collect();
    lines.iter().enumerate().any(|(i, l)| {
        let decl = l.trim().trim_start_matches("pub(crate) ").trim_start_matches("pub ");
        let declares = decl.strip_prefix("struct ").is_some_and(|r| {
            r.starts_with(name) && !r[name.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
        });
        declares
            && lines[..i]
                .iter()
                .rev()
                .take_while(|a| a.trim_start().starts_with("#[") || a.trim_start().starts_with("///"))
                .any(|a| a.contains("derive(") && a.contains("Default"))
    })
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    let bad: Vec<String> = rust_files()
        .into_iter()
        .filter(|p| missing_module_doc(&std::fs::read_to_string(p).expect("readable source")))
        .map(|p| relative(&p))
        .collect();
    assert!(
        bad.is_empty(),
        "these files do not open with a `//!` doc saying what they are:\n{}",
        bad.join("\n")
    );
}

#[test]
fn every_detached_spawn_says_why_it_may_outlive_its_caller() {
    let mut bad = Vec::new();
    for p in rust_files() {
        let text = std::fs::read_to_string(&p).expect("readable source");
        for line in uncommented_detached_spawns(&text) {
            bad.push(format!("{}:{line}", relative(&p)));
        }
    }
    assert!(
        bad.is_empty(),
        "a detached spawn needs a comment (on its line or the {DETACHED_COMMENT_LINES_ABOVE} above) saying why \
         it may outlive its caller:\n{}",
        bad.join("\n")
    );
}

#[test]
fn every_select_is_biased() {
    let mut bad = Vec::new();
    for p in rust_files() {
        if relative(&p).ends_with("tidy.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&p).expect("readable source");
        for line in unbiased_selects(&text) {
            bad.push(format!("{}:{line}", relative(&p)));
        }
    }
    assert!(
        bad.is_empty(),
        "a `select!` must start with `biased;` (within {BIASED_LINES_BELOW} lines): an unbiased one draws its \
         branch order from tokio's thread RNG, which differs between runs of a seed in one process:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_biased_select_rule_finds_an_unbiased_select() {
    let unbiased =
        "async fn f() {\n    tokio::select! {\n        _ = a() => {}\n        _ = b() => {}\n    }\n}\n";
    assert_eq!(unbiased_selects(unbiased), vec![2]);
    let biased =
        "    madsim_tokio::select! {\n        // why\n        biased;\n        _ = a() => {}\n    }\n";
    assert!(unbiased_selects(biased).is_empty());
    let futures = "    futures::select_biased! {\n        _ = a() => {}\n    }\n";
    assert!(unbiased_selects(futures).is_empty());
}

#[test]
fn no_type_holding_a_seed_has_a_default() {
    let mut bad = Vec::new();
    for p in rust_files() {
        let text = std::fs::read_to_string(&p).expect("readable source");
        for name in structs_holding_a_seed(&text) {
            if has_default(&text, &name) {
                bad.push(format!("{}: {name}", relative(&p)));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "these types hold a seed and have a Default, which would hide the seed a run used:\n{}",
        bad.join("\n")
    );
}

// The rules' negative controls: each check finds the violation it is meant to find.

#[test]
fn the_module_doc_rule_finds_a_file_without_one() {
    assert!(missing_module_doc("use std::fmt;\n"));
    assert!(missing_module_doc("/// an item doc, not a module doc\nfn f() {}\n"));
    assert!(!missing_module_doc("\n//! What this is.\nuse std::fmt;\n"));
}

#[test]
fn the_detached_spawn_rule_finds_a_spawn_without_a_comment() {
    let bare = "fn f() {\n    let x = 1;\n    drop(madsim::task::spawn(async move {}));\n}\n";
    assert_eq!(uncommented_detached_spawns(bare), vec![3]);
    let ignored = "fn f() {\n    let _ = tokio::spawn(work());\n}\n";
    assert_eq!(uncommented_detached_spawns(ignored), vec![2]);
    let said =
        "fn f() {\n    // Detached on purpose: it ends with the gate.\n    drop(spawn(watchdog()));\n}\n";
    assert!(uncommented_detached_spawns(said).is_empty());
    let trailing = "    drop(spawn(task)); // ends when the run ends\n";
    assert!(uncommented_detached_spawns(trailing).is_empty());
    let awaited = "    let handle = spawn(task);\n    drop(handle.await);\n";
    assert!(uncommented_detached_spawns(awaited).is_empty());
}

#[test]
fn the_seed_default_rule_finds_a_defaulted_seed() {
    let derived =
        "#[derive(Clone, Default)]\npub struct Options {\n    pub seed: u64,\n    pub rate: u32,\n}\n";
    assert_eq!(structs_holding_a_seed(derived), vec!["Options".to_string()]);
    assert!(has_default(derived, "Options"));
    let implemented = "struct RunConfig {\n    base: Seed,\n}\nimpl Default for RunConfig {\n    fn default() -> Self { todo() }\n}\n";
    assert_eq!(structs_holding_a_seed(implemented), vec!["RunConfig".to_string()]);
    assert!(has_default(implemented, "RunConfig"));
    let fine = "#[derive(Default)]\nstruct Latency {\n    min: u64,\n}\nstruct Run {\n    seed: Seed,\n}\n";
    assert_eq!(structs_holding_a_seed(fine), vec!["Run".to_string()]);
    assert!(!has_default(fine, "Run"));
    let counts = "#[derive(Default)]\nstruct Summary {\n    seeds: u64,\n    first: Option<Seed>,\n}\nstruct Plan {\n    seeds: Option<u64>,\n}\n";
    assert_eq!(structs_holding_a_seed(counts), vec!["Summary".to_string()], "a count of seeds is not a seed");
}

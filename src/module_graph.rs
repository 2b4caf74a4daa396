//! A test that the library's module graph has no cycles, as drawn in
//! docs/ARCHITECTURE.md. It reads the sources: an edge A -> B is a path in
//! A's code that names B (`crate::b::..`, `super::..`, or a child module
//! `b::..`). Units are the top-level modules, except that each module of
//! `controller/` is a unit of its own (that is where the shell's layering
//! lives); a unit's private submodules (e.g. `admission::index`) belong to it.
//! Test code is not scanned: tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The unit a module path (`controller::dispatch`, `admission::index`) belongs to.
fn unit_of(module: &[String]) -> String {
    match module {
        [] => "lib".into(),
        [first, second, ..] if first == "controller" => format!("controller::{second}"),
        [first, ..] => first.clone(),
    }
}

/// Every library source file with its module path; binaries and test files excluded.
fn modules(src: &Path) -> Vec<(Vec<String>, PathBuf)> {
    let mut out = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("a readable source directory") {
            let path = entry.expect("a directory entry").path();
            let rel: Vec<String> = path
                .strip_prefix(src)
                .expect("under src")
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            if path.is_dir() {
                if rel[0] != "bin" {
                    dirs.push(path);
                }
                continue;
            }
            let file = rel.last().expect("a file name").clone();
            let Some(stem) = file.strip_suffix(".rs") else {
                continue;
            };
            if stem == "main"
                || stem == "module_graph"
                || stem == "tests"
                || stem == "props"
                || stem.ends_with("_tests")
                || rel.iter().any(|c| c == "tests")
            {
                continue;
            }
            let mut module: Vec<String> = rel[..rel.len() - 1].to_vec();
            if stem != "mod" && stem != "lib" {
                module.push(stem.to_string());
            }
            out.push((module, path));
        }
    }
    out
}

/// The code of a file without its inline test module and comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("a readable source file");
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("mod tests {") {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The identifiers that follow each occurrence of `prefix` as a path start.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(at) = code[from..].find(prefix) {
        let start = from + at;
        from = start + prefix.len();
        // A path start: not the tail of a longer identifier or path.
        if start > 0 {
            let before = bytes[start - 1];
            if before.is_ascii_alphanumeric() || before == b'_' || before == b':' {
                continue;
            }
        }
        let rest = &code[from..];
        let path: Vec<String> = rest
            .split("::")
            .map(|seg| {
                seg.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .take_while(|seg| !seg.is_empty())
            .collect();
        out.push(path);
    }
    out
}

/// Edges between units, each with a file that makes it.
fn edges(src: &Path) -> BTreeMap<(String, String), PathBuf> {
    let modules = modules(src);
    let known: BTreeSet<Vec<String>> = modules.iter().map(|(m, _)| m.clone()).collect();
    // The longest known module that `path` (absolute, in segments) names.
    let resolve = |path: &[String]| -> Option<Vec<String>> {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|m| known.contains(m))
    };
    let mut out = BTreeMap::new();
    for (module, path) in &modules {
        let code = code(path);
        let mut targets = Vec::new();
        for p in paths_after(&code, "crate::") {
            targets.extend(resolve(&p));
        }
        let parent = &module[..module.len().saturating_sub(1)];
        for p in paths_after(&code, "super::") {
            let mut abs = parent.to_vec();
            abs.extend(p.iter().filter(|s| *s != "super").cloned());
            targets.extend(resolve(&abs).or_else(|| Some(parent.to_vec())));
        }
        for child in known
            .iter()
            .filter(|m| m.len() == module.len() + 1 && m.starts_with(module))
        {
            let name = format!("{}::", child.last().expect("a child module"));
            if !paths_after(&code, &name).is_empty() {
                targets.push(child.clone());
            }
        }
        let from = unit_of(module);
        for target in targets {
            let to = unit_of(&target);
            if to != from {
                out.entry((from.clone(), to))
                    .or_insert_with(|| path.clone());
            }
        }
    }
    out
}

/// A cycle in the graph, if any, as the units along it.
fn find_cycle(edges: &BTreeMap<(String, String), PathBuf>) -> Option<Vec<String>> {
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        graph.entry(from).or_default().push(to);
        graph.entry(to).or_default();
    }
    // Depth-first search; a back edge to a unit on the stack is a cycle.
    fn visit<'a>(
        unit: &'a str,
        graph: &BTreeMap<&'a str, Vec<&'a str>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|u| *u == unit) {
            let mut cycle: Vec<String> = stack[at..].iter().map(|u| u.to_string()).collect();
            cycle.push(unit.to_string());
            return Some(cycle);
        }
        if !done.insert(unit) {
            return None;
        }
        stack.push(unit);
        for next in &graph[unit] {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|unit| visit(unit, &graph, &mut Vec::new(), &mut done))
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn the_module_graph_has_no_cycles() {
    let edges = edges(&src());
    for (f, t) in edges.keys() {
        eprintln!("EDGE {f} -> {t}");
    }
    if let Some(cycle) = find_cycle(&edges) {
        let hops: Vec<String> = cycle
            .windows(2)
            .map(|w| {
                let file = &edges[&(w[0].clone(), w[1].clone())];
                format!("{} -> {} ({})", w[0], w[1], file.display())
            })
            .collect();
        panic!("import cycle:\n  {}", hops.join("\n  "));
    }
}

#[test]
fn the_dispatcher_and_the_reconciler_meet_only_below_them() {
    let edges = edges(&src());
    let uses = |from: &str| -> BTreeSet<&str> {
        edges
            .keys()
            .filter(|(f, _)| f == from)
            .map(|(_, t)| t.as_str())
            .filter(|t| t.starts_with("controller::"))
            .collect()
    };
    assert_eq!(
        uses("controller::dispatch"),
        BTreeSet::from([
            "controller::context",
            "controller::handle",
            "controller::settings",
            "controller::writer",
        ])
    );
    assert_eq!(
        uses("controller::job"),
        BTreeSet::from([
            "controller::context",
            "controller::handle",
            "controller::plan",
            "controller::settings",
            "controller::writer",
        ])
    );
    // The pure units use no part of the shell.
    for pure in ["admission", "status", "pod", "validate", "controller::plan"] {
        let shell: Vec<&str> = edges
            .keys()
            .filter(|(f, t)| {
                f == pure && t.starts_with("controller") && t != "controller::settings"
            })
            .map(|(_, t)| t.as_str())
            .collect();
        assert_eq!(shell, Vec::<&str>::new(), "{pure} uses the shell");
    }
}

#[test]
fn the_graph_reader_finds_paths_and_cycles() {
    // A path stops at its first non-identifier segment; `x::crate::` is no path start.
    assert_eq!(
        paths_after(
            "use crate::controller::writer::{A, B}; x::crate::y",
            "crate::"
        ),
        vec![vec!["controller".to_string(), "writer".to_string()]]
    );
    let edge = |a: &str, b: &str| ((a.to_string(), b.to_string()), PathBuf::from("x.rs"));
    let acyclic = BTreeMap::from([edge("a", "b"), edge("b", "c"), edge("a", "c")]);
    assert_eq!(find_cycle(&acyclic), None);
    let cyclic = BTreeMap::from([edge("a", "b"), edge("b", "c"), edge("c", "a")]);
    assert_eq!(
        find_cycle(&cyclic),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

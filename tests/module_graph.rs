//! The module graph has no import cycle, and the platform's modules import only from their own
//! layer or the layers before it, as `src/lib.rs` documents them.
//!
//! The check reads the sources: every `crate::`, `super::`, `self::` and child-module path
//! outside comments and `#[cfg(test)]` code is an edge from the file's module to the deepest
//! module the path names. A module's `mod x;` declarations are not edges; its `use x::…` are.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// Every module of the crate under `src`, with the text of its file.
fn modules(src: &Path) -> BTreeMap<Module, String> {
    fn walk(dir: &Path, base: &Path, out: &mut BTreeMap<Module, String>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, base, out);
                continue;
            }
            if path.extension().is_none_or(|ext| ext != "rs") {
                continue;
            }
            let relative = path.strip_prefix(base).expect("under src");
            let mut module: Module = relative
                .with_extension("")
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect();
            if matches!(
                module.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            out.insert(module, text);
        }
    }
    let mut out = BTreeMap::new();
    walk(src, src, &mut out);
    out
}

/// The text that counts: no comment lines, nothing from the first `#[cfg(test)]` on.
fn code(text: &str) -> String {
    text.lines()
        .take_while(|line| line.trim() != "#[cfg(test)]")
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

fn skip_space(s: &[u8], i: &mut usize) {
    while s.get(*i).is_some_and(u8::is_ascii_whitespace) {
        *i += 1;
    }
}

fn read_ident(s: &[u8], i: &mut usize) -> String {
    let start = *i;
    while s.get(*i).copied().is_some_and(is_ident) {
        *i += 1;
    }
    String::from_utf8_lossy(&s[start..*i]).into_owned()
}

/// The paths of one use-tree starting at `i` (`a::b`, `a::{b, c::d}`, `a::{self, *}`).
fn use_tree(s: &[u8], i: &mut usize) -> Vec<Vec<String>> {
    let mut prefix = Vec::new();
    loop {
        skip_space(s, i);
        match s.get(*i) {
            Some(b'{') => {
                *i += 1;
                let mut paths = Vec::new();
                loop {
                    skip_space(s, i);
                    match s.get(*i) {
                        None => return paths,
                        Some(b'}') => {
                            *i += 1;
                            return paths;
                        }
                        Some(b',') => *i += 1,
                        Some(_) => {
                            let before = *i;
                            for tail in use_tree(s, i) {
                                let mut path = prefix.clone();
                                path.extend(tail);
                                paths.push(path);
                            }
                            if *i == before {
                                *i += 1;
                            }
                        }
                    }
                }
            }
            Some(b'*') => {
                *i += 1;
                return vec![prefix];
            }
            _ => {}
        }
        let ident = read_ident(s, i);
        if ident.is_empty() {
            return vec![prefix];
        }
        if ident != "self" {
            prefix.push(ident);
        }
        if s[*i..].starts_with(b"::") {
            *i += 2;
        } else {
            return vec![prefix];
        }
    }
}

/// The modules `module`'s code refers to.
fn references(module: &Module, text: &str, known: &BTreeSet<Module>) -> BTreeSet<Module> {
    let children: BTreeSet<&str> = known
        .iter()
        .filter(|other| other.len() == module.len() + 1 && other.starts_with(module))
        .filter_map(|child| child.last().map(String::as_str))
        .collect();
    let code = code(text);
    let s = code.as_bytes();
    let mut found = BTreeSet::new();
    let mut i = 0;
    while i < s.len() {
        let starts_word = is_ident(s[i])
            && (i == 0 || !(is_ident(s[i - 1]) || matches!(s[i - 1], b':' | b'$' | b'.')));
        if !starts_word {
            i += 1;
            continue;
        }
        let mut j = i;
        let word = read_ident(s, &mut j);
        if !s[j..].starts_with(b"::") {
            i = j;
            continue;
        }
        let mut base: Module = match word.as_str() {
            "crate" => Vec::new(),
            "self" => module.clone(),
            "super" => module[..module.len().saturating_sub(1)].to_vec(),
            child if children.contains(child) => {
                let mut base = module.clone();
                base.push(child.to_owned());
                base
            }
            _ => {
                i = j;
                continue;
            }
        };
        j += 2;
        // `super::super::…`
        while s[j..].starts_with(b"super::") {
            base.pop();
            j += "super::".len();
        }
        for path in use_tree(s, &mut j) {
            let mut full = base.clone();
            full.extend(path);
            let target = (0..=full.len())
                .rev()
                .map(|n| full[..n].to_vec())
                .find(|candidate| known.contains(candidate));
            if let Some(target) = target
                && !target.is_empty()
                && &target != module
            {
                found.insert(target);
            }
        }
        i = j.max(i + 1);
    }
    found
}

/// The edges of the crate under `src`.
fn graph(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let modules = modules(src);
    let known: BTreeSet<Module> = modules.keys().cloned().collect();
    modules
        .iter()
        .filter(|(module, _)| !module.is_empty())
        .map(|(module, text)| (module.clone(), references(module, text, &known)))
        .collect()
}

fn name(module: &Module) -> String {
    module.join("::")
}

/// The first cycle found, as the modules along it.
fn find_cycle(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit(
        node: &Module,
        graph: &BTreeMap<Module, BTreeSet<Module>>,
        marks: &mut BTreeMap<Module, Mark>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Visiting) => {
                let start = stack.iter().position(|m| m == node).unwrap_or(0);
                let mut cycle: Vec<String> = stack[start..].iter().map(name).collect();
                cycle.push(name(node));
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.clone(), Mark::Visiting);
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        marks.insert(node.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut marks, &mut Vec::new()))
}

/// The layers documented in `lib.rs`: lines `//! N. \`a\`, \`b\`: …`, first layer first.
fn documented_layers(lib: &str) -> BTreeMap<String, usize> {
    let mut layers = BTreeMap::new();
    for line in lib.lines() {
        let Some(item) = line.strip_prefix("//! ") else {
            continue;
        };
        let Some((number, rest)) = item.split_once(". ") else {
            continue;
        };
        let Ok(layer) = number.trim().parse::<usize>() else {
            continue;
        };
        let names = rest.split(':').next().unwrap_or_default();
        for name in names.split('`').skip(1).step_by(2) {
            layers.insert(name.to_owned(), layer);
        }
    }
    layers
}

/// Every problem with the crate under `src`: a cycle, an undocumented top-level module, an
/// import from a later layer.
fn problems(src: &Path) -> Vec<String> {
    let graph = graph(src);
    let mut problems = Vec::new();
    if let Some(cycle) = find_cycle(&graph) {
        problems.push(format!("import cycle: {}", cycle.join(" → ")));
    }
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap_or_default();
    let layers = documented_layers(&lib);
    if layers.is_empty() {
        return problems;
    }
    for (module, targets) in &graph {
        let top = &module[0];
        let Some(&own) = layers.get(top) else {
            problems.push(format!(
                "module `{top}` is missing from the layers in lib.rs"
            ));
            continue;
        };
        for target in targets {
            let target_top = &target[0];
            if target_top == top {
                continue;
            }
            match layers.get(target_top) {
                Some(&layer) if layer > own => problems.push(format!(
                    "{} (layer {own}) imports {} (layer {layer}), a later layer",
                    name(module),
                    name(target)
                )),
                _ => {}
            }
        }
    }
    problems.sort();
    problems.dedup();
    problems
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

#[test]
fn the_platform_modules_have_no_cycle_and_respect_the_documented_layers() {
    let src = workspace().join("src");
    let layers = documented_layers(&std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs"));
    assert!(
        layers.len() >= 10,
        "lib.rs documents the layers: {layers:?}"
    );
    let problems = problems(&src);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The check saw the real graph: the server stack imports the readiness it gates on.
    let graph = graph(&src);
    let gate = graph
        .get(&vec!["server".to_owned(), "readiness_gate".to_owned()])
        .expect("server::readiness_gate");
    assert!(gate.contains(&vec!["readiness".to_owned()]), "{gate:?}");
}

#[test]
fn every_service_crate_has_no_import_cycle() {
    let services = workspace().join("services");
    let mut checked = 0;
    for entry in std::fs::read_dir(&services).expect("services") {
        let src = entry.expect("entry").path().join("src");
        if !src.join("lib.rs").exists() {
            continue;
        }
        let graph = graph(&src);
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{}: import cycle: {}", src.display(), cycle.join(" → "));
        }
        checked += 1;
    }
    assert!(checked >= 4, "checked {checked} service crates");
}

#[test]
fn the_check_catches_a_cycle_through_a_facade_and_an_upward_import() {
    let dir = std::env::temp_dir().join(format!("bookmesh-graph-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("events")).expect("dirs");
    let write = |path: &str, text: &str| std::fs::write(src.join(path), text).expect("write");
    write(
        "lib.rs",
        "//! 1. `config`: settings.\n//! 2. `events`: events.\nmod config;\nmod events;\n",
    );
    // A lower layer reaching up, in a use group.
    write(
        "config.rs",
        "use crate::{events::outbox::Relay, other};\npub struct Args;\n",
    );
    // The facade uses its child by a relative path; the child imports through the facade.
    write(
        "events/mod.rs",
        "mod outbox;\npub fn start() { outbox::run(); }\n",
    );
    write(
        "events/outbox.rs",
        "use super::start; // through the facade\n\
         pub struct Relay;\npub fn run() {}\n\
         #[cfg(test)]\nmod tests { use crate::events::*; }\n",
    );
    let found = problems(&src);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        found.iter().any(|p| p.contains("import cycle")
            && p.contains("events::outbox")
            && p.contains("events →")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.contains("config (layer 1) imports events::outbox (layer 2)")),
        "{found:?}"
    );
    assert_eq!(found.len(), 2, "{found:?}");
}

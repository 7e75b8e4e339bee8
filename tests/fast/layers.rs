//! No import cycles between the top-level modules of `src/` (fast tier: reads the sources, no
//! Slurm, no IO beyond `src/`).
//!
//! The check reads every `src/**.rs`, drops comments, string literals and `#[cfg(test)]` items
//! (tests may reach anywhere), and collects each module's references to other top-level
//! modules: `crate::x` (also inside `use crate::{x, y::z}` groups) and `super::` paths that
//! climb out of the module. The resulting graph must be acyclic.
//!
//! The intended layering is [`LAYERS`], bottom to top; a second test holds the code to it
//! (a module may use only modules in rows below its own), so the list stays true.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module graph: top-level module -> the top-level modules it references.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The layers of `src/`, bottom to top: a module may use only modules of lower rows.
const LAYERS: &[(&str, &str)] = &[
    (
        "utc hostlist paths interrupt",
        "base: time, host lists, `~`, SIGINT/SIGTERM",
    ),
    ("job", "a submission as data: options, quoting, job ids"),
    (
        "container secret",
        "container command lines; secret sources and files",
    ),
    (
        "desired",
        "the repo as typed desired state, and the job marker",
    ),
    ("observed", "Slurm's listing as typed observed state (pure)"),
    (
        "plan",
        "desired vs observed -> Plan, image steps included (pure)",
    ),
    ("render", "plans, batch scripts, status (pure)"),
    (
        "cluster",
        "cluster facts and the check of a plan against them",
    ),
    ("slurm", "the backends: the only code that talks to Slurm"),
    (
        "image results saved git lock",
        "below the pass: image dir, runs, saved plans, lock",
    ),
    ("apply", "executes a plan through a backend"),
    (
        "reconcile",
        "the one pass: load, observe, plan, lock, apply",
    ),
    (
        "watch logs",
        "long-running loops over the pass; a replica's log",
    ),
    ("error", "every failure's kind and exit code"),
    ("cli", "the commands"),
];

/// References known to close a cycle and still to break, as (file under `src/`, top-level
/// module it references). Only that file's references to that module are left out of the
/// check, so any NEW cycle still fails, and so does an entry the code no longer needs.
const TO_BREAK: &[(&str, &str)] = &[];

#[test]
fn no_import_cycles_between_top_level_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let full = src_graph(&src, &[]);
    let checked = src_graph(&src, TO_BREAK);
    println!("{}", show(&full));
    let stale: Vec<_> = TO_BREAK
        .iter()
        .filter(|(file, to)| !references_of(&src, file).contains(*to))
        .collect();
    assert!(
        stale.is_empty(),
        "allow-listed references no longer in the code (remove them from TO_BREAK): {stale:?}"
    );
    if let Some(cycle) = find_cycle(&checked) {
        panic!(
            "import cycle between top-level modules of src/: {}\nmove the shared item down \
             (see the layering in tests/fast/layers.rs)\nfull graph:\n{}",
            cycle.join(" -> "),
            show(&full)
        );
    }
}

#[test]
fn every_import_goes_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let row = |m: &str| {
        LAYERS
            .iter()
            .position(|(row, _)| row.split(' ').any(|r| r == m))
    };
    let mut wrong = Vec::new();
    for (from, to) in src_graph(&src, TO_BREAK) {
        let Some(high) = row(&from) else {
            wrong.push(format!(
                "{from} is in no row of LAYERS (tests/fast/layers.rs): place it"
            ));
            continue;
        };
        for t in to {
            if row(&t).is_none_or(|low| low >= high) {
                wrong.push(format!("{from} -> {t} does not go down the layers"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_cycle_is_found_and_printed() {
    let graph = graph_of(&[("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]);
    let cycle = find_cycle(&graph).expect("a -> b -> c -> a is a cycle");
    assert_eq!(cycle.len(), 4, "{cycle:?}");
    assert_eq!(cycle.first(), cycle.last(), "{cycle:?}");
    for pair in cycle.windows(2) {
        assert!(graph[&pair[0]].contains(&pair[1]), "{cycle:?}");
    }
    assert!(!cycle.contains(&"d".to_string()), "{cycle:?}");
    assert_eq!(
        find_cycle(&graph_of(&[("a", "b"), ("b", "c"), ("a", "c")])),
        None
    );
    assert!(
        find_cycle(&graph_of(&[("a", "a")])).is_some(),
        "a self-loop is a cycle"
    );
}

#[test]
fn a_cycle_in_a_source_tree_fails_unless_allow_listed() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir(src.join("low")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod low; pub mod high;").unwrap();
    std::fs::write(
        src.join("low/mod.rs"),
        "mod part;\npub struct L;\n#[cfg(test)]\n#[allow(unused)]\nmod tests;",
    )
    .unwrap();
    // Out-of-line test modules are tests: their references do not count.
    std::fs::create_dir_all(src.join("low/tests")).unwrap();
    std::fs::write(src.join("low/tests/mod.rs"), "mod more;").unwrap();
    std::fs::write(src.join("low/tests/more.rs"), "use crate::cli::C;").unwrap();
    std::fs::write(src.join("low/part.rs"), "use crate::high::H;").unwrap();
    std::fs::write(src.join("high.rs"), "use crate::low::L;\npub struct H;").unwrap();
    let graph = src_graph(src, &[]);
    assert_eq!(
        graph["low"],
        BTreeSet::from(["high".to_string()]),
        "{graph:?}"
    );
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["high".to_string(), "low".into(), "high".into()])
    );
    assert_eq!(
        find_cycle(&src_graph(src, &[("low/part.rs", "high")])),
        None
    );
    // Only the listed file is excused: the same reference from another file still counts.
    std::fs::write(src.join("low/mod.rs"), "mod part;\nuse crate::high::H;").unwrap();
    assert!(find_cycle(&src_graph(src, &[("low/part.rs", "high")])).is_some());
}

#[test]
fn references_are_read_from_code_not_from_tests_comments_or_strings() {
    let code = r#"
        //! Uses [`crate::doc_only`].
        use crate::{alpha::A, beta, gamma::{self, G}};
        use super::sibling::S;
        use super::super::far;
        use self::inner::X;
        fn f() -> crate::delta::D { let s = "crate::in_string"; let c = '"'; crate::epsilon::e(s) }
        /* crate::in_block /* nested */ crate::still_block */
        fn g<'a>(x: &'a str) -> &'a str { crate::zeta::z(x) }
        #[cfg(test)]
        mod tests {
            use crate::only_tests;
            fn h() { let _ = '}'; }
        }
        fn after() { crate::eta::e() }
    "#;
    let found = references(&["top".into(), "child".into()], code);
    let want: BTreeSet<String> = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"]
        .iter()
        .chain(["far", "top"].iter())
        .map(|s| s.to_string())
        .collect();
    assert_eq!(found, want);
    // From a top-level file, `super::x` is the top-level module x.
    assert_eq!(
        references(&["top".into()], "use super::{one::A, two};"),
        ["one", "two"].iter().map(|s| s.to_string()).collect()
    );
}

// ---------------------------------------------------------------------------------------------
// The graph
// ---------------------------------------------------------------------------------------------

fn graph_of(edges: &[(&str, &str)]) -> Graph {
    let mut graph = Graph::new();
    for (a, b) in edges {
        graph
            .entry(a.to_string())
            .or_default()
            .insert(b.to_string());
        graph.entry(b.to_string()).or_default();
    }
    graph
}

fn show(graph: &Graph) -> String {
    graph
        .iter()
        .map(|(m, to)| {
            format!(
                "{m} -> {}\n",
                to.iter().cloned().collect::<Vec<_>>().join(" ")
            )
        })
        .collect()
}

/// One cycle (first node repeated at the end), if any: depth-first search with colours.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit<'g>(
        graph: &'g Graph,
        node: &'g String,
        done: &mut BTreeSet<&'g String>,
        stack: &mut Vec<&'g String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| *n == node) {
            let mut cycle: Vec<String> = stack[at..].iter().map(|n| n.to_string()).collect();
            cycle.push(node.clone());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(graph, next, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node);
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(graph, node, &mut done, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

/// The graph of `src/`: `src/x.rs` and `src/x/**.rs` are module `x`; `lib.rs` and `main.rs`
/// only declare modules and are left out. References listed in `skip` (file, module) are not
/// counted.
fn src_graph(src: &Path, skip: &[(&str, &str)]) -> Graph {
    let files = rust_files(src);
    let test_only = test_only_modules(src, &files);
    let mut graph = Graph::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let path = module_path(rel);
        if path == ["lib"] || path == ["main"] || test_only.iter().any(|t| path.starts_with(t)) {
            continue;
        }
        let top = path[0].clone();
        let rel = rel.to_string_lossy().replace('\\', "/");
        let to: Vec<String> = references_of(src, &rel)
            .into_iter()
            .filter(|m| *m != top && !skip.contains(&(rel.as_str(), m.as_str())))
            .collect();
        graph.entry(top).or_default().extend(to);
    }
    let targets: BTreeSet<String> = graph.values().flatten().cloned().collect();
    for t in targets {
        graph.entry(t).or_default();
    }
    graph
}

/// The module paths of out-of-line test modules (`#[cfg(test)] mod tests;` in `a/b.rs` is
/// `["a", "b", "tests"]`): their files are tests, left out like inline test modules.
fn test_only_modules(src: &Path, files: &[PathBuf]) -> Vec<Vec<String>> {
    let attr = ["#", "[", "cfg", "(", "test", ")", "]"];
    let mut found = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let mut path = module_path(rel);
        if path == ["lib"] || path == ["main"] {
            path.clear();
        }
        let words = tokens(&code_only(&std::fs::read_to_string(file).unwrap()));
        for at in 0..words.len() {
            if !words[at..].starts_with(&attr.map(String::from)) {
                continue;
            }
            let mut i = at + attr.len();
            // Further attributes, then `pub`/`pub(crate)`, then `mod NAME;`.
            while words.get(i).is_some_and(|w| w == "#") {
                while words.get(i).is_some_and(|w| w != "]") {
                    i += 1;
                }
                i += 1;
            }
            if words.get(i).is_some_and(|w| w == "pub") {
                i += 1;
                if words.get(i).is_some_and(|w| w == "(") {
                    i += 3;
                }
            }
            if words.get(i).is_some_and(|w| w == "mod")
                && words.get(i + 2).is_some_and(|w| w == ";")
            {
                let mut module = path.clone();
                module.push(words[i + 1].clone());
                found.push(module);
            }
        }
    }
    found
}

/// `plan/diff.rs` -> `["plan", "diff"]`; `plan/mod.rs` -> `["plan"]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut path: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    if path.last().is_some_and(|l| l == "mod") {
        path.pop();
    }
    path
}

/// The top-level modules one file of `src/` refers to (empty for a file that is gone).
fn references_of(src: &Path, rel: &str) -> BTreeSet<String> {
    let Ok(code) = std::fs::read_to_string(src.join(rel)) else {
        return BTreeSet::new();
    };
    references(&module_path(Path::new(rel)), &code)
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

// ---------------------------------------------------------------------------------------------
// Reading the references out of one file
// ---------------------------------------------------------------------------------------------

/// The top-level modules that the file of module `path` (e.g. `["plan", "diff"]`) refers to.
fn references(path: &[String], code: &str) -> BTreeSet<String> {
    let code = without_cfg_test(&code_only(code));
    let words = tokens(&code);
    let mut found = BTreeSet::new();
    let mut i = 0;
    while i < words.len() {
        // Skip the tail of a longer path (`a::crate` cannot occur, `x::super` can't either).
        let preceded_by_path = i > 0 && words[i - 1] == "::";
        if !preceded_by_path && words[i] == "crate" && words.get(i + 1).is_some_and(|w| w == "::") {
            roots(&words, i + 2, &mut found);
        } else if !preceded_by_path && words[i] == "super" {
            let mut up = 0;
            let mut j = i;
            while words.get(j).is_some_and(|w| w == "super")
                && words.get(j + 1).is_some_and(|w| w == "::")
            {
                up += 1;
                j += 2;
            }
            if up >= path.len() {
                roots(&words, j, &mut found);
            } else if up > 0 {
                found.insert(path[0].clone());
            }
            i = j.max(i + 1);
            continue;
        }
        i += 1;
    }
    found
}

/// The first path segment at `words[at]`, or each item's first segment in a `{..}` group.
fn roots(words: &[String], at: usize, found: &mut BTreeSet<String>) {
    match words.get(at).map(String::as_str) {
        Some("{") => {
            let mut depth = 0;
            let mut item_start = true;
            for w in &words[at..] {
                match w.as_str() {
                    "{" => {
                        depth += 1;
                        if depth == 1 {
                            item_start = true;
                        }
                    }
                    "}" => {
                        depth -= 1;
                        if depth == 0 {
                            return;
                        }
                    }
                    "," if depth == 1 => item_start = true,
                    w if item_start && depth == 1 => {
                        if w != "self" && is_ident(w) {
                            found.insert(w.to_string());
                        }
                        item_start = false;
                    }
                    _ => {}
                }
            }
        }
        Some(w) if is_ident(w) && w != "self" => {
            found.insert(w.to_string());
        }
        _ => {}
    }
}

fn is_ident(w: &str) -> bool {
    w.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// Identifiers, `::` and single punctuation characters.
fn tokens(code: &str) -> Vec<String> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push("::".into());
            i += 2;
        } else {
            if !c.is_whitespace() {
                out.push(c.to_string());
            }
            i += 1;
        }
    }
    out
}

/// The code with comments removed and string and char literals emptied.
fn code_only(code: &str) -> String {
    let c: Vec<char> = code.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < c.len() {
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c[i] == 'r'
            && (c.get(i + 1) == Some(&'"') || c.get(i + 1) == Some(&'#'))
            && (i == 0 || !(c[i - 1].is_alphanumeric() || c[i - 1] == '_'))
        {
            // A raw string r"..", r#".."#: ends at a quote followed by as many hashes.
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            j += 1;
            while j < c.len() {
                if c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c[i] == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if c.get(i + 1) == Some(&'\\') {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
                out.push_str("' '");
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push_str("' '");
            } else {
                out.push('\'');
                i += 1;
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// The code without items marked `#[cfg(test)]` (the item up to its `;` or its `{..}` block).
fn without_cfg_test(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        rest = &rest[at + "#[cfg(test)]".len()..];
        let mut depth = 0;
        let mut end = rest.len();
        for (k, ch) in rest.char_indices() {
            match ch {
                ';' if depth == 0 => {
                    end = k + 1;
                    break;
                }
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

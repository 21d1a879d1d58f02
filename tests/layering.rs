//! The import graph between the files of src/ has no cycle, outside the folders whose
//! module doc explains why a cycle is the clearest form there (listed in `ALLOWED`).
//!
//! Reads every file of the library, takes the `crate::`, `super::`, `self::` and child-module
//! paths it names (test modules left out), resolves each to the file that defines the module
//! it points into, and looks for strongly connected components of that graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Folders allowed to hold a cycle among their own files, with the module doc that says why.
/// None today.
const ALLOWED: &[&str] = &[];

type Module = Vec<String>;

struct SourceFile {
    module: Module,
    text: String,
    children: BTreeSet<String>,
    /// `pub use` re-exports: the name seen here → the path it stands for.
    reexports: BTreeMap<String, String>,
}

fn module_of(src: &Path, file: &Path) -> Module {
    let relative = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs").to_string();
    if stem != "mod" && stem != "lib" {
        parts.push(stem);
    }
    let mut module = vec!["crate".to_string()];
    module.extend(parts);
    module
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text without comments, string and char literals (they name paths that are not imports).
fn strip_comments_and_strings(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if rest.starts_with("/*") {
            let mut depth = 0;
            while i < bytes.len() {
                if text[i..].starts_with("/*") {
                    depth += 1;
                    i += 2;
                } else if text[i..].starts_with("*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if rest.starts_with("r#\"") || rest.starts_with("r\"") || rest.starts_with("br\"") {
            let start = rest.find('"').expect("a quote");
            let hashes = rest[..start].matches('#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let body = i + start + 1;
            let end = text[body..]
                .find(&close)
                .map_or(text.len(), |e| body + e + close.len());
            out.push_str("\"\"");
            i = end;
        } else if bytes[i] == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if bytes[i] == b'\'' && is_char_literal(&text[i..]) {
            i += 1;
            while i < bytes.len() && bytes[i] != b'\'' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            let c = rest.chars().next().expect("a char");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// `'a'`, `'\n'`, `'\u{1F}'` but not a lifetime (`'a`).
fn is_char_literal(rest: &str) -> bool {
    let mut chars = rest.chars().skip(1);
    match chars.next() {
        Some('\\') => true,
        Some(_) => chars.next() == Some('\''),
        None => false,
    }
}

/// Removes `#[cfg(test)]` items (test modules and test-only functions): what tests import
/// is not part of the layering.
fn strip_test_items(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        // The item ends at its first `;` (a `mod x;` or a `use`) or its matching `}`.
        let mut depth = 0usize;
        let mut end = after.len();
        for (i, c) in after.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Expands `use a::{b, c::{d, e}};` bodies into full paths (`a::b`, `a::c::d`, `a::c::e`).
fn expand_use_tree(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim().trim_end_matches("::");
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let base = join(prefix, head);
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand_use_tree(&base, &inner[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand_use_tree(&base, &inner[start..], out);
    } else if !tree.is_empty() {
        let path = tree.split(" as ").next().unwrap_or(tree).trim();
        out.push(join(prefix, path));
    }
}

fn join(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (_, true) => prefix.to_string(),
        _ => format!("{prefix}::{path}"),
    }
}

/// Every path the file names: use trees, plus `crate::`/`super::`/`child::` paths in code.
fn named_paths(code: &str, children: &BTreeSet<String>) -> Vec<String> {
    let mut paths = Vec::new();
    // Use declarations, expanded; the rest of the code is scanned for paths below.
    let mut outside_uses = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let boundary = at == 0 || !ident_char(rest[..at].chars().last().unwrap_or(' '));
        // A re-export is a module's public face, not a use: paths through it are followed
        // to the file that defines the item (see `owning_file`).
        let before = rest[..at].trim_end();
        let reexport = before.ends_with("pub") || before.ends_with("pub(crate)");
        let after = &rest[at + 4..];
        if boundary && let Some(end) = after.find(';') {
            let tree: String = after[..end]
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            let tree = tree.replace(":: ", "::").replace(" ::", "::");
            if !reexport {
                expand_use_tree("", &tree, &mut paths);
            }
            outside_uses.push_str(&rest[..at]);
            rest = &after[end..];
        } else {
            outside_uses.push_str(&rest[..at + 4]);
            rest = after;
        }
    }
    outside_uses.push_str(rest);
    let code = outside_uses.as_str();
    // Paths in expressions and types.
    let chars: Vec<(usize, char)> = code.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (pos, c) = chars[i];
        let starts_ident = ident_char(c) && (i == 0 || !ident_char(chars[i - 1].1));
        let after_colons = i >= 2 && chars[i - 1].1 == ':' && chars[i - 2].1 == ':';
        if starts_ident && !after_colons {
            let mut end;
            let mut j = i;
            loop {
                while j < chars.len() && ident_char(chars[j].1) {
                    j += 1;
                }
                end = chars.get(j).map_or(code.len(), |c| c.0);
                if j + 2 < chars.len()
                    && chars[j].1 == ':'
                    && chars[j + 1].1 == ':'
                    && ident_char(chars[j + 2].1)
                {
                    j += 2;
                } else {
                    break;
                }
            }
            let path = &code[pos..end];
            let first = path.split("::").next().unwrap_or("");
            if path.contains("::")
                && (matches!(first, "crate" | "super" | "self") || children.contains(first))
            {
                paths.push(path.to_string());
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    paths
}

/// Splits a file's code into the code of its own module and that of each inline
/// `mod name { ... }`, each with the module path its `super::` and `self::` are relative to.
fn inline_modules(module: &Module, code: &str, out: &mut Vec<(Module, String)>) {
    let mut own = String::with_capacity(code.len());
    let mut rest = code;
    loop {
        let found = rest.match_indices("mod ").find(|(at, _)| {
            (*at == 0 || !ident_char(rest[..*at].chars().last().unwrap_or(' ')))
                && rest[at + 4..]
                    .trim_start()
                    .split(|c: char| !ident_char(c))
                    .next()
                    .is_some_and(|name| {
                        let after = rest[at + 4..].trim_start()[name.len()..].trim_start();
                        !name.is_empty() && after.starts_with('{')
                    })
        });
        let Some((at, _)) = found else { break };
        own.push_str(&rest[..at]);
        let after = rest[at + 4..].trim_start();
        let name: String = after.chars().take_while(|c| ident_char(*c)).collect();
        let open = after.find('{').expect("checked above");
        let mut depth = 0usize;
        let mut close = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = open + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let mut inner = module.clone();
        inner.push(name);
        inline_modules(&inner, &after[open + 1..close.min(after.len())], out);
        rest = &after[(close + 1).min(after.len())..];
    }
    own.push_str(rest);
    out.push((module.clone(), own));
}

/// The absolute module path a path names, from the module it is written in.
fn absolute(from: &Module, children: &BTreeSet<String>, path: &str) -> Option<Module> {
    let segments: Vec<&str> = path.split("::").map(str::trim).collect();
    let mut base: Module;
    let mut rest = &segments[..];
    match segments.first().copied()? {
        "crate" => {
            base = vec!["crate".into()];
            rest = &segments[1..];
        }
        "self" => {
            base = from.clone();
            rest = &segments[1..];
        }
        "super" => {
            base = from.clone();
            while rest.first() == Some(&"super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        first if children.contains(first) => base = from.clone(),
        _ => return None,
    }
    base.extend(rest.iter().filter(|s| **s != "*").map(|s| s.to_string()));
    Some(base)
}

/// The file whose module is the longest prefix of `module`, looking through re-exports
/// (`crate::Result` is `crate::error::Result`).
fn owning_file<'a>(files: &'a BTreeMap<Module, SourceFile>, module: &Module) -> Option<&'a Module> {
    let mut module = module.clone();
    for _ in 0..8 {
        let (owner, file) = (1..=module.len())
            .rev()
            .find_map(|n| files.get_key_value(&module[..n].to_vec()))?;
        let Some(next) = module.get(owner.len()) else {
            return Some(owner);
        };
        let Some(target) = file.reexports.get(next) else {
            return Some(owner);
        };
        let mut followed = absolute(owner, &file.children, target)?;
        followed.extend(module[owner.len() + 1..].iter().cloned());
        module = followed;
    }
    None
}

/// The names a file re-exports with `pub use`, and what each stands for.
fn reexports_of(code: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    let mut rest = code;
    while let Some(at) = rest.find("pub use ") {
        let after = &rest[at + "pub use ".len()..];
        let Some(end) = after.find(';') else { break };
        let tree: String = after[..end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let mut paths = Vec::new();
        expand_use_tree("", &tree.replace(":: ", "::"), &mut paths);
        for path in paths {
            let full = path
                .split(" as ")
                .next()
                .unwrap_or(&path)
                .trim()
                .to_string();
            let name = path.rsplit([' ', ':']).next().unwrap_or("").to_string();
            if !name.is_empty() && name != "*" && name != "self" {
                names.insert(name, full);
            }
        }
        rest = &after[end..];
    }
    names
}

fn display(module: &Module) -> String {
    module.join("::")
}

/// Tarjan's strongly connected components.
fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct State<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        next: usize,
        found: Vec<Vec<Module>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Module) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !state.index.contains_key(v) {
            visit(&mut state, v);
        }
    }
    state.found
}

fn import_graph(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut paths = Vec::new();
    rust_files(src, &mut paths);
    let mut files: BTreeMap<Module, SourceFile> = BTreeMap::new();
    for path in paths {
        if path.ends_with("main.rs") {
            continue; // the binary is its own crate: it names `berth::`, not `crate::`
        }
        let raw = std::fs::read_to_string(&path).expect("read a source file");
        let text = strip_test_items(&strip_comments_and_strings(&raw));
        let module = module_of(src, &path);
        files.insert(
            module.clone(),
            SourceFile {
                module,
                reexports: reexports_of(&text),
                text,
                children: BTreeSet::new(),
            },
        );
    }
    // Children declared by each file (test-only ones were stripped with their `#[cfg(test)]`).
    let declared: Vec<(Module, BTreeSet<String>)> = files
        .values()
        .map(|f| {
            let mut children = BTreeSet::new();
            for line in f.text.lines() {
                let line = line.trim();
                let line = line.strip_prefix("pub(crate) ").unwrap_or(line);
                let line = line.strip_prefix("pub ").unwrap_or(line);
                if let Some(name) = line.strip_prefix("mod ").and_then(|l| l.strip_suffix(';')) {
                    children.insert(name.trim().to_string());
                }
            }
            (f.module.clone(), children)
        })
        .collect();
    for (module, children) in declared {
        files.get_mut(&module).expect("known").children = children;
    }
    // Files only declared under #[cfg(test)] are not part of the graph.
    let live: BTreeSet<Module> = files
        .keys()
        .filter(|m| {
            m.len() == 1 || {
                let parent = m[..m.len() - 1].to_vec();
                files
                    .get(&parent)
                    .is_some_and(|p| p.children.contains(&m[m.len() - 1]))
            }
        })
        .cloned()
        .collect();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for file in files.values().filter(|f| live.contains(&f.module)) {
        let targets = edges.entry(file.module.clone()).or_default();
        let mut chunks = Vec::new();
        inline_modules(&file.module, &file.text, &mut chunks);
        let named = chunks.iter().flat_map(|(module, code)| {
            let children = if *module == file.module {
                file.children.clone()
            } else {
                BTreeSet::new()
            };
            named_paths(code, &children)
                .into_iter()
                .map(move |p| (module.clone(), children.clone(), p))
        });
        for (module, children, path) in named {
            let Some(target) = absolute(&module, &children, &path) else {
                continue;
            };
            if let Some(owner) = owning_file(&files, &target)
                && *owner != file.module
                && live.contains(owner)
            {
                targets.insert(owner.clone());
            }
        }
    }
    edges
}

#[test]
fn no_import_cycle_between_files_of_src() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = import_graph(&src);
    assert!(
        edges.len() > 50,
        "the source files were found ({})",
        edges.len()
    );
    let mut report = Vec::new();
    for component in cycles(&edges) {
        let allowed = ALLOWED.iter().any(|folder| {
            let folder: Vec<&str> = std::iter::once("crate").chain(folder.split('/')).collect();
            component
                .iter()
                .all(|m| m.len() >= folder.len() && m[..folder.len()] == folder[..])
        });
        if allowed {
            continue;
        }
        let names: Vec<String> = component.iter().map(display).collect();
        let mut links = Vec::new();
        for from in &component {
            for to in edges[from].iter().filter(|t| component.contains(t)) {
                links.push(format!("    {} -> {}", display(from), display(to)));
            }
        }
        report.push(format!(
            "cycle among {}:\n{}",
            names.join(", "),
            links.join("\n")
        ));
    }
    assert!(report.is_empty(), "import cycles:\n{}", report.join("\n"));
}

#[test]
fn the_checker_sees_a_cycle_through_super_and_crate_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    std::fs::create_dir_all(src.join("a")).expect("mkdir");
    let write = |name: &str, text: &str| std::fs::write(src.join(name), text).expect("write");
    write("lib.rs", "pub mod a;\npub mod b;\n");
    write(
        "a/mod.rs",
        "pub mod x;\nuse crate::b::Thing; // b is fine\n",
    );
    write("a/x.rs", "pub fn f() { let _ = super::super::b::g(); }\n");
    write(
        "b.rs",
        "pub struct Thing;\npub fn g() {}\n#[cfg(test)]\nmod tests { use crate::a::x::f; }\n",
    );
    let edges = import_graph(src);
    assert!(cycles(&edges).is_empty(), "test-only imports do not count");
    write(
        "b.rs",
        "pub struct Thing;\npub fn g() { crate::a::x::f() }\n",
    );
    let edges = import_graph(src);
    let found = cycles(&edges);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].len(), 2, "a::x and b: {found:?}");
}

//! The house's boundaries, checked on the source: `proxy_wasm` only in `src/lib.rs` and
//! `src/host/`; every module imports only its own layer or lower ones ([`LAYERS`]); no import
//! circle between modules. Read from the text (comments, strings and `#[cfg(test)]` items
//! left out; tests may use any layer). `scripts/arch.py` measures the same graph (and long
//! functions) and reads its layers from here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Low to high: a module may import its own layer or a lower one. A finer entry
/// (`config::reader`) overrides its parent's (`config`). Kept in the README's layout.
const LAYERS: &[&[&str]] = &[
    // Primitives, and the Host trait the logic runs on (the port).
    &["support", "host", "gofmt"],
    // The vocabulary every domain compiles its namespaces with.
    &["config::reader", "config::env"],
    // Formats and languages: SSE, KrakenD's CEL and Go-template subsets.
    &["stream", "cel", "template"],
    &["providers"],
    &["refusal"],
    &["routing", "observe"],
    &["security", "cost", "limits::scheme"],
    &["governance"],
    // The compiled gateway and the table of namespaces.
    &["config"],
    &["filter"],
    // Adapters and tools: the hosts over proxy-wasm and Envoy's dynamic modules, the bootstrap
    // generator, the schema, live changes, Kubernetes, the fleet limits service.
    &[
        "host::wasm",
        "host::mock",
        "host::headers",
        "host::native",
        "envoy",
        "schema",
        "apply",
        "k8s",
        "limits",
    ],
    &["crate"],
];

/// One `.rs` file of the library: its module path and its code (comments, strings and
/// test items blanked).
struct Module {
    path: Vec<String>,
    file: PathBuf,
    code: String,
}

/// The crate's `src/` (`TOLLGATE_SRC`: another checkout's, to see what it would say there).
fn main_src() -> PathBuf {
    match std::env::var_os("TOLLGATE_SRC") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
    }
}

/// Every file of the library crate (not `src/bin/`, not the test files).
fn modules() -> Vec<Module> {
    let mut files = Vec::new();
    walk(&main_src(), &mut files);
    files
        .into_iter()
        .filter(|f| !f.starts_with(main_src().join("bin")))
        .filter(|f| {
            let name = f.file_name().unwrap().to_string_lossy();
            name != "tests.rs" && !name.ends_with("_tests.rs")
        })
        .map(|file| {
            let rel = file.strip_prefix(main_src()).unwrap();
            let mut path: Vec<String> = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if path.last().is_some_and(|l| l == "mod" || l == "lib") {
                path.pop();
            }
            let text = std::fs::read_to_string(&file).unwrap();
            let code = without_tests(&strip(&text));
            Module { path, file, code }
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Comments, string and char literals blanked (newlines kept).
fn strip(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = b.clone();
    let blank = |out: &mut Vec<char>, from: usize, to: usize| {
        for c in out.iter_mut().take(to.min(b.len())).skip(from) {
            if *c != '\n' {
                *c = ' ';
            }
        }
    };
    let ident = |i: usize| i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_');
    let mut i = 0;
    while i < b.len() {
        let rest = |k: usize| b.get(i + k).copied().unwrap_or('\0');
        if b[i] == '/' && rest(1) == '/' {
            let end = (i..b.len()).find(|&j| b[j] == '\n').unwrap_or(b.len());
            blank(&mut out, i, end);
            i = end;
        } else if b[i] == '/' && rest(1) == '*' {
            let (mut depth, mut j) = (1, i + 2);
            while j < b.len() && depth > 0 {
                if b[j] == '/' && b.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 2;
                } else if b[j] == '*' && b.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if !ident(i) && (b[i] == 'r' || (b[i] == 'b' && rest(1) == 'r')) && {
            let s = if b[i] == 'b' { i + 2 } else { i + 1 };
            let hashes = (s..b.len()).take_while(|&j| b[j] == '#').count();
            b.get(s + hashes) == Some(&'"')
        } {
            let s = if b[i] == 'b' { i + 2 } else { i + 1 };
            let hashes = (s..b.len()).take_while(|&j| b[j] == '#').count();
            let open = s + hashes + 1;
            let mut j = open;
            while j < b.len() && !(b[j] == '"' && (1..=hashes).all(|h| b.get(j + h) == Some(&'#')))
            {
                j += 1;
            }
            blank(&mut out, open, j);
            i = j + 1 + hashes;
        } else if b[i] == '"' || (b[i] == 'b' && rest(1) == '"' && !ident(i)) {
            let open = if b[i] == 'b' { i + 2 } else { i + 1 };
            let mut j = open;
            while j < b.len() && b[j] != '"' {
                j += if b[j] == '\\' { 2 } else { 1 };
            }
            blank(&mut out, open, j);
            i = j + 1;
        } else if b[i] == '\'' {
            if rest(1) == '\\' {
                let end = (i + 2..b.len()).find(|&j| b[j] == '\'').unwrap_or(b.len());
                blank(&mut out, i + 1, end);
                i = end + 1;
            } else if rest(2) == '\'' {
                blank(&mut out, i + 1, i + 2);
                i += 3;
            } else {
                i += 1; // a lifetime
            }
        } else {
            i += 1;
        }
    }
    out.into_iter().collect()
}

/// The end of the item starting at `i`: its `;` or its braced body.
fn item_end(s: &[char], i: usize) -> usize {
    let mut depth = 0i32;
    let mut j = i;
    while j < s.len() {
        match s[j] {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ';' if depth == 0 => return j + 1,
            '{' if depth == 0 => {
                let mut d = 0;
                for (k, c) in s.iter().enumerate().skip(j) {
                    match c {
                        '{' => d += 1,
                        '}' => {
                            d -= 1;
                            if d == 0 {
                                return k + 1;
                            }
                        }
                        _ => {}
                    }
                }
                return s.len();
            }
            _ => {}
        }
        j += 1;
    }
    s.len()
}

/// Items marked `#[cfg(test)]` or `#[test]` blanked.
fn without_tests(code: &str) -> String {
    let mut s: Vec<char> = code.chars().collect();
    let text: String = s.iter().collect();
    let mut starts = Vec::new();
    for marker in ["#[cfg(test)]", "#[test]"] {
        starts.extend(text.match_indices(marker).map(|(i, _)| (i, marker.len())));
    }
    starts.sort();
    let mut blanked_to = 0;
    for (byte, len) in starts {
        let i = text[..byte].chars().count();
        if i < blanked_to {
            continue;
        }
        let end = item_end(&s, i + len);
        for c in s.iter_mut().take(end).skip(i) {
            if *c != '\n' {
                *c = ' ';
            }
        }
        blanked_to = end;
    }
    s.into_iter().collect()
}

/// `a::{b, c::{d, self}}` → `a::b`, `a::c::d`, `a::c`.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.split_whitespace().collect::<Vec<_>>().join(" ");
    let tree = strip_renames(&tree).replace(' ', "");
    let Some(open) = tree.find('{') else {
        return vec![tree.trim_end_matches(':').to_string()];
    };
    let close = tree.rfind('}').unwrap_or(tree.len());
    let prefix = &tree[..open];
    let (mut parts, mut depth, mut cur) = (Vec::new(), 0, String::new());
    for ch in tree[open + 1..close].chars() {
        match ch {
            ',' if depth == 0 => parts.push(std::mem::take(&mut cur)),
            '{' => {
                depth += 1;
                cur.push(ch)
            }
            '}' => {
                depth -= 1;
                cur.push(ch)
            }
            _ => cur.push(ch),
        }
    }
    parts.push(cur);
    let mut out = Vec::new();
    for p in parts.iter().filter(|p| !p.is_empty()) {
        for e in expand(p) {
            if e == "self" {
                out.push(prefix.trim_end_matches(':').to_string());
            } else {
                out.push(format!("{prefix}{e}"));
            }
        }
    }
    out
}

/// `x as y` → `x`.
fn strip_renames(tree: &str) -> String {
    let words: Vec<&str> = tree.split(' ').collect();
    let mut out = String::new();
    let mut skip = false;
    for (i, w) in words.iter().enumerate() {
        if skip {
            // the alias, and what sticks to it (`,` or `}`)
            out.push_str(w.trim_start_matches(|c: char| c.is_alphanumeric() || c == '_'));
            skip = false;
        } else if *w == "as" && i > 0 {
            skip = true;
        } else {
            out.push_str(w);
            out.push(' ');
        }
    }
    out
}

/// The module a path lands in (its longest known prefix); None: another crate.
fn resolve(from: &[String], path: &str, known: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    let segs: Vec<&str> = path
        .split("::")
        .filter(|s| !s.is_empty() && *s != "*")
        .collect();
    let first = *segs.first()?;
    let (mut cur, rest): (Vec<String>, &[&str]) = match first {
        "crate" => (Vec::new(), &segs[1..]),
        "super" | "self" => {
            let mut cur = from.to_vec();
            let mut k = 0;
            while let Some(s) = segs.get(k).filter(|s| **s == "super" || **s == "self") {
                if *s == "super" {
                    cur.pop();
                }
                k += 1;
            }
            (cur, &segs[k..])
        }
        child => {
            let mut c = from.to_vec();
            c.push(child.to_string());
            if !known.contains(&c) {
                return None;
            }
            (from.to_vec(), &segs[..])
        }
    };
    for s in rest {
        let mut next = cur.clone();
        next.push(s.to_string());
        if !known.contains(&next) {
            break;
        }
        cur = next;
    }
    Some(cur)
}

/// The modules a file imports (`use` trees and inline paths).
fn imports(m: &Module, known: &BTreeSet<Vec<String>>) -> BTreeSet<Vec<String>> {
    let mut found = BTreeSet::new();
    let code = &m.code;
    let mut rest = code.as_str();
    while let Some(i) = rest.find("use ") {
        let before = rest[..i].chars().last();
        rest = &rest[i + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let end = rest.find(';').unwrap_or(rest.len());
        for p in expand(&rest[..end]) {
            found.extend(resolve(&m.path, &p, known));
        }
    }
    let children: Vec<String> = known
        .iter()
        .filter(|k| k.len() == m.path.len() + 1 && k.starts_with(&m.path))
        .map(|k| k.last().unwrap().clone())
        .collect();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let start_ok = i == 0
            || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_' || chars[i - 1] == ':');
        if start_ok && (chars[i].is_alphabetic() || chars[i] == '_') {
            let j = (i..chars.len())
                .find(|&j| !(chars[j].is_alphanumeric() || chars[j] == '_' || chars[j] == ':'))
                .unwrap_or(chars.len());
            let word: String = chars[i..j].iter().collect();
            let head = word.split("::").next().unwrap_or("");
            if word.contains("::")
                && (["crate", "super", "self"].contains(&head)
                    || children.iter().any(|c| c == head))
            {
                found.extend(resolve(&m.path, &word, known));
            }
            i = j;
        } else {
            i += 1;
        }
    }
    found.remove(&m.path);
    found
}

/// The LAYERS entry a module falls in (the longest), with its layer.
fn unit(path: &[String]) -> Option<(usize, &'static str)> {
    let name = if path.is_empty() {
        "crate".to_string()
    } else {
        path.join("::")
    };
    LAYERS
        .iter()
        .enumerate()
        .flat_map(|(n, layer)| layer.iter().map(move |e| (n, *e)))
        .filter(|(_, e)| name == *e || name.starts_with(&format!("{e}::")))
        .max_by_key(|(_, e)| e.len())
}

/// Each module's imports.
type Edges = BTreeMap<Vec<String>, BTreeSet<Vec<String>>>;

fn graph() -> (Vec<Module>, Edges) {
    let mods = modules();
    let known: BTreeSet<Vec<String>> = mods.iter().map(|m| m.path.clone()).collect();
    let edges = mods
        .iter()
        .map(|m| (m.path.clone(), imports(m, &known)))
        .collect();
    (mods, edges)
}

#[test]
fn proxy_wasm_stays_in_lib_and_host() {
    let offenders: Vec<String> = modules()
        .into_iter()
        .filter(|m| !m.path.is_empty() && m.path.first().is_none_or(|p| p != "host"))
        .filter(|m| m.code.contains("proxy_wasm"))
        .map(|m| m.file.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "proxy_wasm used in {offenders:?}");
}

#[test]
fn no_layer_imports_one_above_it() {
    let (_, edges) = graph();
    let mut wrong = Vec::new();
    for (from, targets) in &edges {
        let Some((lf, _)) = unit(from) else {
            wrong.push(format!(
                "{} is in no layer (add it to LAYERS)",
                from.join("::")
            ));
            continue;
        };
        for to in targets {
            match unit(to) {
                None => wrong.push(format!("{} is in no layer", to.join("::"))),
                Some((lt, _)) if lt > lf => {
                    wrong.push(format!("{} imports {}", from.join("::"), to.join("::")))
                }
                Some(_) => {}
            }
        }
    }
    assert!(wrong.is_empty(), "imports up the layers: {wrong:#?}");
}

#[test]
fn no_import_circles() {
    let (_, edges) = graph();
    // Between modules (LAYERS entries), and between sibling files of one module.
    let mut by_unit: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut by_file: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, targets) in &edges {
        let fu = unit(from).map_or("?", |u| u.1).to_string();
        for to in targets {
            let tu = unit(to).map_or("?", |u| u.1).to_string();
            if tu != fu {
                by_unit.entry(fu.clone()).or_default().insert(tu);
            }
            // Siblings: same parent, neither the parent's own `mod.rs`.
            let (f, t) = (from.len(), to.len());
            if f > 1 && f == t && from[..f - 1] == to[..t - 1] {
                by_file
                    .entry(from.join("::"))
                    .or_default()
                    .insert(to.join("::"));
            }
        }
    }
    for (what, g) in [("modules", by_unit), ("sibling files", by_file)] {
        let circles = circles(&g);
        assert!(
            circles.is_empty(),
            "import circles between {what}: {circles:?}"
        );
    }
}

/// Strongly connected components of more than one node.
fn circles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(n) = todo.pop() {
            for m in g.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    todo.push(m.clone());
                }
            }
        }
        seen
    };
    let nodes: BTreeSet<&String> = g.keys().chain(g.values().flatten()).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    for n in nodes {
        let from_n = reach(n);
        let comp: Vec<String> = from_n
            .iter()
            .filter(|m| *m != n && reach(m).contains(n))
            .cloned()
            .chain(std::iter::once(n.clone()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if comp.len() > 1 && !out.contains(&comp) {
            out.push(comp);
        }
    }
    out
}

/// The checker finds what it must: a planted upward import, a planted `proxy_wasm`, a
/// planted circle (so the tests above cannot pass by reading nothing).
#[test]
fn the_checker_sees_what_it_checks() {
    let known: BTreeSet<Vec<String>> = [
        vec![],
        vec!["support".to_string()],
        vec!["filter".to_string()],
        vec!["filter".to_string(), "call".to_string()],
    ]
    .into_iter()
    .collect();
    let planted = Module {
        path: vec!["support".into()],
        file: PathBuf::from("planted.rs"),
        code: without_tests(&strip(
            "// crate::filter in a comment\nuse crate::filter::call::{self as c, Call};\nfn f() { let s = \"crate::filter\"; proxy_wasm::x(); }\n#[cfg(test)]\nmod tests { use crate::filter; }\n",
        )),
    };
    let found = imports(&planted, &known);
    assert_eq!(
        found,
        [vec!["filter".to_string(), "call".to_string()]]
            .into_iter()
            .collect()
    );
    let (ls, _) = unit(&planted.path).unwrap();
    let (lf, _) = unit(&["filter".to_string(), "call".to_string()]).unwrap();
    assert!(lf > ls, "filter sits above support");
    assert!(planted.code.contains("proxy_wasm"));
    assert_eq!(
        unit(&["config".into(), "reader".into()]).unwrap().1,
        "config::reader"
    );
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), ["b".to_string()].into_iter().collect()),
        ("b".to_string(), ["a".to_string()].into_iter().collect()),
    ]
    .into_iter()
    .collect();
    assert_eq!(circles(&g), vec![vec!["a".to_string(), "b".to_string()]]);
    // Every module of the crate is found (the graph is not empty by accident).
    let (mods, edges) = graph();
    assert!(mods
        .iter()
        .any(|m| m.path == ["filter".to_string(), "call".to_string()]));
    assert!(edges
        .get(&vec!["filter".to_string()])
        .is_some_and(|t| t.contains(&vec!["config".to_string()])));
}

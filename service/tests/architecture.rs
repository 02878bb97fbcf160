//! The service's top-level modules are layered, and data flows one way
//! through them: a module may name only modules in layers below its own
//! (docs/architecture.md, "Layers of the service"). This test reads every
//! `crate::` path in `service/src/**/*.rs` (in `use` items, grouped or not,
//! and inline in code; comments and string literals are skipped), maps each
//! file to its top-level module, and fails, naming the file and the path,
//! when a module reaches up or sideways, when a module is missing from the
//! declared order, or when the modules form a circle.
//!
//! Test code counts too: a test that needs a module above its own belongs
//! to that module, or to an integration test.
//!
//! Only `crate::` paths are read: no file reaches the crate root through
//! `super::` (the root's modules are only ever named `crate::…`).
//!
//! Run it alone with `cargo test -p hopwatch-service --test architecture`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// The declared order, top to bottom. A module may import from any module in
/// a later layer, never from its own layer or an earlier one. docs/architecture.md
/// states the same order (checked below).
const LAYERS: &[&[&str]] = &[
    &["cli"],
    &["webapi"],
    &["remote"],
    &["monitor"],
    &["config"],
    &["alerts"],
    &["store", "analysis", "enrich", "report"],
    &["health", "model", "stats", "peer"],
    &["probe"],
    &["sys"],
];

/// One `crate::` path in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Import {
    /// Relative to the workspace, e.g. `service/src/alerts/mod.rs`.
    file: String,
    line: usize,
    /// The top-level module the file belongs to.
    from: String,
    /// The top-level module the path names.
    to: String,
    /// The path as written, e.g. `crate::monitor::TargetView`.
    path: String,
}

/// Why the layering is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Violation {
    /// `import` names a module in the same layer or one above.
    Upward { import: Import },
    /// A top-level module that the declared order does not place.
    Undeclared { module: String, file: String },
    /// Top-level modules that import each other round a circle.
    Circle { modules: Vec<String> },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Upward { import: i } => write!(
                f,
                "{}:{}: `{}` imports `{}`, but {} sits above {} (or beside it) in the declared order",
                i.file, i.line, i.from, i.path, i.to, i.from
            ),
            Violation::Undeclared { module, file } => write!(
                f,
                "{file}: module `{module}` is not in the declared order (LAYERS here and docs/architecture.md)"
            ),
            Violation::Circle { modules } => {
                write!(f, "modules in a circle: {}", modules.join(" -> "))
            }
        }
    }
}

/// The layer index of `module`, 0 at the top.
fn layer_of(layers: &[&[&str]], module: &str) -> Option<usize> {
    layers.iter().position(|layer| layer.contains(&module))
}

/// The top-level module of a file, from its path under `src/`
/// (`alerts/mod.rs` and `alerts/engine.rs` are `alerts`, `model.rs` is
/// `model`); `None` for the crate roots `lib.rs` and `main.rs`.
fn module_of(relative: &Path) -> Option<String> {
    let mut parts = relative.components();
    let first = parts.next()?.as_os_str().to_str()?;
    let is_file = parts.next().is_none();
    if is_file {
        let stem = first.strip_suffix(".rs")?;
        return (!matches!(stem, "lib" | "main")).then(|| stem.to_owned());
    }
    Some(first.to_owned())
}

/// `text` with comments, string literals and char literals blanked out
/// (newlines kept, so line numbers hold), so that only code is searched.
fn code_only(text: &str) -> Vec<char> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = chars.clone();
    let blank = |out: &mut Vec<char>, from: usize, to: usize| {
        for c in &mut out[from..to.min(chars.len())] {
            if *c != '\n' {
                *c = ' ';
            }
        }
    };
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            let end = chars[i..]
                .iter()
                .position(|&c| c == '\n')
                .map_or(chars.len(), |n| i + n);
            blank(&mut out, i, end);
            i = end;
        } else if c == '/' && next == Some('*') {
            // Block comments nest in Rust.
            let (mut depth, mut j) = (1, i + 2);
            while j < chars.len() && depth > 0 {
                if chars[j] == '/' && chars.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 2;
                } else if chars[j] == '*' && chars.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if c == 'r' && (i == 0 || !ident(chars[i - 1]) || chars[i - 1] == 'b') && {
            let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
            chars.get(i + 1 + hashes) == Some(&'"')
        } {
            // A raw string: r"…", r#"…"#, br"…".
            let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
            let body = i + 2 + hashes;
            let mut j = body;
            while j < chars.len() {
                if chars[j] == '"' && chars[j + 1..].iter().take(hashes).all(|&c| c == '#') {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            blank(&mut out, body, j);
            i = j;
        } else if c == '"' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            blank(&mut out, i + 1, j);
            i = j + 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '"'), not a lifetime ('a).
            if next == Some('\\') {
                let end = chars[i + 2..]
                    .iter()
                    .position(|&c| c == '\'')
                    .map_or(chars.len(), |n| i + 2 + n + 1);
                blank(&mut out, i + 1, end - 1);
                i = end;
            } else if chars.get(i + 2) == Some(&'\'') {
                blank(&mut out, i + 1, i + 2);
                i += 3;
            } else {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The items of a `{…}` group starting at `open`, split at its top-level
/// commas, and the index after its closing brace.
fn group_items(code: &[char], open: usize) -> (Vec<String>, usize) {
    let (mut depth, mut items, mut item) = (0usize, Vec::new(), String::new());
    let mut j = open;
    while j < code.len() {
        let c = code[j];
        j += 1;
        match c {
            '{' => {
                depth += 1;
                if depth == 1 {
                    continue;
                }
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => {
                items.push(std::mem::take(&mut item));
                continue;
            }
            _ => {}
        }
        item.push(c);
    }
    items.push(item);
    let items = items
        .into_iter()
        .map(|i| i.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|i| !i.is_empty())
        .collect();
    (items, j)
}

/// Every `crate::` path in `text` that names a module other than `from`:
/// `(line, module named, path as written)`.
fn crate_paths(text: &str) -> Vec<(usize, String, String)> {
    let code = code_only(text);
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let line_at = |i: usize| code[..i].iter().filter(|&&c| c == '\n').count() + 1;
    let mut found = Vec::new();
    let mut i = 0;
    while i + 7 <= code.len() {
        let before = i.checked_sub(1).map(|b| code[b]);
        // `$crate` is a macro's, and `mycrate` is another word.
        if code[i..i + 5] != ['c', 'r', 'a', 't', 'e']
            || before.is_some_and(|c| ident(c) || c == '$')
        {
            i += 1;
            continue;
        }
        let mut j = i + 5;
        while j < code.len() && code[j].is_whitespace() {
            j += 1;
        }
        if code.get(j) != Some(&':') || code.get(j + 1) != Some(&':') {
            i += 5;
            continue;
        }
        j += 2;
        while j < code.len() && code[j].is_whitespace() {
            j += 1;
        }
        if code.get(j) == Some(&'{') {
            // use crate::{a::X, b::{Y, Z}};
            let (items, end) = group_items(&code, j);
            for item in items {
                let module: String = item.chars().take_while(|&c| ident(c)).collect();
                if !module.is_empty() && module != "self" {
                    found.push((line_at(i), module, format!("crate::{item}")));
                }
            }
            i = end;
        } else {
            let end = code[j..]
                .iter()
                .position(|&c| !(ident(c) || c == ':'))
                .map_or(code.len(), |n| j + n);
            let mut path: String = code[j..end].iter().collect();
            let mut next = end;
            if path.ends_with("::") && code.get(end) == Some(&'{') {
                // use crate::config::{A, B}: named with its group.
                let (items, after) = group_items(&code, end);
                path = format!("{path}{{{}}}", items.join(", "));
                next = after;
            }
            let module: String = path.chars().take_while(|&c| ident(c)).collect();
            if !module.is_empty() {
                found.push((line_at(i), module, format!("crate::{path}")));
            }
            i = next;
        }
    }
    found
}

/// The imports between top-level modules in `files` (`(path under src/,
/// text)`); a file's paths to its own module are not imports.
fn imports(files: &[(PathBuf, String)]) -> Vec<Import> {
    let mut all = Vec::new();
    for (relative, text) in files {
        let Some(from) = module_of(relative) else {
            continue;
        };
        for (line, to, path) in crate_paths(text) {
            if to != from {
                all.push(Import {
                    file: format!("service/src/{}", relative.display()),
                    line,
                    from: from.clone(),
                    to,
                    path,
                });
            }
        }
    }
    all
}

/// The circles among modules that import each other (each once, starting
/// at its smallest module name).
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    fn walk(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        found: &mut BTreeSet<Vec<String>>,
    ) {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut circle = stack[at..].to_vec();
            let start = (0..circle.len()).min_by_key(|&k| &circle[k]).unwrap_or(0);
            circle.rotate_left(start);
            circle.push(circle[0].clone());
            found.insert(circle);
            return;
        }
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            walk(next, edges, stack, found);
        }
        stack.pop();
    }
    let mut found = BTreeSet::new();
    for node in edges.keys() {
        walk(node, edges, &mut Vec::new(), &mut found);
    }
    found.into_iter().collect()
}

/// Everything wrong with `files` against `layers`.
fn check(files: &[(PathBuf, String)], layers: &[&[&str]]) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut undeclared = BTreeSet::new();
    for (relative, _) in files {
        if let Some(module) = module_of(relative) {
            if layer_of(layers, &module).is_none() && undeclared.insert(module.clone()) {
                violations.push(Violation::Undeclared {
                    module,
                    file: format!("service/src/{}", relative.display()),
                });
            }
        }
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for import in imports(files) {
        edges
            .entry(import.from.clone())
            .or_default()
            .insert(import.to.clone());
        let (Some(from), Some(to)) = (layer_of(layers, &import.from), layer_of(layers, &import.to))
        else {
            continue;
        };
        if to <= from {
            violations.push(Violation::Upward { import });
        }
    }
    violations.extend(
        circles(&edges)
            .into_iter()
            .map(|modules| Violation::Circle { modules }),
    );
    violations
}

/// Every `.rs` file under `dir`, as `(path under dir, text)`, sorted.
fn read_tree(dir: &Path) -> Vec<(PathBuf, String)> {
    fn visit(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                visit(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let relative = path.strip_prefix(root).expect("under the root").to_owned();
                out.push((relative, text));
            }
        }
    }
    let mut files = Vec::new();
    visit(dir, dir, &mut files);
    files.sort();
    files
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_service_modules_import_only_downwards_and_form_no_circle() {
    let files = read_tree(&manifest_dir().join("src"));
    assert!(files.len() > 50, "read the sources: {} files", files.len());
    assert!(
        imports(&files).iter().any(|i| i.from == "cli"),
        "the parser finds the imports it is meant to check"
    );
    let violations = check(&files, LAYERS);
    let report: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert!(
        violations.is_empty(),
        "the service's layering is broken:\n{}",
        report.join("\n")
    );
}

#[test]
fn docs_declare_the_same_order() {
    let docs = std::fs::read_to_string(manifest_dir().join("../docs/architecture.md"))
        .expect("docs/architecture.md");
    // The order is the one line of the doc that starts at `cli →`.
    let line = docs
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("cli →"))
        .expect("docs/architecture.md declares the order on a line starting `cli →`");
    let declared: Vec<Vec<String>> = line
        .split('→')
        .map(|layer| {
            let mut modules: Vec<String> = layer
                .trim()
                .trim_start_matches('{')
                .trim_end_matches('}')
                .split(',')
                .map(|m| m.trim().to_owned())
                .collect();
            modules.sort();
            modules
        })
        .collect();
    let expected: Vec<Vec<String>> = LAYERS
        .iter()
        .map(|layer| {
            let mut modules: Vec<String> = layer.iter().map(|m| (*m).to_owned()).collect();
            modules.sort();
            modules
        })
        .collect();
    assert_eq!(declared, expected, "docs/architecture.md: {line}");
}

// ---- the checker itself ----

fn file(path: &str, text: &str) -> (PathBuf, String) {
    (PathBuf::from(path), text.to_owned())
}

#[test]
fn a_reintroduced_upward_import_is_named_with_its_file() {
    let files = [
        file("alerts/mod.rs", "use crate::monitor::TargetView;\n"),
        file("monitor/mod.rs", "use crate::alerts::Alerts;\n"),
    ];
    let violations = check(&files, LAYERS);
    let upward: Vec<String> = violations
        .iter()
        .filter(|v| matches!(v, Violation::Upward { .. }))
        .map(ToString::to_string)
        .collect();
    assert_eq!(upward.len(), 1, "{violations:?}");
    assert!(
        upward[0].starts_with("service/src/alerts/mod.rs:1:"),
        "{}",
        upward[0]
    );
    assert!(
        upward[0].contains("`crate::monitor::TargetView`"),
        "{}",
        upward[0]
    );
    let circle = violations
        .iter()
        .find_map(|v| match v {
            Violation::Circle { modules } => Some(modules.clone()),
            _ => None,
        })
        .expect("alerts and monitor import each other");
    assert_eq!(circle, ["alerts", "monitor", "alerts"]);
}

#[test]
fn grouped_and_inline_paths_are_read_and_comments_and_strings_are_not() {
    let text = r##"
//! See [`crate::monitor`]: a doc link is no import.
use crate::{
    analysis::{PathEvent, TargetSnapshot},
    config::{self, Config},
};
use crate::model::TargetId;

/* crate::webapi in a block comment */
fn f() {
    let s = "crate::cli::run";
    let r = r#"crate::cli "quoted""#;
    let c = '"';
    let dto = crate::webapi::alerts::webhook(status);
    let id: crate::model::TargetId = todo!();
}
"##;
    let found: Vec<(usize, String, String)> = crate_paths(text);
    let modules: Vec<&str> = found.iter().map(|(_, m, _)| m.as_str()).collect();
    assert_eq!(
        modules,
        ["analysis", "config", "model", "webapi", "model"],
        "{found:?}"
    );
    assert_eq!(found[0].2, "crate::analysis::{PathEvent, TargetSnapshot}");
    assert_eq!(found[2].2, "crate::model::TargetId");
    let tail = crate_paths("use crate::config::{\n    AlertRules,\n    LatencyStat,\n};");
    assert_eq!(
        tail,
        [(
            1,
            "config".to_owned(),
            "crate::config::{AlertRules, LatencyStat}".to_owned()
        )]
    );
    assert_eq!(
        (found[3].0, found[3].2.as_str()),
        (14, "crate::webapi::alerts::webhook")
    );

    let violations = check(&[file("alerts/tests.rs", text)], LAYERS);
    let named: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert_eq!(named.len(), 2, "{named:?}");
    assert!(
        named[0].contains("`crate::config::{self, Config}`"),
        "{named:?}"
    );
    assert!(
        named[1].starts_with("service/src/alerts/tests.rs:14:")
            && named[1].contains("`crate::webapi::alerts::webhook`"),
        "{named:?}"
    );
}

#[test]
fn a_module_may_not_import_beside_itself_nor_be_left_out() {
    let files = [
        file("store/mod.rs", "use crate::analysis::PathEvent;\n"),
        file("gadgets.rs", "use crate::probe::Engine;\n"),
        file("lib.rs", "pub mod store;\npub use crate::store::Store;\n"),
    ];
    let violations = check(&files, LAYERS);
    assert!(
        violations.iter().any(|v| matches!(
            v,
            Violation::Upward { import } if import.from == "store" && import.to == "analysis"
        )),
        "{violations:?}"
    );
    assert!(
        violations.contains(&Violation::Undeclared {
            module: "gadgets".into(),
            file: "service/src/gadgets.rs".into(),
        }),
        "{violations:?}"
    );
    assert_eq!(
        violations.len(),
        2,
        "the crate root may name anything: {violations:?}"
    );
}

#[test]
fn circles_are_found_whatever_the_layers_say() {
    let edges: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a", "d"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(circles(&edges), vec![vec!["a", "b", "c", "a"]]);
}

//! The shape of the code: layers depend only on the layers below them, and the timely layer
//! stays thin (one generic stage host; per stage only what is specific to it).

use std::path::{Path, PathBuf};

/// The layers, bottom to top; modules on one line share a level.
const LAYERS: [&[&str]; 6] =
    [&["app"], &["protocol"], &["storage"], &["dataflow"], &["net", "client", "embed"], &["cluster"]];

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
    files
}

fn level_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|level| level.contains(&module))
}

/// The code of a file without comment lines.
fn code(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().map(str::trim).filter(|l| !l.starts_with("//")).map(String::from).collect()
}

#[test]
fn no_layer_uses_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for (level, modules) in LAYERS.iter().enumerate() {
        for module in modules.iter() {
            for file in rust_files(&src.join(module)) {
                for line in code(&file) {
                    for used in line.split("crate::").skip(1) {
                        let name: String = used.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                        if level_of(&name).is_some_and(|l| l > level) {
                            violations.push(format!("{}: uses crate::{name}: {line}", file.display()));
                        }
                    }
                    if level < 3 && line.contains("timely::") {
                        violations.push(format!("{}: a layer below dataflow uses timely: {line}", file.display()));
                    }
                }
            }
        }
    }
    assert!(violations.is_empty(), "layering violations:\n{}", violations.join("\n"));
}

/// The crate docs list the layers top to bottom, as they are.
#[test]
fn the_crate_docs_list_the_layers_in_order() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let find = |module: &str| lib.find(&format!("[`{module}`]")).unwrap_or_else(|| panic!("src/lib.rs lacks {module}"));
    let positions: Vec<usize> = LAYERS.iter().rev().map(|level| level.iter().map(|m| find(m)).min().unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "src/lib.rs lists the layers out of order");
}

/// Counted as the budget counts: no blank lines, comment lines, `use` lines, lone closing
/// brackets, or `#[cfg(test)]` modules.
fn counted_lines(path: &Path) -> Vec<String> {
    let mut counted = Vec::new();
    let (mut depth, mut skip_below, mut test_attribute, mut in_use) = (0i64, None, false, false);
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let trimmed = line.trim();
        let opened = line.matches('{').count() as i64 - line.matches('}').count() as i64;
        if let Some(below) = skip_below {
            depth += opened;
            if depth <= below {
                skip_below = None;
            }
            continue;
        }
        if test_attribute && trimmed.starts_with("mod ") {
            (skip_below, test_attribute) = (Some(depth), false);
            depth += opened;
            continue;
        }
        test_attribute = trimmed == "#[cfg(test)]";
        depth += opened;
        let is_use = trimmed.starts_with("use ") || trimmed.starts_with("pub use ");
        if in_use || is_use {
            in_use = !trimmed.ends_with(';');
            continue;
        }
        let lone = trimmed.chars().all(|c| "})];,".contains(c));
        if !trimmed.is_empty() && !trimmed.starts_with("//") && !lone && !test_attribute {
            counted.push(trimmed.to_string());
        }
    }
    counted
}

/// Every function of a file (outside test modules) with its counted lines, from its `fn` line to
/// its closing brace.
fn function_lengths(path: &Path) -> Vec<(String, usize)> {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    let mut functions = Vec::new();
    let mut open: Vec<(String, i64, usize)> = Vec::new();
    let mut depth = 0i64;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("//") {
            continue;
        }
        let is_fn = (trimmed.contains("fn ") && trimmed.contains('(')) && !trimmed.contains("Fn(");
        if is_fn {
            open.push((trimmed.to_string(), depth, 0));
        }
        let lone = trimmed.chars().all(|c| "})];,".contains(c));
        if !lone {
            open.iter_mut().for_each(|f| f.2 += 1);
        }
        depth += line.matches('{').count() as i64 - line.matches('}').count() as i64;
        while open.last().is_some_and(|f| depth <= f.1 && (line.contains('}') || line.ends_with(';'))) {
            let (name, _, length) = open.pop().unwrap();
            functions.push((name, length));
        }
    }
    functions
}

/// The timely layer holds no protocol and no IO: it stays within its line budget, and no
/// function in it (an operator constructor above all) is longer than 50 counted lines.
#[test]
fn the_timely_layer_is_thin() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/dataflow");
    let mut total = 0;
    for file in rust_files(&dir) {
        total += counted_lines(&file).len();
        for (name, length) in function_lengths(&file) {
            assert!(length <= 50, "{}: `{name}` has {length} counted lines, more than 50", file.display());
        }
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains("std::fs") && !text.contains("std::thread"),
            "{}: files and threads are storage's",
            file.display()
        );
    }
    // 700 for the stage host and the stages, 20 for the doors' batching (the reply sink's one
    // reply per command and one batch per mailbox, the ingress's quiet submissions).
    assert!(total <= 720, "src/dataflow has {total} counted lines, over its budget of 720");
}

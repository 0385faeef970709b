//! Table I of the paper (Section VI-A): lines of code per mechanism, counted by `tokei`, beside
//! the paper's TARA and BFT-SMaRt.
//!
//! The files are mapped to mechanisms in `papers/mechanisms.toml`. Each file is counted the way
//! the paper counts its Java: no blank lines, no comments (tokei's classification, doc comments
//! and their examples included), no imports and no lines that only close a bracket. Before tokei
//! sees a file, [`strip`] blanks out its `use` declarations, its `mod name;` declarations, every
//! item under `#[cfg(test)]` or `#[cfg(feature = "mutations")]` (unit tests and test-only hooks),
//! and lines made only of brackets and separators; tokei then counts the code lines of the rest.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The paper's Table I: the BFT-SMaRt and TARA totals.
pub const PAPER_TARA_TOTAL: u64 = 1_476;
/// The paper's Table I: BFT-SMaRt's total.
pub const PAPER_BFT_SMART_TOTAL: u64 = 3_997;

/// `papers/mechanisms.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// Folders every file of which must be mapped.
    pub scope: Vec<String>,
    /// The rows, in table order.
    pub mechanism: Vec<Mechanism>,
    /// Files in scope deliberately left out, with the reason.
    #[serde(default)]
    pub not_counted: BTreeMap<String, String>,
}

/// One row of the table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mechanism {
    pub name: String,
    /// The paper's count for TARA (absent: a row the paper's prototype did not have).
    pub paper_tara: Option<u64>,
    /// The paper's count for BFT-SMaRt.
    pub paper_bft_smart: Option<u64>,
    pub files: Vec<String>,
}

/// One counted row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    pub files: usize,
    /// Code lines after [`strip`], as tokei counts them.
    pub lines: u64,
    /// tokei's code lines of the same files as they are (tests and imports included).
    pub tokei_raw: u64,
    pub paper_tara: Option<u64>,
    pub paper_bft_smart: Option<u64>,
}

/// The table: the rows in mapping order.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub rows: Vec<Row>,
}

impl Table {
    /// The rows the paper has a TARA count for (its five mechanisms).
    pub fn paper_rows(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.paper_tara.is_some())
    }
    /// tara's lines in the paper's five mechanisms.
    pub fn paper_total(&self) -> u64 {
        self.paper_rows().map(|r| r.lines).sum()
    }
    /// tara's lines in every row.
    pub fn total(&self) -> u64 {
        self.rows.iter().map(|r| r.lines).sum()
    }
}

/// Reads and parses the mapping.
pub fn load(path: &Path) -> Result<Mapping, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// What is wrong with the mapping against the tree at `root`: files in scope mapped nowhere,
/// files mapped twice, mapped files that do not exist. Empty when the mapping is sound.
pub fn problems(root: &Path, mapping: &Mapping) -> Result<Vec<String>, String> {
    let mut problems = Vec::new();
    let mut mapped = BTreeSet::new();
    let listed = mapping.mechanism.iter().flat_map(|m| m.files.iter()).chain(mapping.not_counted.keys());
    for file in listed {
        if !mapped.insert(file.clone()) {
            problems.push(format!("{file} is mapped twice"));
        }
        if !root.join(file).is_file() {
            problems.push(format!("{file} is mapped but does not exist"));
        }
    }
    for folder in &mapping.scope {
        for file in rust_files(&root.join(folder))? {
            let relative = file.strip_prefix(root).map_err(|e| e.to_string())?.to_string_lossy().replace('\\', "/");
            if !mapped.contains(&relative) {
                problems.push(format!("{relative} is mapped to no mechanism in papers/mechanisms.toml"));
            }
        }
    }
    Ok(problems)
}

/// The `.rs` files under `folder`, recursively, sorted.
fn rust_files(folder: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(folder).map_err(|e| format!("{}: {e}", folder.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            files.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Counts every row of `mapping` in the tree at `root`.
pub fn count(root: &Path, mapping: &Mapping) -> Result<Table, String> {
    let config = tokei::Config::default();
    let mut rows = Vec::new();
    for mechanism in &mapping.mechanism {
        let (mut lines, mut tokei_raw) = (0, 0);
        for file in &mechanism.files {
            let path = root.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let stripped = strip(&text).map_err(|e| format!("{file}: {e}"))?;
            lines += tokei::LanguageType::Rust.parse_from_str(&stripped, &config).code as u64;
            tokei_raw += tokei::LanguageType::Rust.parse_from_str(&text, &config).code as u64;
        }
        rows.push(Row {
            name: mechanism.name.clone(),
            files: mechanism.files.len(),
            lines,
            tokei_raw,
            paper_tara: mechanism.paper_tara,
            paper_bft_smart: mechanism.paper_bft_smart,
        });
    }
    Ok(Table { rows })
}

/// `text` with every line the table does not count replaced by an empty line (see the module
/// documentation). Fails if a test-only item does not end where rustfmt would close it.
pub fn strip(text: &str) -> Result<String, String> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((number, line)) = lines.next() {
        let trimmed = line.trim();
        if is_test_only_attribute(trimmed) {
            out.push("");
            skip_item(&mut lines, &mut out).map_err(|e| format!("line {}: {e}", number + 1))?;
        } else if is_import(trimmed) {
            out.push("");
            let mut end = trimmed.ends_with(';');
            while !end {
                let Some((_, next)) = lines.next() else {
                    return Err(format!("line {}: unterminated use", number + 1));
                };
                out.push("");
                end = next.trim_end().ends_with(';');
            }
        } else if is_only_brackets(trimmed) {
            out.push("");
        } else {
            out.push(line);
        }
    }
    let mut stripped = out.join("\n");
    stripped.push('\n');
    Ok(stripped)
}

/// `#[cfg(test)]` or `#[cfg(feature = "mutations")]`: the next item exists only for tests.
fn is_test_only_attribute(trimmed: &str) -> bool {
    matches!(trimmed, "#[cfg(test)]" | "#[cfg(feature = \"mutations\")]")
}

/// A `use` declaration (any visibility) or a `mod name;` declaration.
fn is_import(trimmed: &str) -> bool {
    let rest = match trimmed.strip_prefix("pub") {
        Some(rest) if rest.starts_with('(') => rest.split_once(')').map_or(rest, |(_, r)| r).trim_start(),
        Some(rest) if rest.starts_with(' ') => rest.trim_start(),
        _ => trimmed,
    };
    rest.starts_with("use ")
        || rest.starts_with("extern crate ")
        || (rest.starts_with("mod ") && rest.ends_with(';') && !rest.contains('{'))
}

/// A line that only closes (or opens) brackets, such as `}`, `});` or `],`.
fn is_only_brackets(trimmed: &str) -> bool {
    !trimmed.is_empty() && trimmed.chars().all(|c| "{}()[];,".contains(c))
}

/// Blanks the item after a test-only attribute: further attributes, then either one line ending
/// in `;` or everything through the line that closes it at the item's own indentation.
fn skip_item<'a>(lines: &mut impl Iterator<Item = (usize, &'a str)>, out: &mut Vec<&'a str>) -> Result<(), String> {
    for (_, line) in lines.by_ref() {
        out.push("");
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with("#[") || trimmed.starts_with("//") {
            continue;
        }
        let balanced = trimmed.contains('{') && trimmed.matches('{').count() == trimmed.matches('}').count();
        if trimmed.ends_with(';') || balanced {
            return Ok(());
        }
        let indent = &line[..line.len() - line.trim_start().len()];
        let closing = [format!("{indent}}}"), format!("{indent}}};"), format!("{indent}}},")];
        for (_, line) in lines.by_ref() {
            out.push("");
            if closing.iter().any(|c| line.trim_end() == c) {
                return Ok(());
            }
        }
        return Err(format!("test-only item `{trimmed}` is never closed at its indentation"));
    }
    Err("a test-only attribute at the end of the file".into())
}

/// The table as Markdown, with how it was counted.
pub fn markdown(table: &Table) -> String {
    let mut out = String::from(
        "# Table I: lines of code per mechanism\n\n\
         tara's Rust (src/protocol, src/dataflow, src/storage) counted by tokei, beside the paper's \
         Java prototype of TARA and BFT-SMaRt (Lawniczak and Distler 2021, Table I).\n\n\
         | mechanism | files | tara | paper: TARA | paper: BFT-SMaRt | tara / paper TARA |\n\
         | --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let cell = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    for row in &table.rows {
        let ratio = row.paper_tara.map_or("-".to_string(), |p| format!("{:.2}", row.lines as f64 / p as f64));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {ratio} |",
            row.name,
            row.files,
            row.lines,
            cell(row.paper_tara),
            cell(row.paper_bft_smart)
        );
    }
    let paper_total = table.paper_total();
    let _ = writeln!(
        out,
        "| **the paper's five mechanisms** | {} | **{paper_total}** | **{PAPER_TARA_TOTAL}** | **{PAPER_BFT_SMART_TOTAL}** | {:.2} |",
        table.paper_rows().map(|r| r.files).sum::<usize>(),
        paper_total as f64 / PAPER_TARA_TOTAL as f64
    );
    let _ = writeln!(
        out,
        "| all rows | {} | {} | - | - | - |\n",
        table.rows.iter().map(|r| r.files).sum::<usize>(),
        table.total()
    );
    let raw: u64 = table.rows.iter().map(|r| r.tokei_raw).sum();
    let _ = write!(
        out,
        "How: `TARA_TABLE_ONE_OUT=papers/evaluation cargo test --test table_one` (or `cargo bench --bench paper`) maps files to mechanisms \
         with papers/mechanisms.toml and counts each file with the tokei library. Not counted, as in \
         the paper: blank lines and comments (tokei's classification; doc comments and their \
         examples are comments), `use` and `mod name;` declarations, items under `#[cfg(test)]` or \
         `#[cfg(feature = \"mutations\")]` (unit tests and test-only hooks; an item ends at the \
         closing bracket at its own indentation, as rustfmt writes it), and lines made only of \
         brackets and separators. tokei's plain code count of the same files is {raw} lines.\n\n\
         A file that serves several mechanisms counts for the one most of its lines serve: the \
         executors' checkpointing and state transfer count as request handling, the proposers' \
         take-over in a new view too. The rows for partitions and durability are tara's own: the \
         paper's prototype had neither (Heron kept no durable state for it).\n"
    );
    out
}

/// The table as CSV (one row per mechanism, then the totals).
pub fn csv(table: &Table) -> String {
    let mut out = String::from("mechanism,files,tara_lines,tokei_code_lines,paper_tara,paper_bft_smart\n");
    let cell = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
    for row in &table.rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{}",
            row.name,
            row.files,
            row.lines,
            row.tokei_raw,
            cell(row.paper_tara),
            cell(row.paper_bft_smart)
        );
    }
    let five: Vec<&Row> = table.paper_rows().collect();
    let _ = writeln!(
        out,
        "the paper's five mechanisms,{},{},{},{PAPER_TARA_TOTAL},{PAPER_BFT_SMART_TOTAL}",
        five.iter().map(|r| r.files).sum::<usize>(),
        table.paper_total(),
        five.iter().map(|r| r.tokei_raw).sum::<u64>()
    );
    out
}

/// Checks the mapping, counts, and writes `table1.md` and `table1.csv` into `out_dir`.
pub fn write(root: &Path, out_dir: &Path) -> Result<Table, String> {
    let mapping = load(&root.join("papers/mechanisms.toml"))?;
    let problems = problems(root, &mapping)?;
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    let table = count(root, &mapping)?;
    for (name, text) in [("table1.md", markdown(&table)), ("table1.csv", csv(&table))] {
        let path = out_dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(table)
}

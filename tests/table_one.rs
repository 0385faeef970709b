//! Table I (Section VI-A): every source file of the protocol, the dataflow and the storage layer
//! is mapped to a mechanism in papers/mechanisms.toml, and the counting rules do what the table
//! says. The test writes the table into a temporary folder (set `TARA_TABLE_ONE_OUT=papers/evaluation`
//! to rewrite the committed one; `cargo bench --bench paper` rewrites it too).

#[allow(dead_code)]
#[path = "../benches/common/table_one.rs"]
mod table_one;

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_source_file_is_mapped_once_and_exists() {
    let mapping = table_one::load(&root().join("papers/mechanisms.toml")).unwrap();
    let problems = table_one::problems(root(), &mapping).unwrap();
    assert!(problems.is_empty(), "papers/mechanisms.toml:\n{}", problems.join("\n"));
    for folder in ["src/protocol", "src/dataflow"] {
        assert!(mapping.scope.iter().any(|s| s == folder), "{folder} must be in scope");
    }
}

/// The check can fail: an unmapped file, a file mapped twice and a missing file are each named.
#[test]
fn an_unmapped_a_doubled_and_a_missing_file_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src/protocol")).unwrap();
    for file in ["a.rs", "b.rs", "c.rs"] {
        std::fs::write(dir.path().join("src/protocol").join(file), "fn f() {}\n").unwrap();
    }
    let mapping: table_one::Mapping = toml::from_str(
        r#"
        scope = ["src/protocol"]
        [[mechanism]]
        name = "request handling"
        files = ["src/protocol/a.rs", "src/protocol/a.rs", "src/protocol/gone.rs"]
        [not_counted]
        "src/protocol/b.rs" = "test support"
        "#,
    )
    .unwrap();
    let problems = table_one::problems(dir.path(), &mapping).unwrap();
    assert_eq!(
        problems,
        [
            "src/protocol/a.rs is mapped twice",
            "src/protocol/gone.rs is mapped but does not exist",
            "src/protocol/c.rs is mapped to no mechanism in papers/mechanisms.toml",
        ]
    );
}

/// Imports, test modules, test-only items, comments, blank lines and lone brackets are not
/// counted; everything else is.
#[test]
fn the_counting_rules_leave_out_what_the_paper_leaves_out() {
    let text = r#"//! A module.
use std::fmt;
pub(crate) use super::{
    a,
    b,
};
mod inner;

/// A doc comment.
pub fn counted(x: u64) -> u64 {
    let y = x + 1; // a trailing comment keeps the line
    y * 2
}

#[cfg(test)]
fn helper() -> u64 { 3 }

#[cfg(feature = "mutations")]
fn hook() {
    broken();
}

pub struct S {
    field: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t() {
        assert_eq!(counted(1), 4);
    }
}
"#;
    let stripped = table_one::strip(text).unwrap();
    assert_eq!(stripped.lines().count(), text.lines().count(), "lines are blanked, never removed");
    let kept: Vec<&str> = stripped.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("//")).collect();
    assert_eq!(
        kept,
        [
            "pub fn counted(x: u64) -> u64 {",
            "let y = x + 1; // a trailing comment keeps the line",
            "y * 2",
            "pub struct S {",
            "field: u64,",
        ]
    );
    let code = tokei::LanguageType::Rust.parse_from_str(&stripped, &tokei::Config::default()).code;
    assert_eq!(code, 5);
    assert!(
        table_one::strip("#[cfg(test)]\nmod tests {\n    fn t() {}\n").is_err(),
        "an unclosed test module is an error"
    );
}

#[test]
fn table_one_is_written_beside_the_papers_counts() {
    let scratch = tempfile::tempdir().unwrap();
    let out = std::env::var_os("TARA_TABLE_ONE_OUT").map_or(scratch.path().to_path_buf(), |o| root().join(o));
    let table = table_one::write(root(), &out).unwrap();
    let names: Vec<&str> = table.rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "request handling",
            "garbage collection",
            "view change",
            "data structures",
            "infrastructure",
            "partitions",
            "durability"
        ]
    );
    let paper: Vec<u64> = table.paper_rows().filter_map(|r| r.paper_tara).collect();
    assert_eq!(paper, [274, 185, 297, 421, 299]);
    assert_eq!(paper.iter().sum::<u64>(), table_one::PAPER_TARA_TOTAL);
    for row in &table.rows {
        assert!(row.lines > 0 && row.lines < row.tokei_raw, "{row:?}");
    }
    let markdown = std::fs::read_to_string(out.join("table1.md")).unwrap();
    assert!(markdown.contains(&format!("**{}**", table.paper_total())), "{markdown}");
    assert!(markdown.contains("**1476**") && markdown.contains("**3997**"), "{markdown}");
    let csv = std::fs::read_to_string(out.join("table1.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + table.rows.len() + 1, "{csv}");
}

/// No unit test survives the stripping of a real file, and nothing outside the test modules is
/// lost with them (every stripped file still has its non-test items).
#[test]
fn stripping_the_real_files_removes_every_test_and_keeps_the_code() {
    let mapping = table_one::load(&root().join("papers/mechanisms.toml")).unwrap();
    for file in mapping.mechanism.iter().flat_map(|m| m.files.iter()) {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        let stripped = table_one::strip(&text).unwrap();
        assert!(!stripped.contains("#[test]"), "{file}: a test survived");
        let items = |t: &str| {
            let starts =
                ["pub fn ", "pub struct ", "pub enum ", "pub trait ", "pub const ", "impl", "fn ", "struct ", "enum "];
            t.lines().filter(|l| starts.iter().any(|s| l.starts_with(s))).count()
        };
        assert_eq!(items(&stripped), items(&text), "{file}: top-level items lost");
    }
}

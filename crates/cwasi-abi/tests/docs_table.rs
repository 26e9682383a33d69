//! Checks `docs/abi.md` against the crate: the error-code table must list
//! exactly `ErrorCode::ALL`, in order, with the same values, names and
//! meanings, and every number and name the document states that the crate
//! defines must agree with it. A row added, removed or renumbered on either
//! side fails here.

use cwasi_abi::*;
use std::path::PathBuf;

/// The text of `docs/abi.md`, found from this crate's directory.
fn abi_md() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/abi.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The document with every run of white space made one space, so phrases are
/// found however the paragraphs are wrapped.
fn flat(doc: &str) -> String {
    doc.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The lines of the section that starts with the heading `## {title}`, up to
/// the next heading of the same or a higher level.
fn section<'a>(doc: &'a str, title: &str) -> Vec<&'a str> {
    let heading = format!("## {title}");
    let mut lines = doc.lines().skip_while(|l| l.trim_end() != heading);
    assert!(
        lines.next().is_some(),
        "docs/abi.md has no heading {heading:?}"
    );
    lines
        .take_while(|l| !(l.starts_with("# ") || l.starts_with("## ")))
        .collect()
}

/// The cells of a Markdown table row (`| a | b |` -> `["a", "b"]`).
fn cells(row: &str) -> Vec<&str> {
    let inner = row.trim();
    let inner = inner.strip_prefix('|').unwrap_or(inner);
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    inner.split('|').map(str::trim).collect()
}

/// One row of the error-code table.
#[derive(Debug)]
struct Row {
    code: i32,
    name: String,
    meaning: String,
}

/// The table under "## Error codes": the first Markdown table whose header is
/// `code | name | meaning`, parsed row by row until the first line that is
/// not part of it.
fn error_table(doc: &str) -> Vec<Row> {
    let lines = section(doc, "Error codes");
    let header = lines
        .iter()
        .position(|l| l.trim_start().starts_with('|') && cells(l) == ["code", "name", "meaning"])
        .expect("no `| code | name | meaning |` table under \"## Error codes\"");
    let separator = cells(lines[header + 1]);
    assert!(
        separator.len() == 3
            && separator
                .iter()
                .all(|c| !c.is_empty() && c.chars().all(|ch| matches!(ch, '-' | ':'))),
        "the table header is not followed by a separator row: {:?}",
        lines[header + 1]
    );
    lines[header + 2..]
        .iter()
        .take_while(|l| l.trim_start().starts_with('|'))
        .map(|line| {
            let c = cells(line);
            assert_eq!(
                c.len(),
                3,
                "a row of the error table has {} cells: {line:?}",
                c.len()
            );
            let code = c[0]
                .parse()
                .unwrap_or_else(|e| panic!("bad code {:?} in {line:?}: {e}", c[0]));
            let name = c[1]
                .strip_prefix('`')
                .and_then(|n| n.strip_suffix('`'))
                .unwrap_or_else(|| panic!("name {:?} is not in backticks in {line:?}", c[1]));
            Row {
                code,
                name: name.to_string(),
                meaning: c[2].to_string(),
            }
        })
        .collect()
}

/// A meaning from the table as `ErrorCode::description` words it: without
/// the final parenthesised examples and without backticks.
fn short_meaning(meaning: &str) -> String {
    let short = meaning
        .strip_suffix(')')
        .and_then(|m| m.rsplit_once(" ("))
        .map_or(meaning, |(head, _)| head);
    short.replace('`', "")
}

#[test]
fn error_table_matches_error_code_all() {
    let rows = error_table(&abi_md());
    let docs: Vec<(i32, &str)> = rows.iter().map(|r| (r.code, r.name.as_str())).collect();
    let code: Vec<(i32, &str)> = ErrorCode::ALL
        .iter()
        .map(|c| (c.as_raw(), c.name()))
        .collect();
    assert_eq!(
        docs, code,
        "the error table in docs/abi.md (left) and ErrorCode::ALL (right) differ"
    );
    for row in &rows {
        let c = ErrorCode::from_raw(row.code).expect("checked above");
        assert_eq!(
            short_meaning(&row.meaning),
            c.description(),
            "the meaning of {c} in docs/abi.md and ErrorCode::description differ"
        );
    }
}

/// The number at the start of `text` (digits, with an optional minus).
fn leading_number(text: &str) -> i64 {
    let end = text
        .char_indices()
        .find(|&(i, ch)| !(ch.is_ascii_digit() || (i == 0 && ch == '-')))
        .map_or(text.len(), |(i, _)| i);
    text[..end]
        .parse()
        .unwrap_or_else(|e| panic!("no number at the start of {text:?}: {e}"))
}

/// The number right after each occurrence of `before` in the document;
/// fails if there is none, so a reworded sentence is noticed.
fn numbers_after(doc: &str, before: &str) -> Vec<i64> {
    let found: Vec<i64> = doc
        .match_indices(before)
        .map(|(i, _)| leading_number(&doc[i + before.len()..]))
        .collect();
    assert!(!found.is_empty(), "docs/abi.md no longer says {before:?}");
    found
}

#[test]
fn abi_version_matches_the_title() {
    let doc = abi_md();
    let title = doc.lines().next().unwrap_or_default();
    let version = numbers_after(title, "# CWASI guest ABI, version ");
    assert_eq!(version, [i64::from(ABI_VERSION)], "{title:?}");
}

#[test]
fn name_limit_matches() {
    let doc = flat(&abi_md());
    let max = numbers_after(&doc, "A target name is UTF-8, 1 to ");
    assert_eq!(max, [MAX_NAME_LEN as i64]); // The name rule, as `validate_name` enforces it.
    assert!(
        doc.contains("names of ASCII letters, digits, `-`, `_` and `.`, not starting with `.`"),
        "docs/abi.md no longer states the name rule"
    );
    assert!(validate_name("a-b_c.d").is_ok() && validate_name(".a").is_err());
}

#[test]
fn handle_error_range_matches() {
    let doc = abi_md();
    // Every `-4095..=-1` in the text: the low end, then the high end.
    let lows: Vec<i64> = doc
        .match_indices("..=")
        .map(|(i, _)| {
            let start = doc[..i]
                .rfind(|ch: char| !(ch.is_ascii_digit() || ch == '-'))
                .map_or(0, |j| j + 1);
            leading_number(&doc[start..i])
        })
        .collect();
    let highs = numbers_after(&doc, "..=");
    assert!(lows.len() >= 2, "the handler error range is stated twice");
    assert!(lows.iter().all(|&n| n == HANDLE_ERROR_MIN), "{lows:?}");
    assert!(highs.iter().all(|&n| n == HANDLE_ERROR_MAX), "{highs:?}");
}

#[test]
fn result_slot_matches() {
    let doc = flat(&abi_md());
    let len = numbers_after(&doc, "`out_ptr` must point at ");
    assert_eq!(len, [RESULT_SLOT_LEN as i64]);
    // The layout `encode_result_slot` implements.
    assert!(
        doc.contains("two little-endian `u32` at `out_ptr`: `resp_ptr`, then `resp_len`"),
        "docs/abi.md no longer states the slot layout as (resp_ptr, resp_len), little-endian"
    );
}

#[test]
fn import_and_export_names_are_documented() {
    let doc = flat(&abi_md());
    assert!(doc.contains(&format!("## Imports (module `{CWASI_MODULE}`)")));
    for import in [
        IMPORT_CALL,
        IMPORT_CALL_START,
        IMPORT_CALL_WAIT,
        IMPORT_LAST_ERROR,
    ] {
        let heading = format!("### `{import}(");
        assert!(doc.contains(&heading), "no {heading:?} in docs/abi.md");
    }
    let seed = format!("`{SEED_MODULE}.{SEED_IMPORT_FUNC_CONNECT}(");
    assert!(doc.contains(&seed), "no {seed:?} in docs/abi.md");
    for export in [
        EXPORT_MEMORY,
        EXPORT_ALLOC,
        EXPORT_HANDLE,
        EXPORT_ERROR,
        EXPORT_START,
        EXPORT_INITIALIZE,
        SEED_EXPORT_ALLOCATE,
    ] {
        assert!(
            doc.contains(&format!("`{export}`")) || doc.contains(&format!("`{export}(")),
            "docs/abi.md does not mention the export `{export}`"
        );
    }
}

/// The parser itself, on a table with a changed row, so a broken parser
/// cannot make the real check pass vacuously.
#[test]
fn parser_sees_added_removed_and_renumbered_rows() {
    let doc = abi_md();
    let rows = error_table(&doc);
    assert_eq!(rows.len(), ErrorCode::ALL.len());

    let row = "| -13 | `NOT_CALLABLE` |";
    let line = doc
        .lines()
        .find(|l| l.starts_with(row))
        .expect("the NOT_CALLABLE row");
    let added = doc.replace(line, &format!("{line}\n| -14 | `NEW_CODE` | new |"));
    assert_eq!(error_table(&added).len(), ErrorCode::ALL.len() + 1);
    let removed = doc.replace(&format!("{line}\n"), "");
    assert_eq!(error_table(&removed).len(), ErrorCode::ALL.len() - 1);
    let renumbered = doc.replace(row, "| -14 | `NOT_CALLABLE` |");
    assert_eq!(error_table(&renumbered).last().map(|r| r.code), Some(-14));
}

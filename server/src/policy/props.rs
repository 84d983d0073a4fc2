//! Property tests for the policy parser and compiler (issue 14): any bytes, any
//! YAML-ish document and any line-level mutation of `examples/policy.yaml` either
//! compile or are refused with problems that name the file and where in it the
//! problem is; nothing panics. `PROPTEST_CASES` sets the count.

use super::compile;
use proptest::prelude::*;

const EXAMPLE: &str = include_str!("../../../examples/policy.yaml");
const SOURCE: &str = "props/policy.yaml";

/// Compiles and checks the shape of a refusal.
fn check(bytes: &[u8]) -> Result<bool, TestCaseError> {
    match compile(bytes, SOURCE) {
        Ok(p) => {
            // The version is the hash of the bytes: the same bytes, the same version.
            prop_assert_eq!(
                compile(bytes, SOURCE).map(|q| q.version).ok(),
                Some(p.version)
            );
            Ok(true)
        }
        Err(e) => {
            prop_assert_eq!(&e.source_name, SOURCE);
            let names_the_file = e
                .to_string()
                .starts_with(&format!("invalid policy {SOURCE}:"));
            prop_assert!(names_the_file);
            prop_assert!(!e.problems.is_empty());
            for problem in &e.problems {
                // `path: problem`, or the YAML reader's message with its location.
                prop_assert!(
                    problem.contains(": ") || problem.contains("line "),
                    "problem without a place: {:?}",
                    problem
                );
            }
            Ok(false)
        }
    }
}

#[derive(Debug, Clone)]
enum LineEdit {
    Delete(usize),
    Duplicate(usize),
    Swap(usize, usize),
    /// Replace the value after the first `: ` of a line.
    Value(usize, String),
    Indent(usize, bool),
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"-1.00\"".to_owned()),
        Just("\"0.0000001\"".to_owned()),
        Just("L9_GOD".to_owned()),
        Just("-5".to_owned()),
        Just("99999999999999999999".to_owned()),
        Just("\"https://api.example.com:443/./x\"".to_owned()),
        Just("[\"\\u202e\", \"a\\u200bb\"]".to_owned()),
        Just("{}".to_owned()),
        Just("~".to_owned()),
        Just("0s".to_owned()),
        Just("\"* https://user@x/**\"".to_owned()),
        "\\PC{0,12}",
        "[a-z0-9_.*-]{0,12}",
    ]
}

fn line_edit() -> impl Strategy<Value = LineEdit> {
    prop_oneof![
        1 => any::<usize>().prop_map(LineEdit::Delete),
        1 => any::<usize>().prop_map(LineEdit::Duplicate),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| LineEdit::Swap(a, b)),
        3 => (any::<usize>(), scalar()).prop_map(|(i, v)| LineEdit::Value(i, v)),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(i, d)| LineEdit::Indent(i, d)),
    ]
}

fn apply(lines: &mut Vec<String>, e: &LineEdit) {
    let n = lines.len();
    if n == 0 {
        return;
    }
    match e {
        LineEdit::Delete(i) => {
            lines.remove(i % n);
        }
        LineEdit::Duplicate(i) => lines.insert(i % n, lines[i % n].clone()),
        LineEdit::Swap(a, b) => lines.swap(a % n, b % n),
        LineEdit::Value(i, v) => {
            let l = &mut lines[i % n];
            if let Some(at) = l.find(": ") {
                l.truncate(at + 2);
                l.push_str(v);
            }
        }
        LineEdit::Indent(i, deeper) => {
            let l = &mut lines[i % n];
            if *deeper {
                l.insert_str(0, "  ");
            } else if l.starts_with("  ") {
                l.replace_range(..2, "");
            }
        }
    }
}

fn document() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("version"),
        Just("name"),
        Just("defaults"),
        Just("actions"),
        Just("agents"),
        Just("budgets"),
        Just("prices"),
        Just("audit"),
        Just("watchdog"),
        Just("match"),
        Just("tool"),
        Just("api"),
        Just("trust"),
        Just("id"),
        Just("tools"),
        Just("apis"),
        Just("allow"),
        Just("deny"),
        Just("max_usd"),
        Just("period"),
        Just("scope"),
        Just("approval"),
        Just("critical"),
        Just("arguments"),
        Just("gt"),
        Just("bogus"),
    ];
    let entry = (key, scalar());
    prop::collection::vec((0usize..3, entry, any::<bool>()), 0..12).prop_map(|items| {
        let mut out = String::from("version: 1\n");
        for (depth, (k, v), list) in items {
            let pad = "  ".repeat(depth);
            let dash = if list { "- " } else { "" };
            out.push_str(&format!("{pad}{dash}{k}: {v}\n"));
        }
        out
    })
}

#[test]
fn the_example_policy_compiles() {
    assert!(compile(EXAMPLE.as_bytes(), SOURCE).is_ok());
}

proptest! {
    #![proptest_config(crate::domain::props::cases(96))]

    #[test]
    fn arbitrary_bytes_are_refused_with_a_place(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        check(&bytes)?;
    }

    #[test]
    fn yaml_ish_documents_compile_or_name_the_place(doc in document()) {
        check(doc.as_bytes())?;
    }

    #[test]
    fn mutations_of_the_example_compile_or_name_the_place(edits in prop::collection::vec(line_edit(), 1..5)) {
        let mut lines: Vec<String> = EXAMPLE.lines().map(str::to_owned).collect();
        for e in &edits {
            apply(&mut lines, e);
        }
        check(lines.join("\n").as_bytes())?;
    }
}

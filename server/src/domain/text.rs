//! What a name may contain, and how free text is shown to people.
//!
//! Names an approver or an auditor reads (tool, model, data type, purpose) must look
//! like what they are: NFC-normalised, with no control characters (an ESC rewrites a
//! terminal), no format characters (a U+202E bidi override or a zero-width space makes
//! `delete_user` look like something else) and no line separators. Free text (reasons,
//! summaries) is accepted as sent and escaped wherever a human reads it.

use super::ParseError;
use unicode_normalization::is_nfc;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Control (Cc), format (Cf), line and paragraph separators (Zl, Zp), surrogates and
/// private-use characters: nothing a name needs, everything a spoof does.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
            | GeneralCategory::Surrogate
            | GeneralCategory::PrivateUse
    )
}

/// Checks a name's character set: NFC, no invisible characters, and (when
/// `allow_spaces` is false) no whitespace. Length is checked by the caller.
pub fn check_name(field: &str, value: &str, allow_spaces: bool) -> Result<(), ParseError> {
    if let Some(c) = value.chars().find(|c| is_invisible(*c)) {
        return Err(ParseError::new(
            field,
            format!(
                "must not contain control or format characters (found U+{:04X})",
                c as u32
            ),
        ));
    }
    if !allow_spaces && value.contains(char::is_whitespace) {
        return Err(ParseError::new(field, "must not contain whitespace"));
    }
    if !is_nfc(value) {
        return Err(ParseError::new(
            field,
            "must be in Unicode normalization form C (NFC)",
        ));
    }
    Ok(())
}

/// One field of free text made safe for a terminal: every invisible character,
/// tabs and line breaks included, is written as a `\u{…}` escape, so the field can
/// neither drive the terminal nor shift the columns of the row it is printed in.
pub fn escape_text(s: &str) -> String {
    escape_where(s, is_invisible, |c, out| {
        out.push_str(&format!("\\u{{{:x}}}", c as u32))
    })
}

/// One line of text for a terminal or a log: every invisible character except a tab is
/// written as a `\u{…}` escape, so a value can neither start a new line (forging a row
/// of a listing or a log record) nor drive the terminal. Backslashes are kept: file
/// paths and quoted JSON read as they are.
pub fn escape_line(s: &str) -> String {
    escape_where(
        s,
        |c| is_invisible(c) && c != '\t',
        |c, out| out.push_str(&format!("\\u{{{:x}}}", c as u32)),
    )
}

/// JSON text with every invisible character that a JSON serialiser leaves raw (C1
/// controls, format characters such as U+202E, line separators, private use) written
/// as a `\uXXXX` escape. The result parses to the same value; only the bytes differ.
/// Structural whitespace (newline, carriage return, tab) is kept: in valid JSON those
/// occur raw only between tokens.
pub fn json_safe(s: &str) -> String {
    escape_where(
        s,
        |c| is_invisible(c) && !matches!(c, '\n' | '\r' | '\t'),
        |c, out| {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        },
    )
}

fn escape_where(
    s: &str,
    escape: impl Fn(char) -> bool,
    write: impl Fn(char, &mut String),
) -> String {
    if !s.chars().any(&escape) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if escape(c) {
            write(c, &mut out);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spoofing_characters_are_refused_in_names() {
        for bad in [
            "delete\u{1b}[2J",
            "resu\u{202e}fdp.exe",
            "send\u{200b}_email",
            "a\u{2028}b",
            "a\u{feff}",
        ] {
            let e = check_name("action.tool", bad, false).unwrap_err();
            assert!(e.problem.contains("U+"), "{bad:?}: {}", e.problem);
        }
        // "é" as e + combining acute is not NFC; the precomposed form is.
        assert!(check_name("action.tool", "caf\u{65}\u{301}", false).is_err());
        assert!(check_name("action.tool", "caf\u{e9}", false).is_ok());
        assert!(check_name("action.tool", "a b", false).is_err());
        assert!(check_name("action.data[0].purpose", "a b", true).is_ok());
    }

    #[test]
    fn free_text_is_escaped_for_terminals() {
        assert_eq!(escape_text("ok\u{1b}[31m"), "ok\\u{1b}[31m");
        assert_eq!(escape_text("a\u{202e}b"), "a\\u{202e}b");
        assert_eq!(escape_text("tab\tnew\nline"), "tab\\u{9}new\\u{a}line");
        assert_eq!(escape_text("c:\\x"), "c:\\x");
        assert_eq!(escape_text("naïve – fine"), "naïve – fine");
    }
    #[test]
    fn lines_cannot_forge_lines_or_drive_the_terminal() {
        assert_eq!(
            escape_line("ok\n2\tgranted\u{1b}[2J\r\u{202e}\u{85}c:\\x"),
            "ok\\u{a}2\tgranted\\u{1b}[2J\\u{d}\\u{202e}\\u{85}c:\\x"
        );
        assert_eq!(escape_line("naïve – fine"), "naïve – fine");
    }

    #[test]
    fn json_stays_the_same_value() {
        let v =
            serde_json::json!({"r": "a\u{202e}b\u{2028}\u{9b}\u{f0000}\n\u{1b}", "k": [1, "x"]});
        for text in [v.to_string(), serde_json::to_string_pretty(&v).unwrap()] {
            let safe = json_safe(&text);
            assert!(!safe
                .chars()
                .any(|c| is_invisible(c) && !matches!(c, '\n' | '\t' | '\r')));
            assert_eq!(serde_json::from_str::<serde_json::Value>(&safe).unwrap(), v);
        }
        assert!(json_safe("\"\u{202e}\"").contains("\\u202e"));
        assert!(json_safe("\"\u{f0000}\"").contains("\\udb80\\udc00"));
    }
}

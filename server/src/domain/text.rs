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

/// Free text made safe for a terminal or a log line: invisible characters (and the
/// backslash that starts an escape) are written as `\u{…}` escapes.
pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if is_invisible(c) || c == '\\' {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
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
        assert_eq!(escape_text("c:\\x"), "c:\\u{5c}x");
        assert_eq!(escape_text("naïve – fine"), "naïve – fine");
    }
}

//! When is a requested pattern inside a granting scope? Deciding whether one glob's
//! language contains another's is hard in general, so the rule is deliberately
//! narrow and sound: a requested pattern is covered by a granting pattern when it is
//!
//! 1. a literal (no glob syntax) that the granting pattern matches, or
//! 2. an exact copy of the granting pattern, or
//! 3. the granting pattern is `PREFIX*` (tools) / `PREFIX**` (URLs) with no other glob
//!    syntax, and the requested pattern starts with `PREFIX`.
//!
//! Anything else is refused as an escalation, even if it happens to be narrower; the
//! caller can always list literals. Evaluate re-checks every issuer's live policy, so
//! this rule only has to stop a token from *claiming* more than its issuer holds.

use crate::domain::{ApiPattern, GlobList};

const GLOB_SYNTAX: &[char] = &['*', '?', '[', ']', '{', '}', '\\'];

fn is_literal(p: &str) -> bool {
    !p.contains(GLOB_SYNTAX)
}

fn glob_covers(granting: &str, requested: &str, separator_aware: bool) -> bool {
    if granting == requested {
        return true;
    }
    if is_literal(requested) {
        return GlobList::new(&[granting.to_owned()], separator_aware)
            .is_ok_and(|g| g.is_match(requested));
    }
    let wildcard = if separator_aware { "**" } else { "*" };
    granting
        .strip_suffix(wildcard)
        .filter(|prefix| is_literal(prefix))
        .is_some_and(|prefix| requested.starts_with(prefix))
}

/// Whether `requested` (a tool glob) lies inside one of `granting`.
pub fn tool_covered<'a>(granting: &'a [String], requested: &str) -> Option<&'a str> {
    granting
        .iter()
        .find(|g| glob_covers(g, requested, false))
        .map(String::as_str)
}

/// Whether `requested` ("METHOD URL-glob") lies inside one of `granting`.
pub fn api_covered<'a>(granting: &'a [String], requested: &str) -> Option<&'a str> {
    let split = |p: &str| -> Option<(String, String)> {
        ApiPattern::parse(p).ok()?;
        let (m, u) = p.trim().split_once(char::is_whitespace)?;
        Some((m.to_ascii_uppercase(), u.trim().to_owned()))
    };
    let (rm, ru) = split(requested)?;
    granting
        .iter()
        .find(|g| {
            split(g).is_some_and(|(gm, gu)| (gm == "*" || gm == rm) && glob_covers(&gu, &ru, true))
        })
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tools_narrow_by_literal_copy_or_prefix() {
        let g = v(&["crm.*", "send_email", "re?d"]);
        assert_eq!(tool_covered(&g, "crm.read"), Some("crm.*"));
        assert_eq!(tool_covered(&g, "crm.read*"), Some("crm.*"));
        assert_eq!(tool_covered(&g, "crm.*"), Some("crm.*"));
        assert_eq!(tool_covered(&g, "send_email"), Some("send_email"));
        assert_eq!(tool_covered(&g, "read"), Some("re?d"));
        // Wider, or not provably narrower: refused.
        assert_eq!(tool_covered(&g, "*"), None);
        assert_eq!(tool_covered(&g, "send_*"), None);
        assert_eq!(tool_covered(&g, "re*d"), None);
        assert_eq!(tool_covered(&g, "billing.pay"), None);
        assert_eq!(tool_covered(&v(&["crm.?"]), "crm.*"), None);
    }

    #[test]
    fn apis_narrow_by_method_and_url() {
        let g = v(&[
            "GET https://api.example.com/**",
            "* https://files.example.com/x",
        ]);
        assert!(api_covered(&g, "GET https://api.example.com/v1/**").is_some());
        assert!(api_covered(&g, "get https://api.example.com/v1/charges").is_some());
        assert!(api_covered(&g, "POST https://api.example.com/v1/charges").is_none());
        assert!(api_covered(&g, "DELETE https://files.example.com/x").is_some());
        assert!(api_covered(&g, "* https://api.example.com/**").is_none());
        assert!(api_covered(&g, "GET https://api.example.com.evil/**").is_none());
        assert!(api_covered(&g, "GET https://api.example.com/*/x").is_some());
        assert!(api_covered(&g, "nonsense").is_none());
    }
}

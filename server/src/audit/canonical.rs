//! Entry layout and RFC 8785 (JCS) canonical bytes. See docs/audit-format.md.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

/// An entry before it has a sequence number and a MAC.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryDraft {
    pub ts_ms: i64,
    pub kind: String,
    pub agent_id: String,
    pub session_id: String,
    pub outcome: String,
    pub body: Value,
}

/// An entry with its place in the chain: what the store writes and verifiers read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedEntry {
    pub seq: u64,
    pub ts_ms: i64,
    pub kind: String,
    pub agent_id: String,
    pub session_id: String,
    pub outcome: String,
    pub key_id: String,
    /// The canonical JSON bytes exactly as hashed.
    pub canonical: String,
    /// Lower-case hex HMAC-SHA256.
    pub mac: String,
}

pub fn format_ts(ts_ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ts_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The entry object whose JCS bytes are hashed.
pub fn entry_value(draft: &EntryDraft, seq: u64, key_id: &str) -> Value {
    json!({
        "v": 1,
        "seq": seq,
        "ts": format_ts(draft.ts_ms),
        "kind": draft.kind,
        "key_id": key_id,
        "agent_id": draft.agent_id,
        "session_id": draft.session_id,
        "outcome": draft.outcome,
        "body": draft.body,
    })
}

fn json_string(s: &str) -> String {
    // serde_json escapes exactly as JCS requires (\" \\ \b \f \n \r \t, \u00xx otherwise).
    serde_json::to_string(s).expect("strings always serialize")
}

/// The canonical entry assembled from an already-canonical body. The members are
/// written in JCS order (all names are ASCII, so byte order is UTF-16 order); this lets
/// request tasks canonicalize bodies in parallel and leaves the single writer only this
/// concatenation. `canonical_entry_matches_jcs` checks it against full JCS.
pub fn canonical_entry(draft: &EntryDraft, body_canonical: &str, seq: u64, key_id: &str) -> String {
    format!(
        "{{\"agent_id\":{},\"body\":{},\"key_id\":{},\"kind\":{},\"outcome\":{},\"seq\":{},\"session_id\":{},\"ts\":{},\"v\":1}}",
        json_string(&draft.agent_id),
        body_canonical,
        json_string(key_id),
        json_string(&draft.kind),
        json_string(&draft.outcome),
        seq,
        json_string(&draft.session_id),
        json_string(&format_ts(draft.ts_ms)),
    )
}

/// Largest integer RFC 8785 writes exactly: JCS writes every number as an IEEE 754
/// double, so a larger one would be logged as a different number.
const MAX_EXACT: u64 = (1 << 53) - 1;

/// JCS bytes of a JSON value. Entries hold only integers within ±(2^53 − 1) (amounts,
/// counts, times; argument floats are recorded as their JCS text), so a float or a
/// larger integer is a programming error and is refused rather than logged rounded.
pub fn canonical_string(value: &Value) -> Result<String, String> {
    if has_inexact_number(value) {
        return Err(
            "audit entries must not contain floating-point numbers or integers beyond ±(2^53 − 1)"
                .into(),
        );
    }
    serde_jcs::to_string(value).map_err(|e| e.to_string())
}

fn has_inexact_number(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            n.is_f64()
                || n.as_u64().is_some_and(|u| u > MAX_EXACT)
                || n.as_i64().is_some_and(|i| i.unsigned_abs() > MAX_EXACT)
        }
        Value::Array(a) => a.iter().any(has_inexact_number),
        Value::Object(o) => o.values().any(has_inexact_number),
        _ => false,
    }
}

/// One JSONL export line: `{"entry":<canonical>,"mac":"<hex>"}`.
pub fn export_line(e: &SealedEntry) -> String {
    format!("{{\"entry\":{},\"mac\":\"{}\"}}", e.canonical, e.mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sorted_and_there_is_no_whitespace() {
        let s = canonical_string(&json!({"b": 1, "a": {"d": [true, null], "c": "é\n"}})).unwrap();
        assert_eq!(s, "{\"a\":{\"c\":\"é\\n\",\"d\":[true,null]},\"b\":1}");
    }

    #[test]
    fn canonical_entry_matches_jcs() {
        let draft = EntryDraft {
            ts_ms: 1_763_778_600_123,
            kind: "evaluate".into(),
            agent_id: "a\"gent\u{1}é".into(),
            session_id: "s/1".into(),
            outcome: "allow".into(),
            body: json!({"z": [1, {"b": null, "a": "x\ty"}], "m": {"\u{e000}": 1, "\u{1f600}": 2}}),
        };
        let body = canonical_string(&draft.body).unwrap();
        let fast = canonical_entry(&draft, &body, 42, "h-0011223344556677");
        let full = canonical_string(&entry_value(&draft, 42, "h-0011223344556677")).unwrap();
        assert_eq!(fast, full);
    }

    #[test]
    fn floats_and_integers_jcs_would_round_are_refused() {
        assert!(canonical_string(&json!({"x": 1.5})).is_err());
        for n in [MAX_EXACT + 1, u64::MAX] {
            assert!(canonical_string(&json!({ "n": n })).is_err(), "{n}");
        }
        assert!(canonical_string(&json!({ "n": -(MAX_EXACT as i64) - 1 })).is_err());
        let edge = canonical_string(&json!([MAX_EXACT, -(MAX_EXACT as i64)])).unwrap();
        assert_eq!(edge, format!("[{MAX_EXACT},-{MAX_EXACT}]"));
    }

    #[test]
    fn timestamps_have_millisecond_precision_and_z() {
        assert_eq!(format_ts(1_763_778_600_123), "2025-11-22T02:30:00.123Z");
    }
}

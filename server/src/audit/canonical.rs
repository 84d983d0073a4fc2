//! Entry layout and RFC 8785 (JCS) canonical bytes. See docs/audit-format.md.

use chrono::{DateTime, SecondsFormat, Utc};
use std::io::Write as _;

use serde::Serialize;
use serde_json::{json, Value};

use crate::jcs::{self, Canonical};

/// An entry before it has a sequence number and a MAC.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryDraft {
    pub ts_ms: i64,
    pub kind: String,
    pub agent_id: String,
    pub session_id: String,
    pub outcome: String,
    pub body: Body,
}

/// An entry's body as its canonical (JCS) text, written once where the entry is built
/// (on the request's task, so bodies are canonicalised in parallel) and never again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body(Result<String, String>);

/// The empty object.
impl Default for Body {
    fn default() -> Self {
        Self(Ok("{}".to_owned()))
    }
}

impl Body {
    /// A typed body: its `Serialize` writes fields in JCS order (see `jcs`).
    pub fn typed<T: Serialize + ?Sized>(body: &T) -> Self {
        Self(jcs::to_string(body))
    }

    /// A body built as a JSON value (entries off the hot path).
    pub fn json(body: &Value) -> Self {
        Self::typed(&Canonical(body))
    }

    /// The canonical text, or why the body cannot be logged exactly (a float, or an
    /// integer JCS would round): such an entry is refused, never written rounded.
    pub fn canonical(&self) -> Result<&str, &str> {
        self.0.as_deref().map_err(String::as_str)
    }

    /// The canonical text itself, moved out.
    pub fn into_canonical(self) -> Result<String, String> {
        self.0
    }

    /// The body parsed back (tests and tools; the hot path never needs it).
    pub fn to_value(&self) -> Value {
        self.canonical()
            .ok()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(Value::Null)
    }
}

impl From<Value> for Body {
    fn from(body: Value) -> Self {
        Self::json(&body)
    }
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
        "body": draft.body.to_value(),
    })
}

/// Appends `s` as a JSON string: serde_json escapes exactly as JCS requires
/// (\" \\ \b \f \n \r \t, \u00xx otherwise).
fn push_string(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(out, s).expect("writing to memory cannot fail");
}

/// The canonical entry assembled from an already-canonical body. The members are
/// written in JCS order (all names are ASCII, so byte order is UTF-16 order); this lets
/// request tasks canonicalize bodies in parallel and leaves the single writer only this
/// concatenation. `canonical_entry_matches_jcs` checks it against full JCS.
pub fn canonical_entry(draft: &EntryDraft, body_canonical: &str, seq: u64, key_id: &str) -> String {
    let mut out = Vec::with_capacity(body_canonical.len() + 256);
    out.extend_from_slice(b"{\"agent_id\":");
    push_string(&mut out, &draft.agent_id);
    out.extend_from_slice(b",\"body\":");
    out.extend_from_slice(body_canonical.as_bytes());
    out.extend_from_slice(b",\"key_id\":");
    push_string(&mut out, key_id);
    out.extend_from_slice(b",\"kind\":");
    push_string(&mut out, &draft.kind);
    out.extend_from_slice(b",\"outcome\":");
    push_string(&mut out, &draft.outcome);
    out.extend_from_slice(b",\"seq\":");
    write!(out, "{seq}").expect("writing to memory cannot fail");
    out.extend_from_slice(b",\"session_id\":");
    push_string(&mut out, &draft.session_id);
    out.extend_from_slice(b",\"ts\":");
    push_string(&mut out, &format_ts(draft.ts_ms));
    out.extend_from_slice(b",\"v\":1}");
    String::from_utf8(out).expect("JSON text of UTF-8 strings is UTF-8")
}

/// JCS bytes of a JSON value. Entries hold only integers within ±(2^53 − 1) (amounts,
/// counts, times; argument floats are recorded as their JCS text), so a float or a
/// larger integer is a programming error and is refused rather than logged rounded.
pub fn canonical_string(value: &Value) -> Result<String, String> {
    jcs::to_string(&Canonical(value))
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
            body: json!({"z": [1, {"b": null, "a": "x\ty"}], "m": {"\u{e000}": 1, "\u{1f600}": 2}})
                .into(),
        };
        let body = draft.body.canonical().unwrap();
        let fast = canonical_entry(&draft, body, 42, "h-0011223344556677");
        let full = serde_jcs::to_string(&entry_value(&draft, 42, "h-0011223344556677")).unwrap();
        assert_eq!(fast, full);
    }

    #[test]
    fn timestamps_have_millisecond_precision_and_z() {
        assert_eq!(format_ts(1_763_778_600_123), "2025-11-22T02:30:00.123Z");
    }
}

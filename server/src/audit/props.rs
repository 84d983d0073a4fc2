//! Property tests for the audit log's bytes (issue 14): JCS canonicalisation (round
//! trip, key order, number forms) and the verifiers' input. Any export line, arbitrary
//! or a mutation of a valid one, is handled without a panic, and a change to what an
//! entry says (a value, a member, the MAC, the order of lines, a cut below a signed
//! head) is always detected. `PROPTEST_CASES` sets the count.

use super::canonical::{
    canonical_entry, canonical_string, entry_value, export_line, EntryDraft, SealedEntry,
};
use super::chain::{HmacKey, KeyRing, KeyStatus, GENESIS};
use super::checkpoint::TreeHead;
use super::offline::verify_lines;
use super::verify::Verifier;
use proptest::prelude::*;
use serde_json::{json, Value};

/// JSON without floats (audit entries hold none), with Unicode keys that sort
/// differently in UTF-8 and UTF-16.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        "[a-z_]{0,6}",
        "\\PC{0,4}",
        Just("\u{e000}".to_owned()),
        Just("\u{1f600}".to_owned()),
        Just("\u{ff61}".to_owned()),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        exact().prop_map(Value::from),
        "\\PC{0,8}|[\u{0}-\u{1f}\"\\\\/\u{7f}\u{2028}]{0,4}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Integers JCS writes exactly (it writes numbers as IEEE 754 doubles).
fn exact() -> impl Strategy<Value = i64> {
    const MAX: i64 = (1 << 53) - 1;
    prop_oneof![-MAX..=MAX, Just(MAX), Just(-MAX), -1000i64..1000]
}

fn ring() -> KeyRing {
    let secret: Vec<u8> = (0u8..32).collect();
    KeyRing::new(vec![HmacKey::new(&secret, KeyStatus::Active).unwrap()]).unwrap()
}

/// A valid chain of entries with the given bodies.
fn seal(keys: &KeyRing, bodies: &[Value]) -> Vec<SealedEntry> {
    let k = keys.active();
    let mut prev = *GENESIS;
    bodies
        .iter()
        .zip(1u64..)
        .map(|(body, seq)| {
            let d = EntryDraft {
                ts_ms: 1_700_000_000_000 + seq as i64,
                kind: "evaluate".into(),
                agent_id: format!("agent-{seq}"),
                session_id: String::new(),
                outcome: "allow".into(),
                body: body.clone().into(),
            };
            let canonical = canonical_string(&entry_value(&d, seq, &k.id)).unwrap();
            let mac = k.mac(&prev, canonical.as_bytes());
            prev = mac;
            SealedEntry {
                seq,
                ts_ms: d.ts_ms,
                kind: d.kind,
                agent_id: d.agent_id,
                session_id: d.session_id,
                outcome: d.outcome,
                key_id: k.id.clone(),
                canonical,
                mac: hex::encode(mac),
            }
        })
        .collect()
}

fn export(entries: &[SealedEntry]) -> Vec<String> {
    entries.iter().map(export_line).collect()
}

fn head_of(lines: &[String]) -> TreeHead {
    let mut tree = super::merkle::Frontier::default();
    for l in lines {
        let v: Value = serde_json::from_str(l).unwrap();
        tree.push(super::merkle::leaf_hash(
            serde_jcs::to_string(&v["entry"]).unwrap().as_bytes(),
        ));
    }
    TreeHead {
        origin: "props/log".into(),
        size: tree.size,
        root: tree.root(),
    }
}

fn offline(
    keys: &KeyRing,
    lines: &[String],
    head: Option<&TreeHead>,
) -> anyhow::Result<(u64, [u8; 32])> {
    verify_lines(keys, lines.join("\n").as_bytes(), head)
}

/// A change to what one entry of a valid export says.
#[derive(Debug, Clone)]
enum Edit {
    /// Replace the n-th leaf (in document order) of the entry by another value.
    Leaf(usize, Value),
    /// Add a member to the entry or its body.
    AddMember(bool, String),
    /// Remove the n-th member of the body.
    DropMember(usize),
    FlipMac(usize),
    DropLine,
    SwapWithNext,
    Duplicate,
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<usize>(), prop_oneof![
            any::<i64>().prop_map(Value::from),
            "\\PC{0,6}".prop_map(Value::String),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Null),
        ]).prop_map(|(i, v)| Edit::Leaf(i, v)),
        1 => (any::<bool>(), "[a-z]{1,6}").prop_map(|(top, k)| Edit::AddMember(top, k)),
        1 => any::<usize>().prop_map(Edit::DropMember),
        1 => any::<usize>().prop_map(Edit::FlipMac),
        1 => Just(Edit::DropLine),
        1 => Just(Edit::SwapWithNext),
        1 => Just(Edit::Duplicate),
    ]
}

fn leaves(v: &mut Value) -> Vec<&mut Value> {
    match v {
        Value::Array(a) => a.iter_mut().flat_map(leaves).collect(),
        Value::Object(o) => o.values_mut().flat_map(leaves).collect(),
        leaf => vec![leaf],
    }
}

/// Applies `edit` to line `at`; `false` when the edit happens to change nothing.
fn apply(lines: &mut Vec<String>, at: usize, edit: &Edit) -> bool {
    let mut line: Value = serde_json::from_str(&lines[at]).unwrap();
    match edit {
        Edit::Leaf(i, new) => {
            let mut all = leaves(&mut line["entry"]);
            let n = all.len();
            let slot = &mut all[i % n];
            if **slot == *new {
                return false;
            }
            **slot = new.clone();
        }
        Edit::AddMember(top, k) => {
            let target = if *top {
                &mut line["entry"]
            } else {
                &mut line["entry"]["body"]
            };
            match target.as_object_mut() {
                Some(o) if !o.contains_key(k) => {
                    o.insert(k.clone(), json!(1));
                }
                _ => return false,
            }
        }
        Edit::DropMember(i) => match line["entry"]["body"].as_object_mut() {
            Some(o) if !o.is_empty() => {
                let k = o.keys().nth(i % o.len()).unwrap().clone();
                o.remove(&k);
            }
            _ => return false,
        },
        Edit::FlipMac(i) => {
            let mac = line["mac"].as_str().unwrap().to_owned();
            let mut b = mac.into_bytes();
            let j = i % b.len();
            b[j] = if b[j] == b'0' { b'1' } else { b'0' };
            line["mac"] = Value::String(String::from_utf8(b).unwrap());
        }
        Edit::DropLine => {
            lines.remove(at);
            return true;
        }
        Edit::SwapWithNext if at + 1 < lines.len() => {
            lines.swap(at, at + 1);
            return true;
        }
        Edit::SwapWithNext => return false,
        Edit::Duplicate => {
            lines.insert(at, lines[at].clone());
            return true;
        }
    }
    lines[at] = serde_json::to_string(&line).unwrap();
    true
}

proptest! {
    #[test]
    fn jcs_round_trips_and_is_a_fixed_point(v in json_value()) {
        let c = canonical_string(&v).unwrap();
        let back: Value = serde_json::from_str(&c).unwrap();
        prop_assert_eq!(&back, &v);
        prop_assert_eq!(canonical_string(&back).unwrap(), c);
    }

    #[test]
    fn the_one_pass_writer_equals_a_full_jcs_implementation(v in json_value()) {
        prop_assert_eq!(canonical_string(&v).unwrap(), serde_jcs::to_string(&v).unwrap());
    }

    #[test]
    fn jcs_orders_members_by_utf16_code_units(m in prop::collection::btree_map("\\PC{0,4}|[\u{e000}\u{ff61}\u{1f600}a]{1,3}", exact(), 0..8)) {
        let mut keys: Vec<(&String, &i64)> = m.iter().collect();
        keys.sort_by_key(|(k, _)| k.encode_utf16().collect::<Vec<u16>>());
        let want = format!(
            "{{{}}}",
            keys.iter().map(|(k, n)| format!("{}:{n}", serde_json::to_string(k).unwrap())).collect::<Vec<_>>().join(",")
        );
        let v = Value::Object(m.clone().into_iter().map(|(k, n)| (k, Value::from(n))).collect());
        prop_assert_eq!(canonical_string(&v).unwrap(), want);
    }

    #[test]
    fn integers_have_one_form_and_other_number_spellings_are_refused(n in exact(), big in (1u64 << 53)..=u64::MAX, exp in 0u32..3) {
        // Beyond ±(2^53 − 1) JCS would log another number, so it is refused.
        prop_assert!(canonical_string(&Value::from(big)).is_err());
        prop_assert!(canonical_string(&Value::from(-(big.min(i64::MAX as u64) as i64))).is_err());
        prop_assert_eq!(canonical_string(&serde_json::from_str(&format!("{n}")).unwrap()).unwrap(), n.to_string());
        for spelling in [format!("{n}.0"), format!("{n}e{exp}"), format!("{n}E-0")] {
            let v: Value = serde_json::from_str(&spelling).unwrap();
            prop_assert!(canonical_string(&v).is_err(), "{} must be refused as a float", spelling);
        }
    }

    #[test]
    fn the_entry_fast_path_equals_full_jcs(body in json_value(), agent in "\\PC{0,12}", seq in 0u64..(1 << 53)) {
        let d = EntryDraft { ts_ms: 1_700_000_000_000, kind: "k".into(), agent_id: agent, session_id: "s".into(), outcome: "o".into(), body: body.into() };
        let fast = canonical_entry(&d, d.body.canonical().unwrap(), seq, "h-00");
        prop_assert_eq!(fast, serde_jcs::to_string(&entry_value(&d, seq, "h-00")).unwrap());
    }

    #[test]
    fn an_untouched_export_verifies(bodies in prop::collection::vec(json_value(), 1..6)) {
        let k = ring();
        let lines = export(&seal(&k, &bodies));
        let head = head_of(&lines);
        prop_assert_eq!(offline(&k, &lines, Some(&head)).unwrap().0, bodies.len() as u64);
    }

    #[test]
    fn a_change_to_what_an_export_says_is_always_detected(
        bodies in prop::collection::vec(json_value(), 1..6),
        at in any::<usize>(),
        e in edit(),
    ) {
        let k = ring();
        let good = export(&seal(&k, &bodies));
        let head = head_of(&good);
        let mut lines = good.clone();
        let at = at % lines.len();
        prop_assume!(apply(&mut lines, at, &e));
        prop_assert!(offline(&k, &lines, Some(&head)).is_err(), "{:?} at line {} went unnoticed", e, at + 1);
        if !matches!(e, Edit::DropLine) || at + 1 < good.len() {
            // Without a signed head only a cut at the end goes unnoticed (by design).
            prop_assert!(offline(&k, &lines, None).is_err(), "{:?} at line {} went unnoticed", e, at + 1);
        }
    }

    #[test]
    fn any_flipped_byte_is_detected(
        bodies in prop::collection::vec(json_value(), 1..4),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        signed in any::<bool>(),
    ) {
        let k = ring();
        let good = export(&seal(&k, &bodies));
        let mut bytes = good.join("\n").into_bytes();
        for (at, b) in flips {
            let i = at % bytes.len();
            bytes[i] ^= b.max(1);
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
        let head = head_of(&good);
        // Lines are checked byte for byte, so only an export cut at a line end can pass,
        // and only without a signed head.
        if offline(&k, &lines, signed.then_some(&head)).is_ok() {
            prop_assert!(!signed && good.starts_with(&lines), "a changed export verified: {:?}", text);
        }
    }

    #[test]
    fn respelled_lines_are_not_canonical(bodies in prop::collection::vec(json_value(), 1..4), at in any::<usize>(), how in 0u8..4) {
        let k = ring();
        let mut lines = export(&seal(&k, &bodies));
        let i = at % lines.len();
        lines[i] = match how {
            0 => lines[i].replacen("\"seq\":", "\"seq\": ", 1),
            1 => lines[i].replacen("\"v\":1", "\"v\":1.0", 1),
            // The same MAC in upper case (one with no digit a-f: odds (10/16)^64).
            2 => {
                let at = lines[i].rfind("\"mac\":\"").expect("a mac member") + 7;
                format!("{}{}", &lines[i][..at], lines[i][at..].to_ascii_uppercase())
            }
            _ => lines[i].replacen("\"kind\":\"evaluate\"", "\"kind\":\"\\u0065valuate\"", 1),
        };
        let e = offline(&k, &lines, None).unwrap_err().to_string();
        prop_assert!(e.contains("not_canonical"), "{}", e);
    }

    #[test]
    fn arbitrary_lines_never_panic_the_verifiers(lines in prop::collection::vec("\\PC{0,80}|\\{\"entry\":\\{\"seq\":1\\PC{0,40}\\},\"mac\":\"[0-9a-f]{0,64}\"\\}", 0..4)) {
        let k = ring();
        let _ = offline(&k, &lines, None);
        let mut v = Verifier::new(&k, 1, *GENESIS);
        for (l, seq) in lines.iter().zip(1u64..) {
            let e = SealedEntry {
                seq, ts_ms: 0, kind: String::new(), agent_id: String::new(), session_id: String::new(),
                outcome: String::new(), key_id: k.active().id.clone(), canonical: l.clone(), mac: "00".repeat(32),
            };
            prop_assert!(v.feed(&e).is_err());
        }
    }
}

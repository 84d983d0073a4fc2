//! Chain verification, incremental so a log of any size streams through it.

use super::canonical::{canonical_string, SealedEntry};
use super::chain::{KeyRing, KeyStatus};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Gap,
    MacMismatch,
    SeqMismatch,
    NotCanonical,
    UnknownKey,
    RevokedKey,
    ColumnMismatch,
    /// Fewer entries than the newest signed checkpoint covers (found by the tree check,
    /// not the chain: a log cut after seq n is a valid chain of n entries).
    Truncated,
    /// An entry whose leaf hash is not the one the signed tree holds (rewritten, even
    /// with valid MACs), or entries the server never signed.
    TreeMismatch,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Self::Gap => "gap",
            Self::MacMismatch => "mac_mismatch",
            Self::SeqMismatch => "seq_mismatch",
            Self::NotCanonical => "not_canonical",
            Self::UnknownKey => "unknown_key",
            Self::RevokedKey => "revoked_key",
            Self::ColumnMismatch => "column_mismatch",
            Self::Truncated => "truncated",
            Self::TreeMismatch => "tree_mismatch",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub seq: u64,
    pub fault: Fault,
    pub message: String,
}

/// Walks entries in order, checking position, bytes, columns, key and MAC.
pub struct Verifier<'k> {
    keys: &'k KeyRing,
    expected_seq: u64,
    prev_mac: [u8; 32],
    pub checked: u64,
}

impl<'k> Verifier<'k> {
    /// Starts at `first_seq`, chaining from `prev_mac` (GENESIS for seq 1).
    pub fn new(keys: &'k KeyRing, first_seq: u64, prev_mac: [u8; 32]) -> Self {
        Self {
            keys,
            expected_seq: first_seq,
            prev_mac,
            checked: 0,
        }
    }

    pub fn head_mac(&self) -> [u8; 32] {
        self.prev_mac
    }

    /// Feeds a page of consecutive entries, checking slices of it on several cores.
    /// Each link verifies on its own from the stored MAC before it, and the slices are
    /// merged in order, so the outcome (first failure, count, head) is exactly that of
    /// feeding the entries one by one.
    pub fn feed_all(&mut self, entries: &[SealedEntry]) -> Result<(), Failure> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        if threads < 2 || entries.len() < 4096 {
            return entries.iter().try_for_each(|e| self.feed(e));
        }
        let size = entries.len().div_ceil(threads);
        let (keys, first_seq, first_prev) = (self.keys, self.expected_seq, self.prev_mac);
        let slices: Vec<(u64, [u8; 32], Option<Failure>)> = std::thread::scope(|scope| {
            let workers: Vec<_> = entries
                .chunks(size)
                .enumerate()
                .map(|(i, part)| {
                    let start = first_seq + (i * size) as u64;
                    // A malformed stored MAC fails the slice before it first.
                    let prev = if i == 0 {
                        Some(first_prev)
                    } else {
                        hex::decode(&entries[i * size - 1].mac)
                            .ok()
                            .and_then(|m| <[u8; 32]>::try_from(m).ok())
                    };
                    scope.spawn(move || {
                        let mut v = Verifier::new(keys, start, prev.unwrap_or([0; 32]));
                        let failure = part.iter().try_for_each(|e| v.feed(e)).err();
                        (v.checked, v.prev_mac, failure)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("a verifier thread does not panic"))
                .collect()
        });
        for (checked, head, failure) in slices {
            self.checked += checked;
            self.expected_seq += checked;
            if let Some(f) = failure {
                return Err(f);
            }
            self.prev_mac = head;
        }
        Ok(())
    }

    pub fn feed(&mut self, e: &SealedEntry) -> Result<(), Failure> {
        let fail = |seq: u64, fault: Fault, message: String| Failure {
            seq,
            fault,
            message,
        };
        let want = self.expected_seq;
        if e.seq != want {
            return Err(fail(
                want,
                if e.seq > want {
                    Fault::Gap
                } else {
                    Fault::SeqMismatch
                },
                format!("expected entry {want}, found entry {}", e.seq),
            ));
        }
        // Only the members the columns mirror are read; the MAC covers the rest. The
        // full canonical-form check runs when the MAC fails, to name the fault: without
        // the key, non-canonical bytes can never carry a valid MAC.
        let head: Head<'_> = serde_json::from_str(&e.canonical).map_err(|err| {
            fail(
                want,
                Fault::NotCanonical,
                format!("entry is not a JSON entry object: {err}"),
            )
        })?;
        if head.seq != Some(want) {
            return Err(fail(
                want,
                Fault::SeqMismatch,
                format!(
                    "entry at position {want} says seq {}",
                    head.seq.map_or("null".to_owned(), |s| s.to_string())
                ),
            ));
        }
        let columns = [
            ("kind", &head.kind, &e.kind),
            ("agent_id", &head.agent_id, &e.agent_id),
            ("session_id", &head.session_id, &e.session_id),
            ("outcome", &head.outcome, &e.outcome),
            ("key_id", &head.key_id, &e.key_id),
        ];
        for (name, hashed, col) in columns {
            if hashed.as_deref() != Some(col.as_str()) {
                return Err(fail(
                    want,
                    Fault::ColumnMismatch,
                    format!("column {name} = {col:?} disagrees with the hashed entry"),
                ));
            }
        }
        let key = self.keys.get(&e.key_id).ok_or_else(|| {
            fail(
                want,
                Fault::UnknownKey,
                format!("key {} is not in the key ring", e.key_id),
            )
        })?;
        if key.status == KeyStatus::Revoked && key.revoked_after_seq.is_none_or(|last| want > last)
        {
            return Err(fail(
                want,
                Fault::RevokedKey,
                match key.revoked_after_seq {
                    Some(last) => format!("key {} is revoked after entry {last}", e.key_id),
                    None => format!("key {} is revoked", e.key_id),
                },
            ));
        }
        let mac = key.mac(&self.prev_mac, e.canonical.as_bytes());
        let stored = hex::decode(&e.mac).ok();
        let equal = stored
            .as_deref()
            .is_some_and(|s| subtle::ConstantTimeEq::ct_eq(s, &mac[..]).into());
        if !equal {
            if let Some(why) = not_canonical(&e.canonical) {
                return Err(fail(want, Fault::NotCanonical, why));
            }
            return Err(fail(
                want,
                Fault::MacMismatch,
                "MAC does not match the entry and its predecessor (edited, inserted or reordered)"
                    .into(),
            ));
        }
        self.prev_mac = mac;
        self.expected_seq += 1;
        self.checked += 1;
        Ok(())
    }
}

/// The members of an entry that its row repeats as columns.
#[derive(serde::Deserialize)]
struct Head<'a> {
    seq: Option<u64>,
    #[serde(borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    agent_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    session_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    outcome: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    key_id: Option<std::borrow::Cow<'a, str>>,
}

/// Why the bytes are not canonical JCS, if they are not.
fn not_canonical(text: &str) -> Option<String> {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(err) => return Some(format!("entry is not JSON: {err}")),
    };
    match canonical_string(&value) {
        Err(err) => Some(err),
        Ok(c) if c != text => Some("stored bytes are not in canonical (JCS) form".into()),
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::canonical::{entry_value, EntryDraft};
    use super::super::chain::{HmacKey, GENESIS};
    use super::*;
    use serde_json::json;

    fn ring() -> KeyRing {
        let secret: Vec<u8> = (0u8..32).collect();
        KeyRing::new(vec![HmacKey::new(&secret, KeyStatus::Active).unwrap()]).unwrap()
    }

    fn chain(keys: &KeyRing, n: u64) -> Vec<SealedEntry> {
        let mut prev = *GENESIS;
        (1..=n)
            .map(|seq| {
                let d = EntryDraft {
                    ts_ms: 1_000 * seq as i64,
                    kind: "evaluate".into(),
                    agent_id: "a".into(),
                    session_id: String::new(),
                    outcome: "allow".into(),
                    body: json!({"n": seq}),
                };
                let k = keys.active();
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

    fn verify(keys: &KeyRing, entries: &[SealedEntry]) -> Result<u64, Failure> {
        let mut v = Verifier::new(keys, 1, *GENESIS);
        for e in entries {
            v.feed(e)?;
        }
        Ok(v.checked)
    }

    #[test]
    fn checking_a_page_on_several_cores_reports_exactly_what_one_by_one_does() {
        let k = ring();
        let good = chain(&k, 9_000);
        let mut all = Verifier::new(&k, 1, *GENESIS);
        all.feed_all(&good).unwrap();
        assert_eq!(
            (all.checked, all.head_mac()),
            (9_000, verify_head(&k, &good))
        );
        for bad in [1, 4_500, 4_501, 8_999] {
            let mut edited = good.clone();
            edited[bad - 1].canonical = edited[bad - 1].canonical.replace("\"seq\"", "\"seq\" ");
            let mut one = Verifier::new(&k, 1, *GENESIS);
            let want = edited.iter().try_for_each(|e| one.feed(e)).unwrap_err();
            let mut many = Verifier::new(&k, 1, *GENESIS);
            assert_eq!(many.feed_all(&edited).unwrap_err(), want, "entry {bad}");
            assert_eq!(many.checked, one.checked);
        }
    }

    fn verify_head(keys: &KeyRing, entries: &[SealedEntry]) -> [u8; 32] {
        let mut v = Verifier::new(keys, 1, *GENESIS);
        entries.iter().for_each(|e| v.feed(e).unwrap());
        v.head_mac()
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let k = ring();
        assert_eq!(verify(&k, &chain(&k, 5)), Ok(5));
    }

    #[test]
    fn edits_deletions_and_swaps_name_the_first_bad_entry() {
        let k = ring();
        let mut edited = chain(&k, 5);
        edited[2].canonical = edited[2].canonical.replace("\"n\":3", "\"n\":4");
        assert_eq!(verify(&k, &edited).unwrap_err().seq, 3);
        assert_eq!(verify(&k, &edited).unwrap_err().fault, Fault::MacMismatch);

        let mut deleted = chain(&k, 5);
        deleted.remove(1);
        let f = verify(&k, &deleted).unwrap_err();
        assert_eq!((f.seq, f.fault), (2, Fault::Gap));

        let mut column = chain(&k, 5);
        column[3].outcome = "deny".into();
        assert_eq!(
            verify(&k, &column).unwrap_err().fault,
            Fault::ColumnMismatch
        );
    }
}

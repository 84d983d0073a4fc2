//! Chain verification, incremental so a log of any size streams through it.

use super::canonical::{canonical_string, SealedEntry};
use super::chain::{KeyRing, KeyStatus};
use super::merkle::{self, Hash};
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
        self.feed_page(entries, None)
    }

    /// `feed_all` that also appends the Merkle leaf hash of every entry the chain
    /// accepted to `leaves`, in order: whole-log verification needs both, and hashing
    /// each entry on the core that just MACed it reads its bytes once, while cached.
    pub fn feed_all_hashing(
        &mut self,
        entries: &[SealedEntry],
        leaves: &mut Vec<Hash>,
    ) -> Result<(), Failure> {
        self.feed_page(entries, Some(leaves))
    }

    fn feed_page(
        &mut self,
        entries: &[SealedEntry],
        mut leaves: Option<&mut Vec<Hash>>,
    ) -> Result<(), Failure> {
        let hashing = leaves.is_some();
        for slice in self.check_slices(entries, hashing) {
            // Before the failure check: after one, the head is the last accepted MAC, as
            // feeding one by one leaves it.
            self.checked += slice.checked;
            self.expected_seq += slice.checked;
            self.prev_mac = slice.head;
            if let Some(out) = leaves.as_deref_mut() {
                out.extend_from_slice(&slice.leaves);
            }
            if let Some(f) = slice.failure {
                return Err(f);
            }
        }
        Ok(())
    }

    /// The page cut into one slice per core (one slice when it is small), each checked
    /// from the stored MAC of the entry before it; in page order.
    fn check_slices(&self, entries: &[SealedEntry], hashing: bool) -> Vec<Slice> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let (keys, first_seq, first_prev) = (self.keys, self.expected_seq, self.prev_mac);
        if threads < 2 || entries.len() < 4096 {
            return vec![check_slice(keys, first_seq, first_prev, entries, hashing)];
        }
        let size = entries.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let workers: Vec<_> = entries
                .chunks(size)
                .enumerate()
                .map(|(i, part)| {
                    let start = first_seq + (i * size) as u64;
                    // A malformed stored MAC fails the slice before it first.
                    let prev = if i == 0 {
                        Some(first_prev)
                    } else {
                        stored_mac(&entries[i * size - 1].mac)
                    };
                    let prev = prev.unwrap_or([0; 32]);
                    scope.spawn(move || check_slice(keys, start, prev, part, hashing))
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("a verifier thread does not panic"))
                .collect()
        })
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
        if !mac_matches(&e.mac, &mac) {
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

/// What checking one slice of a page found.
struct Slice {
    checked: u64,
    head: [u8; 32],
    /// Leaf hashes of the entries accepted (when asked for).
    leaves: Vec<Hash>,
    failure: Option<Failure>,
}

fn check_slice(
    keys: &KeyRing,
    start: u64,
    prev: [u8; 32],
    part: &[SealedEntry],
    hashing: bool,
) -> Slice {
    let mut v = Verifier::new(keys, start, prev);
    let mut leaves = Vec::with_capacity(if hashing { part.len() } else { 0 });
    let failure = part
        .iter()
        .try_for_each(|e| {
            v.feed(e)?;
            if hashing {
                leaves.push(merkle::leaf_hash(e.canonical.as_bytes()));
            }
            Ok(())
        })
        .err();
    Slice {
        checked: v.checked,
        head: v.prev_mac,
        leaves,
        failure,
    }
}

/// Whether the stored (hex) MAC is `mac`. It is compared with `mac` in lower-case hex
/// first, the way the server writes it: encoding is a table lookup per byte, decoding
/// a branch per digit (≈ 8 % of verification's CPU). Only a mismatch is decoded, so an
/// upper-case MAC still matches as it always did.
fn mac_matches(stored: &str, mac: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    let mut lower = [0u8; 64];
    hex::encode_to_slice(mac, &mut lower).expect("64 digits hold 32 bytes");
    let as_written = stored
        .as_bytes()
        .try_into()
        .is_ok_and(|s: &[u8; 64]| words(s)[..].ct_eq(&words(&lower)[..]).into());
    as_written || stored_mac(stored).is_some_and(|s| s.ct_eq(mac).into())
}

/// 64 bytes as eight words: `subtle` compares a word in the time it takes for a byte
/// (a fence per element), and the digits are compared for every entry.
fn words(b: &[u8; 64]) -> [u64; 8] {
    std::array::from_fn(|i| u64::from_ne_bytes(std::array::from_fn(|j| b[i * 8 + j])))
}

/// A stored MAC as bytes, decoded on the stack; `None` unless it is 64 hex digits
/// (a MAC of any other length never matches).
fn stored_mac(hex_mac: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_mac, &mut out).ok().map(|()| out)
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
                    body: json!({"n": seq}).into(),
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

    /// The leaves of the entries feeding one by one accepts, before its first failure.
    fn accepted_leaves(keys: &KeyRing, entries: &[SealedEntry]) -> Vec<Hash> {
        let mut v = Verifier::new(keys, 1, *GENESIS);
        entries
            .iter()
            .map_while(|e| {
                v.feed(e)
                    .ok()
                    .map(|()| merkle::leaf_hash(e.canonical.as_bytes()))
            })
            .collect()
    }

    #[test]
    fn hashing_on_several_cores_yields_the_leaves_of_exactly_the_accepted_entries() {
        let k = ring();
        let good = chain(&k, 9_000);
        let mut leaves = Vec::new();
        let mut all = Verifier::new(&k, 1, *GENESIS);
        all.feed_all_hashing(&good, &mut leaves).unwrap();
        assert_eq!(leaves, accepted_leaves(&k, &good));
        assert_eq!(all.head_mac(), verify_head(&k, &good));
        // The first and last entries of a slice (with two or more cores, slices of at
        // most 4 500), their bytes or their stored MAC, which the next slice starts from.
        for bad in [1, 2, 4_500, 4_501, 8_999, 9_000] {
            for edit_mac in [false, true] {
                let mut edited = good.clone();
                let e = &mut edited[bad - 1];
                if edit_mac {
                    e.mac = hex::encode([7u8; 32]);
                } else {
                    e.canonical = e.canonical.replace("\"n\":", "\"n\": ");
                }
                let mut one = Verifier::new(&k, 1, *GENESIS);
                let want = edited.iter().try_for_each(|e| one.feed(e)).unwrap_err();
                let mut many = Verifier::new(&k, 1, *GENESIS);
                let mut leaves = Vec::new();
                let got = many.feed_all_hashing(&edited, &mut leaves).unwrap_err();
                assert_eq!(
                    (got.seq, got.fault),
                    (bad as u64, want.fault),
                    "entry {bad}"
                );
                assert_eq!(got, want, "entry {bad}, mac {edit_mac}");
                assert_eq!(many.head_mac(), one.head_mac(), "entry {bad}");
                assert_eq!(leaves, accepted_leaves(&k, &edited), "entry {bad}");
                assert_eq!(leaves.len(), bad - 1);
            }
        }
    }

    fn verify_head(keys: &KeyRing, entries: &[SealedEntry]) -> [u8; 32] {
        let mut v = Verifier::new(keys, 1, *GENESIS);
        entries.iter().for_each(|e| v.feed(e).unwrap());
        v.head_mac()
    }

    #[test]
    fn a_stored_mac_matches_in_either_case_and_only_whole() {
        let k = ring();
        let mut upper = chain(&k, 3);
        upper[1].mac = upper[1].mac.to_uppercase();
        assert_eq!(verify(&k, &upper), Ok(3));
        let cuts: [fn(&str) -> String; 2] = [|m| m[..62].to_owned(), |m| format!("{m}00")];
        for cut in cuts {
            let mut short = chain(&k, 3);
            short[1].mac = cut(&short[1].mac);
            let f = verify(&k, &short).unwrap_err();
            assert_eq!((f.seq, f.fault), (2, Fault::MacMismatch));
        }
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

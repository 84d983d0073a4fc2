//! Offline verification of a JSONL export with a key ring file.

use super::canonical::SealedEntry;
use super::chain::KeyRing;
use super::verify::Verifier;
use super::GENESIS;
use crate::cli::term::say;
use crate::cli::Exit;
use anyhow::Context;
use serde_json::Value;
use std::io::BufRead;
use std::path::Path;

/// Verifies an export that starts at seq 1 (or at `from`, chaining from GENESIS only
/// when `from` is 0 or 1).
/// With `head` (a checkpoint whose signature was checked), the export's first
/// `head.size` entries must also rebuild its Merkle root.
pub fn verify_file(
    export: &Path,
    keys: &Path,
    from: u64,
    head: Option<&super::checkpoint::TreeHead>,
) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(keys).with_context(|| format!("reading {}", keys.display()))?;
    let ring = crate::keys::parse(&text, &keys.display().to_string())?;
    let file =
        std::fs::File::open(export).with_context(|| format!("opening {}", export.display()))?;
    if from > 1 {
        return Err(Exit(
            2,
            "offline verification of a partial export needs the export to start at seq 1".into(),
        )
        .into());
    }
    let checked = verify_lines(&ring, std::io::BufReader::new(file), head)?;
    if let Some(h) = head {
        say!(
            "OK: the first {} entries rebuild the signed checkpoint's Merkle root",
            h.size
        );
    }
    say!(
        "OK: {} entries verified, head mac {}",
        checked.0,
        hex::encode(checked.1)
    );
    Ok(())
}

/// Verifies export lines from seq 1 against `ring` (and `head`'s root when given):
/// the number of entries and the head MAC, or the first failure as an `Exit`.
pub fn verify_lines(
    ring: &KeyRing,
    reader: impl BufRead,
    head: Option<&super::checkpoint::TreeHead>,
) -> anyhow::Result<(u64, [u8; 32])> {
    let mut v = Verifier::new(ring, 1, *GENESIS);
    let mut tree = super::merkle::Frontier::default();
    let mut root_at_head = head
        .filter(|h| h.size == 0)
        .map(|_| super::merkle::empty_root());
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        let expected = v.checked + 1;
        let parsed: Value = serde_json::from_str(&line).map_err(|e| {
            Exit(
                1,
                format!(
                    "FAIL: seq {expected}: parse_error: line {} is not JSON: {e}",
                    i + 1
                ),
            )
        })?;
        let entry = parsed.get("entry").cloned().unwrap_or(Value::Null);
        // The line must be byte for byte the line the server exported (docs/audit-format.md
        // §6; the Python verifier checks the same): a re-spelled number, extra whitespace
        // or another escape would otherwise verify, since the MAC covers the canonical form.
        let canonical = super::canonical::canonical_string(&entry).unwrap_or_default();
        let mac = parsed.get("mac").and_then(Value::as_str).unwrap_or("");
        // §7 step 2: the MAC is spelled one way too (64 lower-case hex digits), so a
        // case flip in it is a changed line, not the same one.
        let mac_canonical =
            mac.len() == 64 && mac.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
        if !mac_canonical || line != format!("{{\"entry\":{canonical},\"mac\":\"{mac}\"}}") {
            let seq = entry.get("seq").and_then(Value::as_u64).unwrap_or(expected);
            return Err(Exit(
                1,
                format!(
                    "FAIL: seq {seq}: not_canonical: line {} is not byte-for-byte canonical (RFC 8785 JCS, no whitespace)",
                    i + 1
                ),
            )
            .into());
        }
        let field = |k: &str| {
            entry
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let sealed = SealedEntry {
            seq: entry.get("seq").and_then(Value::as_u64).unwrap_or(0),
            ts_ms: 0,
            kind: field("kind"),
            agent_id: field("agent_id"),
            session_id: field("session_id"),
            outcome: field("outcome"),
            key_id: field("key_id"),
            mac: mac.to_owned(),
            canonical,
        };
        if head.is_some_and(|h| tree.size < h.size) {
            tree.push(super::merkle::leaf_hash(sealed.canonical.as_bytes()));
            if head.is_some_and(|h| tree.size == h.size) {
                root_at_head = Some(tree.root());
            }
        }
        v.feed(&sealed).map_err(|f| {
            Exit(
                1,
                format!("FAIL: seq {}: {}: {}", f.seq, f.fault.name(), f.message),
            )
        })?;
    }
    if let Some(h) = head {
        match root_at_head {
            None => {
                return Err(Exit(
                    1,
                    format!(
                        "FAIL: seq {}: truncated: the export has {} entries, the checkpoint {}",
                        h.size, v.checked, h.size
                    ),
                )
                .into())
            }
            Some(root) if root != h.root => {
                return Err(Exit(
                    1,
                    format!(
                        "FAIL: seq {}: tree_mismatch: the first {} entries do not rebuild the checkpoint's root (rewritten after it was signed)",
                        h.size, h.size
                    ),
                )
                .into())
            }
            Some(_) => {}
        }
    }
    Ok((v.checked, v.head_mac()))
}

//! Offline verification with only the public key: receipts (one entry, its inclusion
//! proof and a signed checkpoint) and checkpoint-to-checkpoint consistency.

use super::canonical::canonical_string;
use super::checkpoint::{self, TreeHead};
use super::merkle;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

/// A receipt as JSON (the same fields as `arbiter.v1.Receipt`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptFile {
    pub entry: String,
    pub mac: String,
    pub inclusion_proof: Vec<String>,
    pub checkpoint: String,
}

/// The `signing.pub` file: origin line, then the active public key and any retired
/// ones, one per line, in hex.
pub fn read_public_key(text: &str) -> Result<(String, Vec<VerifyingKey>), String> {
    let mut lines = text.lines();
    let origin = lines
        .next()
        .filter(|l| !l.is_empty())
        .ok_or("the public key file has no origin line")?;
    let keys = lines
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, h)| {
            hex::decode(h.trim())
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .and_then(|k| VerifyingKey::from_bytes(&k).ok())
                .ok_or_else(|| {
                    format!(
                        "line {} of the public key file must be an Ed25519 public key, 32 bytes of hex",
                        i + 2
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err("the public key file's second line must be 32 bytes of hex".into());
    }
    Ok((origin.to_owned(), keys))
}

fn hashes(list: &[String]) -> Result<Vec<merkle::Hash>, String> {
    list.iter()
        .map(|h| {
            hex::decode(h)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| format!("{h:?} is not a 32-byte hex hash"))
        })
        .collect()
}

/// Checks a receipt: the checkpoint's signature, the entry's canonical form, and that
/// the entry is leaf `seq − 1` of the signed tree. Returns the entry's seq and the head.
pub fn verify_receipt(
    r: &ReceiptFile,
    origin: &str,
    trusted: &[VerifyingKey],
) -> Result<(u64, TreeHead), String> {
    let head = checkpoint::verify(&r.checkpoint, origin, trusted)?;
    let value: serde_json::Value =
        serde_json::from_str(&r.entry).map_err(|e| format!("entry is not JSON: {e}"))?;
    if canonical_string(&value)? != r.entry {
        return Err("entry is not in canonical (JCS) form".into());
    }
    let seq = value
        .get("seq")
        .and_then(|v| v.as_u64())
        .filter(|s| *s >= 1)
        .ok_or("entry has no seq")?;
    let proof = hashes(&r.inclusion_proof)?;
    if !merkle::verify_inclusion(
        seq - 1,
        head.size,
        &merkle::leaf_hash(r.entry.as_bytes()),
        &proof,
        &head.root,
    ) {
        return Err(format!(
            "entry {seq} is not in the tree of size {} signed by the checkpoint",
            head.size
        ));
    }
    Ok((seq, head))
}

/// Checks that `new` extends `old` (both signed by the key).
pub fn verify_extension(old: &TreeHead, new: &TreeHead, proof: &[String]) -> Result<(), String> {
    let proof = hashes(proof)?;
    if merkle::verify_consistency(old.size, new.size, &old.root, &new.root, &proof) {
        Ok(())
    } else {
        Err(format!(
            "the log of size {} is not an extension of the saved checkpoint of size {} (truncated or rewritten)",
            new.size, old.size
        ))
    }
}

//! Offline checks with only the log's public key (`signing.pub`): RFC 6962 / RFC 9162
//! inclusion and consistency proofs, C2SP signed-note checkpoints (Ed25519), and
//! receipts (one audit entry, its inclusion proof and a signed checkpoint).
//!
//! A tool server that receives a receipt with a request can check, before acting, that
//! Arbiter really logged this decision, without trusting the caller or calling Arbiter:
//!
//! ```no_run
//! # fn example(receipt: &arbiter_client::proto::Receipt) -> Result<(), String> {
//! let public = std::fs::read_to_string("signing.pub").map_err(|e| e.to_string())?;
//! let (origin, keys) = arbiter_client::proof::read_public_key(&public)?;
//! let checked = arbiter_client::proof::verify_receipt(receipt, &origin, &keys)?;
//! assert_eq!(checked.entry["outcome"], "allow");
//! # Ok(()) }
//! ```
//!
//! Format: docs/audit-format.md §11. Errors are plain text meant for people.

use crate::proto;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// RFC 6962 leaf hash: `SHA-256(0x00 ‖ entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

/// RFC 6962 interior node hash: `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The 4-byte signed-note key id: SHA-256(origin ‖ 0x0A ‖ 0x01 ‖ public key)[..4].
pub fn key_id(origin: &str, public: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(origin.as_bytes());
    h.update([0x0A, 0x01]);
    h.update(public.as_bytes());
    h.finalize()[..4].try_into().expect("4 bytes")
}

/// A verified checkpoint's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeHead {
    /// The log's origin line.
    pub origin: String,
    /// Number of entries the tree covers.
    pub size: u64,
    /// Root hash.
    pub root: Hash,
}

/// A receipt that verified.
#[derive(Debug, Clone)]
pub struct CheckedReceipt {
    /// The entry's sequence number.
    pub seq: u64,
    /// The entry (canonical JSON, parsed): `outcome`, `agent_id`, `body.action_digest`…
    pub entry: serde_json::Value,
    /// The signed tree head the entry is proven to be in.
    pub head: TreeHead,
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && r == *root
}

/// Verifies a consistency proof (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old == 0 || old > new {
        return false;
    }
    if old == new {
        return proof.is_empty() && old_root == new_root;
    }
    let mut path: Vec<Hash> = proof.to_vec();
    if old.is_power_of_two() {
        path.insert(0, *old_root);
    }
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut f_n, mut s_n) = (old - 1, new - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && fr == *old_root && sr == *new_root
}

/// Checks the note's signature with one of the trusted public keys (the active key
/// and retired ones after a rotation) and parses its body.
pub fn verify_checkpoint(
    note: &str,
    origin: &str,
    trusted: &[VerifyingKey],
) -> Result<TreeHead, String> {
    let (text, sigs) = note
        .split_once("\n\n")
        .ok_or("not a signed note: no blank line")?;
    let text = format!("{text}\n");
    let mut lines = text.lines();
    let (o, size, root) = (lines.next(), lines.next(), lines.next());
    let (Some(o), Some(size), Some(root)) = (o, size, root) else {
        return Err("checkpoint body needs origin, size and root".into());
    };
    if o != origin {
        return Err(format!("origin {o:?} is not {origin:?}"));
    }
    let size: u64 = size.parse().map_err(|_| "tree size is not a number")?;
    let root: [u8; 32] = B64
        .decode(root)
        .ok()
        .and_then(|r| r.try_into().ok())
        .ok_or("root is not 32 bytes of base64")?;
    for line in sigs.lines() {
        let Some(rest) = line.strip_prefix("\u{2014} ") else {
            continue;
        };
        let Some((name, blob)) = rest.split_once(' ') else {
            continue;
        };
        let Ok(blob) = B64.decode(blob) else { continue };
        if name != origin || blob.len() != 68 {
            continue;
        }
        let Some(public) = trusted.iter().find(|k| key_id(origin, k) == blob[..4]) else {
            continue;
        };
        let sig = Signature::from_slice(&blob[4..]).map_err(|e| e.to_string())?;
        return public
            .verify(text.as_bytes(), &sig)
            .map(|()| TreeHead {
                origin: origin.to_owned(),
                size,
                root,
            })
            .map_err(|_| "signature does not verify".to_owned());
    }
    Err("no signature by a trusted key".into())
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

fn hashes(list: &[String]) -> Result<Vec<Hash>, String> {
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
    r: &proto::Receipt,
    origin: &str,
    trusted: &[VerifyingKey],
) -> Result<CheckedReceipt, String> {
    let head = verify_checkpoint(&r.checkpoint, origin, trusted)?;
    let value: serde_json::Value =
        serde_json::from_str(&r.entry).map_err(|e| format!("entry is not JSON: {e}"))?;
    if serde_jcs::to_string(&value).map_err(|e| e.to_string())? != r.entry {
        return Err("entry is not in canonical (JCS) form".into());
    }
    let seq = value
        .get("seq")
        .and_then(|v| v.as_u64())
        .filter(|s| *s >= 1)
        .ok_or("entry has no seq")?;
    let proof = hashes(&r.inclusion_proof)?;
    if !verify_inclusion(
        seq - 1,
        head.size,
        &leaf_hash(r.entry.as_bytes()),
        &proof,
        &head.root,
    ) {
        return Err(format!(
            "entry {seq} is not in the tree of size {} signed by the checkpoint",
            head.size
        ));
    }
    Ok(CheckedReceipt {
        seq,
        entry: value,
        head,
    })
}

/// Checks that `new` extends `old` (both signed by the key).
pub fn verify_extension(old: &TreeHead, new: &TreeHead, proof: &[String]) -> Result<(), String> {
    let proof = hashes(proof)?;
    if verify_consistency(old.size, new.size, &old.root, &new.root, &proof) {
        Ok(())
    } else {
        Err(format!(
            "the log of size {} is not an extension of the saved checkpoint of size {} (truncated or rewritten)",
            new.size, old.size
        ))
    }
}

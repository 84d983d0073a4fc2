//! Signed checkpoints in the C2SP tlog-checkpoint / signed-note format:
//!
//! ```text
//! <origin>\n<tree size>\n<base64 root hash>\n\n— <origin> <base64(key id ‖ signature)>\n
//! ```
//!
//! The Ed25519 signature covers the three body lines (with their newlines); the 4-byte
//! key id is SHA-256(origin ‖ 0x0A ‖ 0x01 ‖ public key)[..4], as signed-note specifies.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

pub fn key_id(origin: &str, public: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(origin.as_bytes());
    h.update([0x0A, 0x01]);
    h.update(public.as_bytes());
    h.finalize()[..4].try_into().expect("4 bytes")
}

/// The note body for a tree head.
pub fn body(origin: &str, size: u64, root: &[u8; 32]) -> String {
    format!("{origin}\n{size}\n{}\n", B64.encode(root))
}

pub fn sign(origin: &str, size: u64, root: &[u8; 32], key: &SigningKey) -> String {
    let text = body(origin, size, root);
    let sig = key.sign(text.as_bytes());
    let mut blob = key_id(origin, &key.verifying_key()).to_vec();
    blob.extend_from_slice(&sig.to_bytes());
    format!("{text}\n\u{2014} {origin} {}\n", B64.encode(blob))
}

/// A verified checkpoint's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeHead {
    pub origin: String,
    pub size: u64,
    pub root: [u8; 32],
}

/// Checks the note's signature with one of the trusted public keys (the active key
/// and retired ones after a rotation) and parses its body.
pub fn verify(note: &str, origin: &str, trusted: &[VerifyingKey]) -> Result<TreeHead, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_checkpoint_verifies_and_any_edit_breaks_it() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let note = sign("arbiter.test/log", 42, &[9u8; 32], &key);
        let head = verify(&note, "arbiter.test/log", &[key.verifying_key()]).unwrap();
        assert_eq!((head.size, head.root), (42, [9u8; 32]));
        let forged = note.replacen("\n42\n", "\n43\n", 1);
        assert!(verify(&forged, "arbiter.test/log", &[key.verifying_key()]).is_err());
        let other = SigningKey::from_bytes(&[8u8; 32]);
        assert!(verify(&note, "arbiter.test/log", &[other.verifying_key()]).is_err());
    }
}

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
use ed25519_dalek::{Signer, SigningKey};

pub use arbiter_client::proof::{key_id, verify_checkpoint as verify, TreeHead};

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

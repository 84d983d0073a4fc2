//! The HMAC-SHA256 chain: `mac_i = HMAC(key[key_id], DOMAIN ‖ mac_{i-1} ‖ canonical_i)`.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::LazyLock;

type HmacSha256 = Hmac<Sha256>;

/// Domain separation prefix of every chain MAC.
pub const DOMAIN: &[u8] = b"arbiter-audit-chain-v1\n";

/// The value chained into entry 1: SHA-256("arbiter-audit-genesis-v1").
pub static GENESIS: LazyLock<[u8; 32]> =
    LazyLock::new(|| Sha256::digest(b"arbiter-audit-genesis-v1").into());

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    /// Signs new entries.
    Active,
    /// Verifies old entries, never signs.
    Retired,
    /// Entries chained with it fail verification.
    Revoked,
}

/// A 32-byte chain key.
#[derive(Clone)]
pub struct HmacKey {
    pub id: String,
    secret: [u8; 32],
    /// HMAC with the key's pads already hashed: cloning it saves the two SHA-256 blocks
    /// `new_from_slice` spends per MAC (a quarter of a typical entry's MAC cost).
    keyed: HmacSha256,
    pub status: KeyStatus,
    /// For a revoked key: the last seq it may have chained; `None` revokes every entry.
    pub revoked_after_seq: Option<u64>,
}

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmacKey")
            .field("id", &self.id)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// `h-` + the first 16 hex characters of SHA-256("arbiter-hmac-key-id-v1" ‖ secret).
pub fn key_id(secret: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"arbiter-hmac-key-id-v1");
    h.update(secret);
    format!("h-{}", &hex::encode(h.finalize())[..16])
}

impl HmacKey {
    /// Refuses keys that are not exactly 32 bytes or have fewer than 16 distinct byte
    /// values (all-zero, repeated or ASCII-word keys).
    pub fn new(secret: &[u8], status: KeyStatus) -> Result<Self, String> {
        let secret: [u8; 32] = secret
            .try_into()
            .map_err(|_| format!("HMAC key must be exactly 32 bytes, got {}", secret.len()))?;
        let mut seen = [false; 256];
        for b in secret {
            seen[b as usize] = true;
        }
        let distinct = seen.iter().filter(|s| **s).count();
        if distinct < 16 {
            return Err(format!(
                "HMAC key is too weak: {distinct} distinct byte values, at least 16 required; generate one with `arbiter keys generate`"
            ));
        }
        Ok(Self {
            id: key_id(&secret),
            keyed: HmacSha256::new_from_slice(&secret).expect("HMAC takes any key length"),
            secret,
            status,
            revoked_after_seq: None,
        })
    }

    pub fn secret_hex(&self) -> String {
        hex::encode(self.secret)
    }

    /// A separate key for another purpose (e.g. context digests), so the chain key
    /// itself is never used outside the chain.
    pub fn derive(&self, label: &[u8]) -> [u8; 32] {
        let mut m = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length");
        m.update(label);
        m.finalize().into_bytes().into()
    }

    pub fn mac(&self, prev: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
        let mut m = self.keyed.clone();
        m.update(DOMAIN);
        m.update(prev);
        m.update(canonical);
        m.finalize().into_bytes().into()
    }
}

/// All known chain keys; exactly one is active.
#[derive(Debug, Clone)]
pub struct KeyRing {
    keys: HashMap<String, HmacKey>,
    active: String,
}

impl KeyRing {
    pub fn new(keys: Vec<HmacKey>) -> Result<Self, String> {
        let active: Vec<&HmacKey> = keys
            .iter()
            .filter(|k| k.status == KeyStatus::Active)
            .collect();
        if active.len() != 1 {
            return Err(format!(
                "the key ring must hold exactly one active HMAC key, found {}",
                active.len()
            ));
        }
        let active = active[0].id.clone();
        Ok(Self {
            keys: keys.into_iter().map(|k| (k.id.clone(), k)).collect(),
            active,
        })
    }

    pub fn active(&self) -> &HmacKey {
        &self.keys[&self.active]
    }

    pub fn get(&self, id: &str) -> Option<&HmacKey> {
        self.keys.get(id)
    }

    pub fn keys(&self) -> impl Iterator<Item = &HmacKey> {
        self.keys.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_keys_are_refused() {
        assert!(HmacKey::new(&[0u8; 32], KeyStatus::Active).is_err());
        assert!(HmacKey::new(b"short", KeyStatus::Active).is_err());
        assert!(HmacKey::new(b"aaaabbbbccccddddaaaabbbbccccdddd", KeyStatus::Active).is_err());
        let good: Vec<u8> = (0u8..32).collect();
        assert!(HmacKey::new(&good, KeyStatus::Active).is_ok());
    }

    #[test]
    fn key_ids_derive_from_the_secret() {
        let good: Vec<u8> = (0u8..32).collect();
        let k = HmacKey::new(&good, KeyStatus::Active).unwrap();
        assert!(k.id.starts_with("h-") && k.id.len() == 18);
        assert_eq!(k.id, key_id(&good));
    }
}

/// The shared test vector (tests/vectors/audit-chain-v1.json) is also checked by the
/// independent Python verifier, so both implementations derive the same bytes.
#[cfg(test)]
mod vector {
    use super::*;
    use crate::audit::canonical::canonical_string;
    use serde_json::Value;

    const VECTOR: &str = include_str!("../../../tests/vectors/audit-chain-v1.json");

    #[test]
    fn rust_chain_matches_the_published_vector() {
        let v: Value = serde_json::from_str(VECTOR).unwrap();
        assert_eq!(v["genesis_hex"].as_str().unwrap(), hex::encode(*GENESIS));
        assert_eq!(v["domain_hex"].as_str().unwrap(), hex::encode(DOMAIN));
        let key = HmacKey::new(
            &hex::decode(v["key_hex"].as_str().unwrap()).unwrap(),
            KeyStatus::Active,
        )
        .unwrap();
        assert_eq!(key.id, v["key_id"].as_str().unwrap());
        let mut prev = *GENESIS;
        for e in v["entries"].as_array().unwrap() {
            let canonical = canonical_string(&e["entry"]).unwrap();
            assert_eq!(canonical, e["canonical"].as_str().unwrap());
            let mac = key.mac(&prev, canonical.as_bytes());
            assert_eq!(hex::encode(mac), e["mac"].as_str().unwrap());
            prev = mac;
        }
        assert_eq!(hex::encode(prev), v["head_mac"].as_str().unwrap());
    }

    #[test]
    fn jcs_cases_match_including_utf16_member_order() {
        let v: Value = serde_json::from_str(VECTOR).unwrap();
        for case in v["jcs_cases"].as_array().unwrap() {
            let got = canonical_string(&case["value"]).unwrap();
            assert_eq!(
                got,
                case["canonical"].as_str().unwrap(),
                "case {}",
                case["name"]
            );
        }
    }
}

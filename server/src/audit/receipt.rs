//! Offline verification with only the public key: receipts (one entry, its inclusion
//! proof and a signed checkpoint) and checkpoint-to-checkpoint consistency.

use super::checkpoint::TreeHead;
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

pub use arbiter_client::proof::{read_public_key, verify_extension};

/// Checks a receipt file; returns the entry's seq and the signed head.
pub fn verify_receipt(
    r: &ReceiptFile,
    origin: &str,
    trusted: &[VerifyingKey],
) -> Result<(u64, TreeHead), String> {
    let receipt = arbiter_client::proto::Receipt {
        entry: r.entry.clone(),
        mac: r.mac.clone(),
        inclusion_proof: r.inclusion_proof.clone(),
        checkpoint: r.checkpoint.clone(),
    };
    arbiter_client::proof::verify_receipt(&receipt, origin, trusted).map(|c| (c.seq, c.head))
}

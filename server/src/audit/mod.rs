//! The audit log's bytes: canonical entries, the HMAC chain and verification. These
//! modules work on bytes and keys only; `batcher` is the single task that appends.

pub mod batcher;
pub mod canonical;
pub mod chain;
pub mod checkpoint;
pub mod integrity;
pub mod merkle;
pub mod mirror;
pub mod offline;
#[cfg(test)]
mod props;
pub mod receipt;
pub mod refusal;
pub mod verify;

pub use batcher::{Batcher, BatcherHandle, Committed, TreeSigner};
pub use canonical::{EntryDraft, SealedEntry};
pub use chain::{HmacKey, KeyRing, KeyStatus, GENESIS};

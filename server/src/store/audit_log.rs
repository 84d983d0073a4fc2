//! The audit log, read-only: what the API, the console and the notifier may see of the
//! store. Everything that writes goes through the engine and the audit writer, so a
//! handler holding an `AuditLog` cannot change state or the log by construction.

use super::{AuditQuery, CheckpointRow, SealedEntry, Store, StoreError};
use std::collections::HashMap;
use std::sync::Arc;

/// A cheap, cloneable read handle on the committed log.
#[derive(Clone)]
pub struct AuditLog(Arc<dyn Store>);

impl AuditLog {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self(store)
    }

    /// Highest sequence number and its MAC, if the log is not empty.
    pub async fn head(&self) -> Result<Option<(u64, String)>, StoreError> {
        self.0.audit_head().await
    }

    /// Entries with `from_seq <= seq <= to_seq`, at most `limit`, in order.
    pub async fn range(
        &self,
        from_seq: u64,
        to_seq: u64,
        limit: u32,
    ) -> Result<Vec<SealedEntry>, StoreError> {
        self.0.audit_range(from_seq, to_seq, limit).await
    }

    /// One entry by its sequence number.
    pub async fn entry(&self, seq: u64) -> Result<Option<SealedEntry>, StoreError> {
        Ok(self.0.audit_range(seq, seq, 1).await?.pop())
    }

    /// Entries after `after_seq` that match `q`, at most `limit`, in order.
    pub async fn query(
        &self,
        q: &AuditQuery,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<SealedEntry>, StoreError> {
        self.0.query_audit(q, after_seq, limit).await
    }

    /// The newest signed checkpoint, or the one for exactly `size` leaves.
    pub async fn checkpoint(&self, size: Option<u64>) -> Result<Option<CheckpointRow>, StoreError> {
        self.0.checkpoint(size).await
    }

    /// Stored Merkle nodes, in one round trip (what a proof needs).
    pub async fn nodes(
        &self,
        wanted: &[(u32, u64)],
    ) -> Result<HashMap<(u32, u64), [u8; 32]>, StoreError> {
        self.0.nodes(wanted).await
    }
}

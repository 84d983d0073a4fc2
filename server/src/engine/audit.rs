//! Reading and verifying the log through the store.

use super::{Engine, EngineError};
use crate::audit::integrity::{self, Rebuild};
use crate::audit::merkle;
use crate::audit::verify::{Failure, Fault};
use crate::audit::GENESIS;
use crate::store::CheckpointRow;

/// The result of verifying a range of the log.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub checked: u64,
    pub failure: Option<Failure>,
    pub head_seq: u64,
    pub head_mac: String,
    /// Size of the newest signed checkpoint the whole log was checked against (0 for a
    /// range, or when no checkpoint exists).
    pub checkpoint_size: u64,
}

impl Engine {
    /// Verifies `[from, to]` (0 = to the end). A range that starts after 1 trusts the
    /// stored MAC of the entry before it. The whole log (from 1 to the end) is also
    /// checked against what the server signed: its leaf hashes must rebuild the root of
    /// the newest checkpoint, and it must hold every entry that checkpoint covers.
    pub async fn verify_audit(&self, from: u64, to: u64) -> Result<VerifyReport, EngineError> {
        let from = from.max(1);
        // Read before the head: entries and their checkpoint commit together, so a
        // batch landing in between makes the head newer than this checkpoint, never
        // older, and a live log is never mistaken for a truncated one.
        let signed = if from == 1 && to == 0 {
            Some(self.store.checkpoint(None).await?)
        } else {
            None
        };
        let (head_seq, head_mac) = self.store.audit_head().await?.unwrap_or((0, String::new()));
        let to = if to == 0 { head_seq } else { to.min(head_seq) };
        let report = |checked, failure, checkpoint_size| VerifyReport {
            checked,
            failure,
            head_seq,
            head_mac: head_mac.clone(),
            checkpoint_size,
        };
        let prev = match self.chain_start(from).await? {
            Ok(prev) => prev,
            Err(f) => return Ok(report(0, Some(f), 0)),
        };
        let target = signed
            .as_ref()
            .and_then(|c| c.as_ref())
            .map_or(0, |c| c.size);
        let mut rebuild = signed.is_some().then(|| Rebuild::new(target));
        let (checked, failure) =
            integrity::walk(&self.store, &self.keys, from, to, prev, rebuild.as_mut()).await?;
        if failure.is_some() {
            return Ok(report(checked, failure, target));
        }
        let failure = (checked < to.saturating_sub(from) + 1 && to >= from).then(|| Failure {
            seq: from + checked,
            fault: Fault::Gap,
            message: format!("entries {}..{} are missing", from + checked, to),
        });
        if failure.is_some() {
            return Ok(report(checked, failure, target));
        }
        let failure = match (signed, rebuild) {
            (Some(signed), Some(rebuild)) => {
                self.check_tree(signed.as_ref(), &rebuild, head_seq).await?
            }
            _ => None,
        };
        Ok(report(checked, failure, target))
    }

    /// The MAC the chain of a range starting at `from` links to.
    async fn chain_start(&self, from: u64) -> Result<Result<[u8; 32], Failure>, EngineError> {
        if from == 1 {
            return Ok(Ok(*GENESIS));
        }
        let before = self.store.audit_range(from - 1, from - 1, 1).await?;
        Ok(before
            .first()
            .and_then(|e| hex::decode(&e.mac).ok())
            .and_then(|m| <[u8; 32]>::try_from(m).ok())
            .ok_or_else(|| Failure {
                seq: from - 1,
                fault: Fault::Gap,
                message: format!(
                    "entry {} (the start of the range's chain) is missing",
                    from - 1
                ),
            }))
    }

    /// The whole log, already chain-checked into `rebuild`, against the newest signed
    /// checkpoint read before the walk (`signed`) and the stored tree.
    async fn check_tree(
        &self,
        signed: Option<&CheckpointRow>,
        rebuild: &Rebuild,
        head_seq: u64,
    ) -> Result<Option<Failure>, EngineError> {
        let fail = |seq, fault, message| {
            Ok(Some(Failure {
                seq,
                fault,
                message,
            }))
        };
        let Some(cp) = signed else {
            if head_seq == 0 {
                return Ok(None);
            }
            return fail(
                1,
                Fault::TreeMismatch,
                format!("no signed checkpoint covers entries 1..{head_seq}"),
            );
        };
        if rebuild.size() < cp.size {
            let first = rebuild.size() + 1;
            return fail(
                first,
                Fault::Truncated,
                format!(
                    "the log ends at seq {}, but the server signed a checkpoint of size {}: \
                     entries {first}..{} are missing",
                    rebuild.size(),
                    cp.size,
                    cp.size
                ),
            );
        }
        let root = integrity::root_of(cp)?;
        if rebuild.root_at_target() != Some(root) {
            return Ok(Some(self.rewritten(cp.size).await?));
        }
        // The stored tree serves every proof: it must fold to the signed root as well.
        if integrity::stored_root(self.store.as_ref(), cp.size).await? != Some(root) {
            return fail(
                cp.size,
                Fault::TreeMismatch,
                format!(
                    "the stored Merkle nodes do not fold to the root of the signed checkpoint \
                     of size {}: inclusion and consistency proofs would fail",
                    cp.size
                ),
            );
        }
        // Entries after `cp` were committed during the walk, each batch with its own
        // checkpoint in the same transaction; one that no checkpoint covers was not.
        let newest = self.store.checkpoint(None).await?.map_or(0, |c| c.size);
        if head_seq > newest {
            return fail(
                newest + 1,
                Fault::TreeMismatch,
                format!(
                    "entries {}..{head_seq} are covered by no signed checkpoint (added outside \
                     the server)",
                    newest + 1
                ),
            );
        }
        Ok(None)
    }

    /// Names what the entries that do not rebuild the signed root of `size` changed.
    async fn rewritten(&self, size: u64) -> Result<Failure, EngineError> {
        let (seq, message) = match self.first_leaf_off_tree(size).await? {
            Some(seq) => (
                seq,
                format!(
                    "entry {seq} does not hash to its leaf in the signed tree: rewritten after \
                     the checkpoint of size {size} was signed"
                ),
            ),
            None => (
                size,
                format!(
                    "entries 1..{size} do not rebuild the root of the signed checkpoint of that \
                     size (entries and stored leaves were rewritten together)"
                ),
            ),
        };
        Ok(Failure {
            seq,
            fault: Fault::TreeMismatch,
            message,
        })
    }

    /// The first entry whose leaf hash is not the stored leaf, if any (a rewrite with
    /// valid MACs shows here, not in the chain).
    async fn first_leaf_off_tree(&self, size: u64) -> Result<Option<u64>, EngineError> {
        let mut next = 1;
        while next <= size {
            let page = self.store.audit_range(next, size, 1000).await?;
            let Some(last) = page.last() else { break };
            let wanted: Vec<(u32, u64)> = page.iter().map(|e| (0, e.seq - 1)).collect();
            let stored = self.store.nodes(&wanted).await?;
            let off = page.iter().find(|e| {
                stored.get(&(0, e.seq - 1)) != Some(&merkle::leaf_hash(e.canonical.as_bytes()))
            });
            if let Some(e) = off {
                return Ok(Some(e.seq));
            }
            next = last.seq + 1;
        }
        Ok(None)
    }
}

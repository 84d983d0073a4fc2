//! The log checked against what the server signed: leaf hashes rebuilt from the
//! entries, the stored tree, the newest signed checkpoint, and a copy of that checkpoint
//! kept outside the database.
//!
//! The chain (`verify`) cannot see a log cut after its last entry: n entries are a valid
//! chain of n. The checkpoints can, because the server signs one per batch in the same
//! transaction as the entries, so in an honest database the entries' head, the stored
//! tree's size and the newest checkpoint's size are always the same number.

use super::checkpoint::TreeHead;
use super::merkle::{Frontier, Hash};
use super::verify::{Failure, Verifier};
use super::KeyRing;
use crate::store::{CheckpointRow, Store, StoreError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Entries per page of a whole-log read. The per-page costs (a query, a thread per
/// core to check it) are small against 10 000 entries, and two pages in memory (the
/// one checked and the one read meanwhile) stay around 10 MB.
pub const PAGE: u32 = 10_000;

/// Checks the chain of `[from, to]` from `prev` (the stored MAC before `from`) page by
/// page, feeding the leaf hashes of the entries it accepts to `rebuild`; returns how
/// many entries verified and the first failure. `VerifyAudit` and `bench-audit` both
/// run this.
pub async fn walk(
    store: &Arc<dyn Store>,
    keys: &KeyRing,
    from: u64,
    to: u64,
    prev: [u8; 32],
    mut rebuild: Option<&mut Rebuild>,
) -> Result<(u64, Option<Failure>), StoreError> {
    let mut v = Verifier::new(keys, from, prev);
    let fetch = |next: u64| {
        let store = store.clone();
        tokio::spawn(async move { store.audit_page(next, to, PAGE).await })
    };
    // The next page is read while this one is checked: reading and checking take
    // about as long as each other, so overlapping them nearly halves the time.
    let mut pending = (from <= to).then(|| fetch(from));
    let mut leaves = Vec::new();
    while let Some(reading) = pending.take() {
        let page = reading
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))??;
        let Some(last) = page.last() else { break };
        if last.seq < to {
            pending = Some(fetch(last.seq + 1));
        }
        let checked =
            off_the_runtime(|| check_page(&mut v, &page, rebuild.as_deref_mut(), &mut leaves));
        if let Err(f) = checked {
            return Ok((v.checked, Some(f)));
        }
    }
    Ok((v.checked, None))
}

/// One page through the chain and, when rebuilding, its accepted entries' leaves into
/// the tree (they are in seq order from 1, the chain checked that).
fn check_page(
    v: &mut Verifier<'_>,
    page: &[super::SealedEntry],
    rebuild: Option<&mut Rebuild>,
    leaves: &mut Vec<Hash>,
) -> Result<(), Failure> {
    let Some(r) = rebuild else {
        return v.feed_all(page);
    };
    leaves.clear();
    let chained = v.feed_all_hashing(page, leaves);
    leaves.iter().for_each(|l| r.push(*l));
    chained
}

/// Runs CPU-bound work without stalling the runtime's other tasks: on a multi-threaded
/// runtime the worker's queue moves to another thread meanwhile; on a current-thread
/// runtime there is nothing else to move.
fn off_the_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The tree rebuilt from entries, remembering its root at one size (a checkpoint's).
#[derive(Debug, Clone)]
pub struct Rebuild {
    frontier: Frontier,
    target: u64,
    root_at_target: Option<Hash>,
}

impl Rebuild {
    /// A rebuild from leaf 0 that keeps the root once `target` leaves are in.
    pub fn new(target: u64) -> Self {
        Self {
            frontier: Frontier::default(),
            target,
            root_at_target: None,
        }
    }

    pub fn push(&mut self, leaf: Hash) {
        self.frontier.append(leaf);
        if self.frontier.size == self.target {
            self.root_at_target = Some(self.frontier.root());
        }
    }

    /// Leaves pushed so far.
    pub fn size(&self) -> u64 {
        self.frontier.size
    }

    /// The root of the first `target` leaves, once that many were pushed.
    pub fn root_at_target(&self) -> Option<Hash> {
        self.root_at_target
    }

    /// The root of every leaf pushed.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }
}

/// What the server reads at start to decide whether the log is whole.
#[derive(Debug, Clone)]
pub struct StartFacts {
    /// Newest entry's seq (0 for an empty log).
    pub head_seq: u64,
    /// Entries in the log: `head_seq` unless some were deleted below the head.
    pub entry_count: u64,
    /// Newest signed checkpoint in the database: size and root.
    pub checkpoint: Option<(u64, Hash)>,
    /// Leaves in the stored tree.
    pub tree_size: u64,
    /// The root the stored tree's frontier folds to.
    pub tree_root: Hash,
    /// The checkpoint kept outside the database, if there is one.
    pub external: Option<(PathBuf, TreeHead)>,
    /// Whether the stored tree proves the database's checkpoint extends the external one
    /// (`None` when there is nothing to prove: no external copy, or one that is larger).
    pub extends_external: Option<bool>,
}

/// Why the server refuses to start on this log, with what to do about it.
pub fn start_check(f: &StartFacts) -> Result<(), String> {
    let advice = "Restore the data directory (SQLite) or the database (PostgreSQL) from a \
                  backup taken after that checkpoint, and run `arbiter audit verify` (with \
                  the server on the damaged copy stopped, on an export: `arbiter audit verify \
                  --export FILE --keys hmac.json --checkpoint SAVED --public-key signing.pub`) \
                  to see the damage. The server never assigns a sequence number a signed \
                  checkpoint already covers, so it does not start on this log.";
    let refuse = |what: String| Err(format!("audit log integrity: {what}. {advice}"));
    if let Some(what) = against_external(f) {
        return refuse(what);
    }
    against_itself(f).map_or(Ok(()), refuse)
}

/// The database against the checkpoint kept outside it: a rollback or a fork.
fn against_external(f: &StartFacts) -> Option<String> {
    let (path, ext) = f.external.as_ref()?;
    let size = f.checkpoint.map_or(0, |c| c.0);
    if ext.size > size {
        return Some(format!(
            "rollback: the checkpoint kept outside the database ({}) was signed at size {}, \
             but the database holds a log of {} entries with a newest checkpoint of size {size} \
             (the database was replaced by an older copy of itself, or truncated). If you \
             restored an older backup on purpose and accept losing entries {}..{}, move {} \
             aside (keep it as evidence) and start again",
            path.display(),
            ext.size,
            f.head_seq,
            size + 1,
            ext.size,
            path.display()
        ));
    }
    (f.extends_external == Some(false)).then(|| {
        format!(
            "fork: the database's checkpoint of size {size} does not extend the checkpoint of \
             size {} kept in {} (the first {} entries were rewritten)",
            ext.size,
            path.display(),
            ext.size
        )
    })
}

/// The entries' head and count, the stored tree and the newest checkpoint, which one
/// transaction per batch keeps equal.
fn against_itself(f: &StartFacts) -> Option<String> {
    let Some((size, root)) = f.checkpoint else {
        if f.tree_size == 0 {
            // An empty log, or one written before the tree existed: the batcher builds
            // the tree and signs its first checkpoint.
            return None;
        }
        return Some(format!(
            "the stored Merkle tree has {} leaves but no signed checkpoint exists (checkpoints \
             were deleted)",
            f.tree_size
        ));
    };
    if f.head_seq < size {
        return Some(format!(
            "truncated: the newest entry is seq {}, but the server signed a checkpoint of size \
             {size}; entries {}..{size} are missing",
            f.head_seq,
            f.head_seq + 1
        ));
    }
    if f.head_seq > size {
        return Some(format!(
            "tree_mismatch: the newest entry is seq {}, but the newest signed checkpoint has size \
             {size}; entries {}..{} were added outside the server",
            f.head_seq,
            size + 1,
            f.head_seq
        ));
    }
    if f.entry_count != f.head_seq {
        return Some(format!(
            "gap: the log holds {} entries up to seq {} (entries below the head were \
             deleted; `arbiter audit verify` names the first)",
            f.entry_count, f.head_seq
        ));
    }
    if f.tree_size != size || f.tree_root != root {
        return Some(format!(
            "tree_mismatch: the stored Merkle tree (size {}) does not fold to the root of the \
             newest signed checkpoint (size {size})",
            f.tree_size
        ));
    }
    None
}

/// A copy of the newest signed checkpoint in a file outside the database, so a database
/// rolled back to an older copy of itself is caught at start (the copy's own checkpoints
/// all agree with its entries).
#[derive(Debug, Clone)]
pub struct CheckpointFile {
    pub path: PathBuf,
    /// The log's origin and the keys a checkpoint may be signed with (active first,
    /// then retired ones: a rotation must not make the file unreadable).
    pub origin: String,
    pub trusted: Vec<ed25519_dalek::VerifyingKey>,
}

impl CheckpointFile {
    /// The kept checkpoint, verified; `None` when there is no file yet.
    pub fn read(&self) -> Result<Option<TreeHead>, StoreError> {
        let note = match std::fs::read_to_string(&self.path) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::Unavailable(Box::new(e))),
        };
        super::checkpoint::verify(&note, &self.origin, &self.trusted)
            .map(Some)
            .map_err(|e| {
                StoreError::Corrupt(format!(
                    "{}: not a checkpoint signed by this log's key ({e}); restore it or move it aside",
                    self.path.display()
                ))
            })
    }

    /// Replaces the file atomically (temporary file, then rename), so a crash leaves the
    /// old or the new checkpoint, never a torn one. `sync` also forces it to disk (at
    /// shutdown); per batch, surviving a crash of the process is enough, as for the
    /// database's own `synchronous = normal`.
    pub fn write(&self, note: &str, sync: bool) -> std::io::Result<()> {
        write_atomically(&self.path, note.as_bytes(), sync)
    }
}

fn write_atomically(path: &Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    use std::io::Write;
    // One temporary name per process: replicas sharing a data directory must not
    // write into each other's half-written file.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_all()?;
        }
    }
    std::fs::rename(&tmp, path)?;
    if sync {
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
    }
    Ok(())
}

/// A proof over stored nodes, read in one round trip: the proof is computed once to
/// learn which nodes it needs, then again over the nodes read.
pub async fn stored_proof(
    store: &dyn Store,
    proof: impl Fn(&mut dyn FnMut(u32, u64) -> Option<Hash>) -> Option<Vec<Hash>>,
) -> Result<Option<Vec<Hash>>, StoreError> {
    let mut wanted = Vec::new();
    proof(&mut |level, index| {
        wanted.push((level, index));
        Some([0u8; 32])
    });
    let found = store.nodes(&wanted).await?;
    Ok(proof(&mut |level, index| {
        found.get(&(level, index)).copied()
    }))
}

/// The root the stored tree of `size` leaves folds to (`None` when a node is missing).
pub async fn stored_root(store: &dyn Store, size: u64) -> Result<Option<Hash>, StoreError> {
    let frontier = |node: &mut dyn FnMut(u32, u64) -> Option<Hash>| {
        Frontier::at(size, &mut |l, i| node(l, i)).map(|f| vec![f.root()])
    };
    Ok(stored_proof(store, frontier).await?.map(|r| r[0]))
}

/// The hash a checkpoint row holds.
pub fn root_of(c: &CheckpointRow) -> Result<Hash, StoreError> {
    hex::decode(&c.root_hex)
        .ok()
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "checkpoint of size {} has a malformed root {:?}",
                c.size, c.root_hex
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(head: u64, cp: u64, tree: u64) -> StartFacts {
        StartFacts {
            head_seq: head,
            entry_count: head,
            checkpoint: (cp > 0).then_some((cp, [1; 32])),
            tree_size: tree,
            tree_root: [1; 32],
            external: None,
            extends_external: None,
        }
    }

    #[test]
    fn a_whole_log_and_an_empty_or_legacy_log_start() {
        assert!(start_check(&facts(8, 8, 8)).is_ok());
        assert!(start_check(&facts(0, 0, 0)).is_ok());
        // Written before the tree existed: the batcher builds it.
        assert!(start_check(&facts(5, 0, 0)).is_ok());
    }

    #[test]
    fn a_truncated_log_is_refused_naming_both_numbers_and_what_to_do() {
        let err = start_check(&facts(6, 8, 8)).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        assert!(err.contains("seq 6") && err.contains("size 8"), "{err}");
        assert!(err.contains("entries 7..8"), "{err}");
        assert!(
            err.contains("backup") && err.contains("arbiter audit verify"),
            "{err}"
        );
    }

    #[test]
    fn entries_beyond_the_checkpoint_and_a_tree_that_disagrees_are_refused() {
        assert!(start_check(&facts(9, 8, 8))
            .unwrap_err()
            .contains("entries 9..9 were added"));
        assert!(start_check(&facts(8, 8, 7))
            .unwrap_err()
            .contains("tree_mismatch"));
        let mut other_root = facts(8, 8, 8);
        other_root.tree_root = [2; 32];
        assert!(start_check(&other_root).is_err());
        assert!(start_check(&facts(3, 0, 3))
            .unwrap_err()
            .contains("no signed checkpoint"));
        let mut holed = facts(8, 8, 8);
        holed.entry_count = 7;
        assert!(start_check(&holed)
            .unwrap_err()
            .contains("7 entries up to seq 8"));
    }

    #[test]
    fn a_database_older_than_the_kept_checkpoint_is_a_rollback() {
        let mut f = facts(6, 6, 6);
        f.external = Some((
            PathBuf::from("/data/audit-checkpoint"),
            TreeHead {
                origin: "o".into(),
                size: 8,
                root: [3; 32],
            },
        ));
        let err = start_check(&f).unwrap_err();
        assert!(err.contains("rollback") && err.contains("size 8"), "{err}");
        assert!(err.contains("6 entries"), "{err}");

        let mut forked = facts(10, 10, 10);
        forked.external = f.external.clone();
        forked.extends_external = Some(false);
        assert!(start_check(&forked).unwrap_err().contains("fork"));
        forked.extends_external = Some(true);
        assert!(start_check(&forked).is_ok());
    }

    #[test]
    fn a_rebuild_keeps_the_root_at_its_target_size() {
        let leaves: Vec<Hash> = (0..5u8)
            .map(|i| crate::audit::merkle::leaf_hash(&[i]))
            .collect();
        let mut r = Rebuild::new(3);
        let mut f = Frontier::default();
        for (i, l) in leaves.iter().enumerate() {
            r.push(*l);
            f.push(*l);
            if i == 2 {
                assert_eq!(r.root_at_target(), Some(f.root()));
            }
        }
        assert_eq!((r.size(), r.root()), (5, f.root()));
    }
}

//! The single task that appends to the audit log. Requests hand it an entry draft and
//! the state changes it records; it assigns sequence numbers, chains MACs and writes
//! everything that queued up meanwhile in one transaction (group commit), so the
//! request path never pays a commit of its own. A reply is sent only after the
//! transaction is durable.

use super::canonical::{canonical_entry, EntryDraft, SealedEntry};
use super::chain::{KeyRing, GENESIS};
use super::checkpoint;
use super::integrity::{self, CheckpointFile};
use super::merkle::{self, Frontier};
use super::refusal::Refusal;
use crate::clock::Clock;
use crate::store::admission::{self, Admission, Verdict};
use crate::store::{
    BudgetGuard, CheckpointRow, CommitUnit, SequencedBatch, StateOp, Store, StoreError, TreeUpdate,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// A durable entry.
#[derive(Debug, Clone)]
pub struct Committed {
    pub seq: u64,
    pub entry: SealedEntry,
}

#[derive(Debug, thiserror::Error, Clone)]
pub enum CommitError {
    #[error("audit log unavailable: {0}")]
    Unavailable(String),
    #[error("audit entry rejected: {0}")]
    Invalid(String),
    /// The sequenced commit's admission rules refused it; nothing was written.
    #[error("{0}")]
    Refused(Refusal),
}

struct Submission {
    /// The entry's other fields; its body has moved to `body`.
    draft: EntryDraft,
    /// The body's canonical bytes, computed by the caller so the writer stays light.
    body: String,
    ops: Vec<StateOp>,
    guard: Option<BudgetGuard>,
    reply: oneshot::Sender<Result<Committed, CommitError>>,
}

/// Cheap to clone; every request holds one.
#[derive(Clone)]
pub struct BatcherHandle {
    tx: mpsc::Sender<Submission>,
    committed: broadcast::Sender<SealedEntry>,
    healthy: watch::Receiver<bool>,
    health_tx: Arc<watch::Sender<bool>>,
    head: Arc<AtomicU64>,
    stats: Arc<BatchStats>,
    close: Arc<watch::Sender<bool>>,
    /// Set for good when the batcher finds the shared log shorter than what it (or a
    /// signed checkpoint) already covers: health stays NOT_SERVING, nothing is sealed.
    poisoned: Arc<std::sync::atomic::AtomicBool>,
}

/// Counters for benchmarks and metrics.
#[derive(Debug, Default)]
pub struct BatchStats {
    pub batches: AtomicU64,
    pub entries: AtomicU64,
    /// Seq of the newest committed entry with a control change (trust, consent, halts,
    /// approvals, operators, principals, policy).
    pub control_seq: AtomicU64,
}

impl BatcherHandle {
    /// Appends one entry with its state changes and waits until both are durable.
    pub async fn append(
        &self,
        draft: EntryDraft,
        ops: Vec<StateOp>,
    ) -> Result<Committed, CommitError> {
        self.append_guarded(draft, ops, None).await
    }

    /// As `append`, for an entry whose new reservation a shared store must admit
    /// against the budget caps first (`CommitError::Refused` if it does not fit).
    pub async fn append_guarded(
        &self,
        draft: EntryDraft,
        ops: Vec<StateOp>,
        guard: Option<BudgetGuard>,
    ) -> Result<Committed, CommitError> {
        let mut draft = draft;
        // The body moves out (no copy); the writer reads only the draft's other fields.
        let body = std::mem::take(&mut draft.body)
            .into_canonical()
            .map_err(CommitError::Invalid)?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Submission {
                draft,
                body,
                ops,
                guard,
                reply,
            })
            .await
            .map_err(|_| CommitError::Unavailable("the audit writer has stopped".into()))?;
        rx.await
            .map_err(|_| CommitError::Unavailable("the audit writer has stopped".into()))?
    }

    /// Every entry committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SealedEntry> {
        self.committed.subscribe()
    }

    /// False after a failed commit, until health's write probe commits
    /// (`clear_failure`). A later batch that happens to commit does not clear it: on a
    /// full disk a small commit can fit where a larger one failed, and health would
    /// flap to SERVING between failures.
    pub fn healthy(&self) -> watch::Receiver<bool> {
        self.healthy.clone()
    }

    /// Clears a failed-commit state once a write commits again (`Store::probe_write`,
    /// run by the health monitor), so health can return to SERVING (and a load balancer
    /// send traffic) without a restart. Safe: the batcher settles a failed batch's fate
    /// before it seals again, and a commit on a stale head conflicts on `seq` and fails
    /// closed again.
    pub fn clear_failure(&self) {
        if self.poisoned.load(Ordering::Acquire) {
            return;
        }
        self.health_tx
            .send_if_modified(|h| !std::mem::replace(h, true));
    }

    /// Highest durable sequence number.
    /// Seq of the newest control change this server committed.
    pub fn control_seq(&self) -> u64 {
        self.stats.control_seq.load(Ordering::Acquire)
    }

    pub fn head_seq(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Stops taking entries: appends from now on fail with UNAVAILABLE, everything
    /// already queued is still committed, then the writer task ends (shutdown).
    pub fn close(&self) {
        self.close.send_replace(true);
    }

    /// Entries queued for the writer's next commit.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    pub fn stats(&self) -> &BatchStats {
        &self.stats
    }
}

/// Signs checkpoints: the Ed25519 key and the log's origin line.
#[derive(Clone)]
pub struct TreeSigner {
    pub origin: String,
    pub key: ed25519_dalek::SigningKey,
}

impl TreeSigner {
    fn checkpoint(&self, frontier: &Frontier, ts_ms: i64) -> CheckpointRow {
        let root = frontier.root();
        CheckpointRow {
            size: frontier.size,
            root_hex: hex::encode(root),
            note: checkpoint::sign(&self.origin, frontier.size, &root, &self.key),
            ts_ms,
        }
    }
}

/// Rebuilds the right edge of the stored tree, first adding leaves for entries written
/// before the tree existed (a log from an older release).
async fn catch_up_tree(
    store: &dyn Store,
    signer: &TreeSigner,
    head_seq: u64,
    now_ms: i64,
) -> Result<Frontier, StoreError> {
    let stored = store.tree_size().await?;
    let mut frontier = load_frontier(store, stored).await?;
    if stored < head_seq {
        let mut nodes = Vec::new();
        let mut next = stored + 1;
        while next <= head_seq {
            let page = store.audit_range(next, head_seq, 10_000).await?;
            let Some(last) = page.last() else { break };
            next = last.seq + 1;
            for e in &page {
                nodes.extend(frontier.push(merkle::leaf_hash(e.canonical.as_bytes())));
            }
        }
        let checkpoint = Some(signer.checkpoint(&frontier, now_ms));
        store.put_tree(&TreeUpdate { nodes, checkpoint }).await?;
        tracing::info!(
            leaves = frontier.size - stored,
            "built the Merkle tree for existing audit entries"
        );
    }
    Ok(frontier)
}

async fn load_frontier(store: &dyn Store, size: u64) -> Result<Frontier, StoreError> {
    let mut nodes = Vec::new();
    let mut start = 0u64;
    for level in (0..64u32).rev() {
        if size & (1u64 << level) != 0 {
            let index = start >> level;
            let hash = store.node(level, index).await?.ok_or_else(|| {
                StoreError::Corrupt(format!("merkle node {level}/{index} is missing"))
            })?;
            nodes.push(merkle::Node { level, index, hash });
            start += 1u64 << level;
        }
    }
    Ok(Frontier { size, nodes })
}

/// Admits the submissions of a batch in order under the sequencer lock
/// (`store::admission`); answers the refused ones and keeps the rest.
async fn admit(batch: &mut dyn SequencedBatch, queue: &mut Vec<Submission>) {
    let mut admission = Admission::default();
    // Every capped counter of the batch in one read (a database that does not answer
    // leaves them unread, and each guarded submission then says so itself).
    if let Err(e) = admission
        .read_budgets(batch, queue.iter().filter_map(|s| s.guard.as_ref()))
        .await
    {
        tracing::warn!(error = %e, "reading the batch's budget counters failed");
    }
    let mut kept = Vec::with_capacity(queue.len());
    for sub in queue.drain(..) {
        match admission.admit(batch, &sub.ops, sub.guard.as_ref()).await {
            Ok(()) => kept.push(sub),
            Err(Verdict::Refused(why)) => {
                let _ = sub.reply.send(Err(CommitError::Refused(why)));
            }
            Err(Verdict::Unavailable(e)) => {
                let _ = sub.reply.send(Err(CommitError::Unavailable(e.to_string())));
            }
        }
    }
    *queue = kept;
}

pub struct Batcher {
    mirror: Option<super::mirror::Mirror>,
    frontier: Frontier,
    signer: TreeSigner,
    store: Arc<dyn Store>,
    keys: KeyRing,
    head_seq: u64,
    head_mac: [u8; 32],
    max_batch: usize,
    /// The copy of the newest checkpoint outside the database, written off the commit path.
    kept: Option<KeptCheckpoint>,
    poisoned: Arc<std::sync::atomic::AtomicBool>,
    metrics: crate::metrics::AuditMetrics,
    /// The server's clock, for the checkpoints signed outside a batch (the catch-up
    /// at start and the last one at shutdown); a batch's checkpoint takes the time of
    /// its newest entry, which came from the same clock.
    clock: Arc<dyn Clock>,
    /// A single writer's batch whose commit failed and whose fate is not yet read back
    /// from the database; nothing is sealed until it is (`settle`).
    unsure: Option<FailedBatch>,
}

/// What the log would look like had a failed batch landed.
struct FailedBatch {
    seq: u64,
    mac: [u8; 32],
    frontier: Frontier,
    entries: Vec<SealedEntry>,
    note: Option<String>,
}

/// What the writer task hands its results to.
struct Outputs {
    committed: broadcast::Sender<SealedEntry>,
    health: Arc<watch::Sender<bool>>,
    head: Arc<AtomicU64>,
    stats: Arc<BatchStats>,
}

/// A batch with its sequence numbers, MACs and tree nodes, not yet committed.
struct Sealed {
    units: Vec<CommitUnit>,
    replies: Vec<oneshot::Sender<Result<Committed, CommitError>>>,
    /// The head (seq and MAC) and the tree once it lands.
    seq: u64,
    mac: [u8; 32],
    frontier: Frontier,
    tree: TreeUpdate,
    /// Its signed checkpoint's note, for the copy kept outside the database.
    note: Option<String>,
    /// The shared store's transaction holding the sequencer lock, if any.
    sequenced: Option<Box<dyn SequencedBatch>>,
}

impl Sealed {
    /// Answers every submission UNAVAILABLE without writing anything.
    fn fail(self, why: &str) {
        for reply in self.replies {
            let _ = reply.send(Err(CommitError::Unavailable(why.to_owned())));
        }
    }
}

/// What a commit task returns: the batch's units, the outcome and how long it took.
type CommitOutput = (Vec<CommitUnit>, Result<(), StoreError>, std::time::Duration);

/// A sealed batch being committed on a task of its own; its units are with the task.
struct InFlight {
    sealed: Sealed,
    task: tokio::task::JoinHandle<CommitOutput>,
}

/// A returned commit: the batch, its units, the outcome and how long it took.
type Done = (
    Sealed,
    Vec<CommitUnit>,
    Result<(), StoreError>,
    std::time::Duration,
);

impl InFlight {
    async fn await_done(self) -> Done {
        let InFlight { sealed, task } = self;
        join(sealed, task.await)
    }
}

/// A commit task that panicked wrote nothing it can vouch for: failed, to be settled.
fn join(sealed: Sealed, joined: Result<CommitOutput, tokio::task::JoinError>) -> Done {
    match joined {
        Ok((units, outcome, took)) => (sealed, units, outcome, took),
        Err(e) => (
            sealed,
            Vec::new(),
            Err(StoreError::Unavailable(Box::new(e))),
            std::time::Duration::ZERO,
        ),
    }
}

/// What woke the writer.
enum Event {
    Received(usize),
    Closing,
    Landed(Box<Done>),
}

/// Waits for the batch in flight to return (the caller checks there is one).
async fn wait(in_flight: &mut Option<InFlight>) -> Done {
    let f = in_flight
        .as_mut()
        .expect("polled only with a batch in flight");
    let joined = (&mut f.task).await;
    let f = in_flight.take().expect("still there");
    join(f.sealed, joined)
}

/// Answers a whole queue UNAVAILABLE and reports NOT_SERVING.
fn fail_all(queue: &mut Vec<Submission>, health: &watch::Sender<bool>, why: &str) {
    health.send_if_modified(|h| std::mem::replace(h, false));
    for sub in queue.drain(..) {
        let _ = sub
            .reply
            .send(Err(CommitError::Unavailable(why.to_owned())));
    }
}

/// How the batcher runs, besides its store and keys.
pub struct BatcherOptions<'a> {
    /// Most entries per group commit.
    pub max_batch: usize,
    /// The JSONL mirror file, if any.
    pub mirror: Option<&'a std::path::Path>,
    /// Where the newest signed checkpoint is kept outside the database, if anywhere.
    pub checkpoint_file: Option<CheckpointFile>,
}

/// The kept checkpoint's writer: a task that replaces the file with the newest note it
/// was handed, so the batcher only hands it over (a channel send) and never waits for
/// the file system. Notes handed over while it writes, or during the pause after a
/// write, are coalesced into one write of the newest.
struct KeptCheckpoint {
    file: CheckpointFile,
    newest: Option<watch::Sender<String>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Shortest time between two writes of the kept checkpoint.
const KEPT_CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

impl KeptCheckpoint {
    fn start(file: CheckpointFile) -> Self {
        let (tx, mut rx) = watch::channel(String::new());
        let writer = file.clone();
        let task = tokio::spawn(async move {
            let mut failing = false;
            while rx.changed().await.is_ok() {
                let note = rx.borrow_and_update().clone();
                let w = writer.clone();
                let done = tokio::task::spawn_blocking(move || w.write(&note, false)).await;
                match done {
                    Ok(Ok(())) => failing = false,
                    Ok(Err(e)) if !failing => {
                        failing = true;
                        tracing::error!(error = %e, path = %writer.path.display(), "cannot keep the newest checkpoint outside the database; a rolled-back database would not be caught at start");
                    }
                    _ => {}
                }
                // A replace costs about 1–2 ms on ext4 (rename over a file flushes its
                // data), so under load the file is rewritten at most every
                // KEPT_CHECKPOINT_INTERVAL. It may lag the database by that much, never
                // lead it, so a crash never makes the next start refuse; a rollback to
                // a copy older than the lag is still caught.
                tokio::time::sleep(KEPT_CHECKPOINT_INTERVAL).await;
            }
        });
        Self {
            file,
            newest: Some(tx),
            task: Some(task),
        }
    }

    fn hand_over(&self, note: &str) {
        if let Some(tx) = &self.newest {
            tx.send_replace(note.to_owned());
        }
    }

    /// Stops the writer, then writes `note` and forces it to disk (shutdown).
    async fn finish(&mut self, note: Option<String>) {
        self.newest = None;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(note) = note {
            let file = self.file.clone();
            match tokio::task::spawn_blocking(move || file.write(&note, true)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, path = %self.file.path.display(), "cannot write the kept checkpoint at shutdown")
                }
                Err(e) => tracing::error!(error = %e, "the kept checkpoint writer panicked"),
            }
        }
    }
}

/// Refuses to start on a log that is not whole: the entries' head, the stored tree and
/// the newest signed checkpoint must agree, and the database must not be older than the
/// checkpoint kept outside it. Cheap (a few rows and O(log n) nodes); the full rebuild
/// from entries is `arbiter audit verify`.
async fn check_whole(
    store: &dyn Store,
    head_seq: u64,
    file: Option<&CheckpointFile>,
) -> Result<(), StoreError> {
    let external = match file {
        Some(f) => f.read()?.map(|h| (f.path.clone(), h)),
        None => None,
    };
    let checkpoint = match store.checkpoint(None).await? {
        Some(c) => Some((c.size, integrity::root_of(&c)?)),
        None => None,
    };
    let tree_size = store.tree_size().await?;
    let tree_root = match load_frontier(store, tree_size).await {
        Ok(f) => f.root(),
        // A missing node is reported as a tree that does not fold to the checkpoint.
        Err(StoreError::Corrupt(_)) => merkle::empty_root(),
        Err(e) => return Err(e),
    };
    let extends_external =
        match (&external, checkpoint) {
            (Some((_, ext)), Some((size, root))) if ext.size <= size && ext.size > 0 => {
                let proof = integrity::stored_proof(store, |node| {
                    merkle::consistency_proof(ext.size, size, node)
                })
                .await?;
                Some(proof.is_some_and(|p| {
                    merkle::verify_consistency(ext.size, size, &ext.root, &root, &p)
                }))
            }
            _ => None,
        };
    let facts = integrity::StartFacts {
        head_seq,
        entry_count: store.audit_count().await?,
        checkpoint,
        tree_size,
        tree_root,
        external,
        extends_external,
    };
    integrity::start_check(&facts).map_err(StoreError::Corrupt)
}

fn decode_mac(hex_mac: &str) -> Result<[u8; 32], StoreError> {
    hex::decode(hex_mac)
        .ok()
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or_else(|| {
            StoreError::Corrupt(format!("stored MAC {hex_mac:?} is not 32 bytes of hex"))
        })
}

async fn read_head(store: &dyn Store) -> Result<(u64, [u8; 32]), StoreError> {
    match store.audit_head().await? {
        Some((seq, mac)) => Ok((seq, decode_mac(&mac)?)),
        None => Ok((0, *GENESIS)),
    }
}

impl Batcher {
    /// Reads the chain head, refuses a log that is not whole (`integrity::start_check`)
    /// and starts the writer task. The task ends when every handle is dropped and the
    /// queue is drained; the returned join handle reports that.
    pub async fn start(
        store: Arc<dyn Store>,
        keys: KeyRing,
        signer: TreeSigner,
        options: BatcherOptions<'_>,
        metrics: crate::metrics::AuditMetrics,
        clock: Arc<dyn Clock>,
    ) -> Result<(BatcherHandle, tokio::task::JoinHandle<()>), StoreError> {
        let (head_seq, head_mac) = read_head(store.as_ref()).await?;
        check_whole(store.as_ref(), head_seq, options.checkpoint_file.as_ref()).await?;
        let mirror = match options.mirror {
            Some(p) => Some(super::mirror::Mirror::open(p, store.as_ref(), head_seq).await?),
            None => None,
        };
        let frontier = catch_up_tree(store.as_ref(), &signer, head_seq, clock.now_ms()).await?;
        let (tx, rx) = mpsc::channel(options.max_batch * 4);
        let (committed, _) = broadcast::channel(4096);
        let (health_tx, healthy) = watch::channel(true);
        let health_tx = Arc::new(health_tx);
        let head = Arc::new(AtomicU64::new(head_seq));
        let stats = Arc::new(BatchStats::default());
        let (close, closing) = watch::channel(false);
        let poisoned = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handle = BatcherHandle {
            tx,
            committed: committed.clone(),
            healthy,
            health_tx: health_tx.clone(),
            head: head.clone(),
            stats: stats.clone(),
            close: Arc::new(close),
            poisoned: poisoned.clone(),
        };
        let kept = options.checkpoint_file.map(KeptCheckpoint::start);
        let batcher = Batcher {
            store,
            keys,
            head_seq,
            head_mac,
            max_batch: options.max_batch,
            frontier,
            signer,
            mirror,
            kept,
            poisoned,
            metrics,
            clock,
            unsure: None,
        };
        let out = Outputs {
            committed,
            health: health_tx,
            head,
            stats,
        };
        let task = tokio::spawn(batcher.run(rx, closing, out));
        Ok((handle, task))
    }

    /// Fails every batch from now on and keeps health NOT_SERVING: the log went
    /// backwards under this server, so sealing would reuse covered sequence numbers.
    fn poison(&self, why: &str) -> StoreError {
        self.poisoned.store(true, Ordering::Release);
        tracing::error!(error = %why, "audit log integrity fault; this server stops writing and reports NOT_SERVING");
        StoreError::Corrupt(why.to_owned())
    }

    /// Takes the sequencer lock of a shared store and moves the head (and the tree
    /// frontier) to what is committed now; `None` for a single-writer store.
    async fn sequence(&mut self) -> Result<Option<Box<dyn SequencedBatch>>, StoreError> {
        let Some(replicated) = self.store.replicated() else {
            return Ok(None);
        };
        let mut batch = replicated.begin_sequenced().await?;
        let (seq, mac) = match batch.head().await? {
            Some((seq, mac)) => (seq, decode_mac(&mac)?),
            None => (0, *GENESIS),
        };
        if seq < self.head_seq {
            return Err(self.poison(&format!(
                "the shared audit log went back from seq {} to seq {seq} (truncated or \
                 rolled back); sealing now would reuse sequence numbers a signed checkpoint \
                 covers. Restore the database from a backup and run `arbiter audit verify`",
                self.head_seq
            )));
        }
        if seq != self.head_seq || mac != self.head_mac {
            // Another server committed since our last batch. Its batch signed a
            // checkpoint in the same transaction, so the newest one must be exactly its
            // head; its leaves are in the stored tree, so rebuild the frontier.
            let signed = self.store.checkpoint(None).await?.map_or(0, |c| c.size);
            if signed != seq || (seq == self.head_seq && mac != self.head_mac) {
                return Err(self.poison(&format!(
                    "the shared audit log's head is seq {seq} but its newest signed \
                     checkpoint has size {signed} (was seq {} here); the log was changed \
                     outside the servers. Restore the database from a backup and run \
                     `arbiter audit verify`",
                    self.head_seq
                )));
            }
            self.frontier = load_frontier(self.store.as_ref(), seq).await?;
            self.head_seq = seq;
            self.head_mac = mac;
        }
        Ok(Some(batch))
    }

    /// Reads back the head after a failed single-writer commit. The head must be where
    /// the batch started (rolled back: memory is already right) or where it would have
    /// ended (it landed although the commit reported an error: adopt it). Anything else
    /// means the log changed outside this writer, which poisons it. False while the head
    /// cannot be read, so the caller seals nothing on a guess.
    async fn settle(&mut self, out: &Outputs) -> bool {
        let Some(failed) = self.unsure.take() else {
            return true;
        };
        let (seq, mac) = match read_head(self.store.as_ref()).await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the audit head after a failed commit; sealing nothing until it can");
                self.unsure = Some(failed);
                return false;
            }
        };
        if (seq, mac) == (self.head_seq, self.head_mac) {
            tracing::debug!(
                head_seq = seq,
                "the failed audit batch was rolled back; the log is unchanged"
            );
            return true;
        }
        if (seq, mac) != (failed.seq, failed.mac) {
            let _ = self.poison(&format!(
                "after a failed commit the audit head is seq {seq}, neither seq {} (before the \
                 batch) nor seq {} (after it); the log changed outside this server",
                self.head_seq, failed.seq
            ));
            return false;
        }
        // Its callers were told UNAVAILABLE and the engine took its state changes back
        // from memory, but the database holds them; a restart reloads them.
        tracing::error!(head_seq = seq, "an audit batch whose commit reported an error is in the database; its state changes are reloaded at the next restart");
        self.frontier = failed.frontier;
        self.head_seq = seq;
        self.head_mac = mac;
        out.head.store(seq, Ordering::Release);
        self.publish(&failed.entries, failed.note.as_deref(), &out.committed);
        true
    }

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Submission>,
        mut closing: watch::Receiver<bool>,
        out: Outputs,
    ) {
        let mut queue = Vec::with_capacity(self.max_batch);
        let mut closed = false;
        // The batch being committed, if any. A single writer seals the next batch on
        // top of it meanwhile (both cores work: one seals, one commits); a shared store
        // re-reads the head under its sequencer lock, so it waits for each commit.
        let mut in_flight: Option<InFlight> = None;
        let pipelined = self.store.replicated().is_none();
        loop {
            let event = tokio::select! {
                biased;
                n = rx.recv_many(&mut queue, self.max_batch) => Event::Received(n),
                _ = closing.wait_for(|c| *c), if !closed => Event::Closing,
                // Nothing new while a batch commits: answer it as soon as it lands.
                done = wait(&mut in_flight), if in_flight.is_some() => Event::Landed(Box::new(done)),
            };
            let received = match event {
                Event::Received(n) => n,
                Event::Closing => {
                    // Refuse new entries but keep draining: whatever was queued before
                    // the close is committed like any other batch.
                    rx.close();
                    closed = true;
                    continue;
                }
                Event::Landed(done) => {
                    self.complete(*done, &out).await;
                    continue;
                }
            };
            if received == 0 {
                break;
            }
            let base = in_flight
                .as_ref()
                .map(|f| (f.sealed.seq, f.sealed.mac, f.sealed.frontier.clone()));
            let sealed = match self.prepare(&mut queue, base, &out).await {
                Some(s) => s,
                None => continue,
            };
            if let Some(f) = in_flight.take() {
                let landed = self.complete(f.await_done().await, &out).await;
                if !landed {
                    // It was sealed on top of the batch that just failed: its sequence
                    // numbers and MACs continue a log that does not exist.
                    sealed.fail("the audit batch before this one failed to commit");
                    continue;
                }
            }
            let started = self.start_commit(sealed);
            if pipelined {
                in_flight = Some(started);
            } else {
                // Wait here rather than in the select: what queues up meanwhile is all
                // taken into the next batch, as large as the commit let it grow.
                self.complete(started.await_done().await, &out).await;
            }
        }
        if let Some(f) = in_flight.take() {
            self.complete(f.await_done().await, &out).await;
        }
        self.finish().await;
    }

    /// Checks that sealing may go on (integrity, a settled failure, the sequencer of a
    /// shared store, admission) and seals the queue; `None` when every submission was
    /// answered already.
    async fn prepare(
        &mut self,
        queue: &mut Vec<Submission>,
        in_flight: Option<(u64, [u8; 32], Frontier)>,
        out: &Outputs,
    ) -> Option<Sealed> {
        if self.poisoned.load(Ordering::Acquire) {
            fail_all(
                queue,
                &out.health,
                "the audit log failed its integrity check; see the server log",
            );
            return None;
        }
        if self.unsure.is_some() && !self.settle(out).await {
            fail_all(
                queue,
                &out.health,
                "cannot read the audit head after a failed commit",
            );
            return None;
        }
        // Shared store (PostgreSQL): take the sequencer lock and seal after whatever
        // another server committed. Single writer (SQLite): `None`, nothing changes.
        let mut sequenced = match self.sequence().await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, entries = queue.len(), "cannot take the audit sequencer; failing the batch closed");
                fail_all(queue, &out.health, &e.to_string());
                return None;
            }
        };
        if in_flight.is_none() {
            out.head.store(self.head_seq, Ordering::Release);
        }
        if let Some(batch) = sequenced.as_mut() {
            if queue
                .iter()
                .any(|s| admission::needed(&s.ops, s.guard.as_ref()))
            {
                admit(batch.as_mut(), queue).await;
            }
        }
        let mut sealed = match &in_flight {
            Some((seq, mac, frontier)) => self.seal(queue, (*seq, *mac, frontier))?,
            None => self.seal(queue, (self.head_seq, self.head_mac, &self.frontier))?,
        };
        sealed.sequenced = sequenced;
        Some(sealed)
    }

    /// Gives the queue sequence numbers, MACs and tree nodes after `base` (the head
    /// and frontier the batch extends), and signs the checkpoint of the result.
    fn seal(
        &self,
        queue: &mut Vec<Submission>,
        base: (u64, [u8; 32], &Frontier),
    ) -> Option<Sealed> {
        let (mut seq, mut prev, frontier) = base;
        let mut units = Vec::with_capacity(queue.len());
        let mut replies = Vec::with_capacity(queue.len());
        for sub in queue.drain(..) {
            let key = self.keys.active();
            seq += 1;
            let canonical = canonical_entry(&sub.draft, &sub.body, seq, &key.id);
            let mac = key.mac(&prev, canonical.as_bytes());
            prev = mac;
            let d = sub.draft;
            units.push(CommitUnit {
                entry: SealedEntry {
                    seq,
                    ts_ms: d.ts_ms,
                    kind: d.kind,
                    agent_id: d.agent_id,
                    session_id: d.session_id,
                    outcome: d.outcome,
                    key_id: key.id.clone(),
                    canonical,
                    mac: hex::encode(mac),
                },
                ops: sub.ops,
            });
            replies.push(sub.reply);
        }
        if units.is_empty() {
            return None;
        }
        // Extend the tree on a copy: it becomes the tree only if the batch commits.
        let mut frontier = frontier.clone();
        let mut nodes = Vec::with_capacity(units.len() * 2);
        for u in &units {
            nodes.extend(frontier.push(merkle::leaf_hash(u.entry.canonical.as_bytes())));
        }
        let checkpoint = Some(
            self.signer
                .checkpoint(&frontier, units.last().map_or(0, |u| u.entry.ts_ms)),
        );
        let note = checkpoint.as_ref().map(|c| c.note.clone());
        Some(Sealed {
            units,
            replies,
            seq,
            mac: prev,
            frontier,
            tree: TreeUpdate { nodes, checkpoint },
            note,
            sequenced: None,
        })
    }

    /// Commits a sealed batch on a task of its own, so the writer can seal the next.
    fn start_commit(&self, mut sealed: Sealed) -> InFlight {
        let store = self.store.clone();
        let sequenced = sealed.sequenced.take();
        let units = std::mem::take(&mut sealed.units);
        let tree = std::mem::take(&mut sealed.tree);
        let task = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let outcome = match sequenced {
                Some(batch) => batch.commit(&units, &tree).await,
                None => store.commit(&units, &tree).await,
            };
            (units, outcome, started.elapsed())
        });
        InFlight { sealed, task }
    }

    /// Answers a batch whose commit returned: on success moves the head, the tree and
    /// every copy of the log forward and replies; on failure fails it closed and, for a
    /// single writer, settles whether it landed. True if it committed.
    async fn complete(&mut self, done: Done, out: &Outputs) -> bool {
        let (sealed, units, outcome, took) = done;
        self.metrics.commit_seconds.observe(took.as_secs_f64());
        self.metrics.batch_entries.observe(units.len() as f64);
        tracing::debug!(
            entries = units.len(),
            commit_us = took.as_micros() as u64,
            "audit batch committed"
        );
        let Sealed {
            replies,
            seq,
            mac,
            frontier,
            note,
            ..
        } = sealed;
        if let Err(e) = outcome {
            tracing::error!(error = %e, entries = units.len(), head_seq = self.head_seq, "audit commit failed; failing the batch closed (the log stays at head_seq)");
            self.metrics.commit_failures.inc();
            out.health.send_if_modified(|h| std::mem::replace(h, false));
            let msg = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(CommitError::Unavailable(msg.clone())));
            }
            // Memory is still as before the batch (its seq, MAC and tree were copies).
            // A shared store re-reads the head under the sequencer lock before the next
            // batch anyway; a single writer settles now whether the failed transaction
            // landed, before it seals again.
            if self.store.replicated().is_none() {
                self.unsure = Some(FailedBatch {
                    seq,
                    mac,
                    frontier,
                    entries: units.into_iter().map(|u| u.entry).collect(),
                    note,
                });
                self.settle(out).await;
            }
            return false;
        }
        self.frontier = frontier;
        self.head_seq = seq;
        self.head_mac = mac;
        out.head.store(seq, Ordering::Release);
        if let Some(u) = units
            .iter()
            .rev()
            .find(|u| u.ops.iter().any(crate::store::is_control_op))
        {
            out.stats
                .control_seq
                .fetch_max(u.entry.seq, Ordering::AcqRel);
        }
        out.stats.batches.fetch_add(1, Ordering::Relaxed);
        out.stats
            .entries
            .fetch_add(units.len() as u64, Ordering::Relaxed);
        let entries: Vec<SealedEntry> = units.into_iter().map(|u| u.entry).collect();
        self.publish(&entries, note.as_deref(), &out.committed);
        for (entry, reply) in entries.into_iter().zip(replies) {
            let _ = reply.send(Ok(Committed {
                seq: entry.seq,
                entry,
            }));
        }
        true
    }

    /// Hands durable entries to the copies of the log: the kept checkpoint, the JSONL
    /// mirror and the subscribers.
    fn publish(
        &mut self,
        entries: &[SealedEntry],
        note: Option<&str>,
        committed: &broadcast::Sender<SealedEntry>,
    ) {
        if let (Some(kept), Some(note)) = (&self.kept, note) {
            kept.hand_over(note);
        }
        if let Some(m) = self.mirror.as_mut() {
            if let Err(e) = m.append(entries) {
                // The database holds the entries; the mirror is a copy. Stop mirroring
                // rather than leave a gap in the file.
                tracing::error!(error = %e, path = %m.path().display(), "audit mirror write failed; mirroring stopped");
                self.mirror = None;
            }
        }
        for entry in entries {
            let _ = committed.send(entry.clone());
        }
    }

    /// Last steps once the queue is closed and empty: make sure the newest signed
    /// checkpoint covers every committed entry (each batch signs one in its own
    /// transaction, so this only writes after an unusual history) and force the
    /// mirror to disk.
    async fn finish(&mut self) {
        let newest = match self.store.checkpoint(None).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, head_seq = self.head_seq, "audit writer stopped without reading its last checkpoint; `arbiter audit verify` checks the log at the next start");
                return;
            }
        };
        let mut covered = newest.as_ref().map_or(0, |c| c.size);
        let mut note = newest.map(|c| c.note);
        let poisoned = self.poisoned.load(Ordering::Acquire);
        if poisoned || self.unsure.is_some() {
            // Never copy a damaged (or unsettled) log's checkpoint over the good one
            // kept outside it.
            note = None;
        } else if covered != self.head_seq && self.frontier.size == self.head_seq {
            let checkpoint = Some(self.signer.checkpoint(&self.frontier, self.clock.now_ms()));
            let tree = TreeUpdate {
                nodes: Vec::new(),
                checkpoint,
            };
            match self.store.put_tree(&tree).await {
                Ok(()) => {
                    covered = self.head_seq;
                    note = tree.checkpoint.map(|c| c.note);
                }
                Err(e) => tracing::error!(error = %e, "cannot sign the final checkpoint"),
            }
        }
        if let Some(kept) = self.kept.as_mut() {
            kept.finish(note).await;
        }
        if let Some(m) = self.mirror.as_mut() {
            if let Err(e) = m.sync() {
                tracing::error!(error = %e, path = %m.path().display(), "cannot sync the audit mirror");
            }
        }
        // Said from what the database holds: its newest checkpoint's size against the head.
        let stored_head = read_head(self.store.as_ref()).await.ok().map(|(s, _)| s);
        if !poisoned && covered == self.head_seq && stored_head == Some(self.head_seq) {
            tracing::info!(
                head_seq = self.head_seq,
                checkpoint_size = covered,
                "audit writer stopped: every committed entry is in the last signed checkpoint"
            );
        } else {
            tracing::error!(
                head_seq = self.head_seq,
                stored_head_seq = ?stored_head,
                checkpoint_size = covered,
                poisoned,
                "audit writer stopped, but the last signed checkpoint does not cover the log's head; the next start checks the log"
            );
        }
    }
}

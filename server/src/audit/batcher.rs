//! The single task that appends to the audit log. Requests hand it an entry draft and
//! the state changes it records; it assigns sequence numbers, chains MACs and writes
//! everything that queued up meanwhile in one transaction (group commit), so the
//! request path never pays a commit of its own. A reply is sent only after the
//! transaction is durable.

use super::canonical::{canonical_entry, canonical_string, EntryDraft, SealedEntry};
use super::chain::{KeyRing, GENESIS};
use crate::store::{CommitUnit, StateOp, Store, StoreError};
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
}

struct Submission {
    draft: EntryDraft,
    /// The body's canonical bytes, computed by the caller so the writer stays light.
    body: String,
    ops: Vec<StateOp>,
    reply: oneshot::Sender<Result<Committed, CommitError>>,
}

/// Cheap to clone; every request holds one.
#[derive(Clone)]
pub struct BatcherHandle {
    tx: mpsc::Sender<Submission>,
    committed: broadcast::Sender<SealedEntry>,
    healthy: watch::Receiver<bool>,
    head: Arc<AtomicU64>,
    stats: Arc<BatchStats>,
}

/// Counters for benchmarks and metrics.
#[derive(Debug, Default)]
pub struct BatchStats {
    pub batches: AtomicU64,
    pub entries: AtomicU64,
}

impl BatcherHandle {
    /// Appends one entry with its state changes and waits until both are durable.
    pub async fn append(
        &self,
        draft: EntryDraft,
        ops: Vec<StateOp>,
    ) -> Result<Committed, CommitError> {
        let body = canonical_string(&draft.body).map_err(CommitError::Invalid)?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Submission {
                draft,
                body,
                ops,
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

    /// False after a failed commit, until a later one succeeds.
    pub fn healthy(&self) -> watch::Receiver<bool> {
        self.healthy.clone()
    }

    /// Highest durable sequence number.
    pub fn head_seq(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> &BatchStats {
        &self.stats
    }
}

pub struct Batcher {
    store: Arc<dyn Store>,
    keys: KeyRing,
    head_seq: u64,
    head_mac: [u8; 32],
    max_batch: usize,
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
    /// Reads the chain head and starts the writer task. The task ends when every handle
    /// is dropped and the queue is drained; the returned join handle reports that.
    pub async fn start(
        store: Arc<dyn Store>,
        keys: KeyRing,
        max_batch: usize,
    ) -> Result<(BatcherHandle, tokio::task::JoinHandle<()>), StoreError> {
        let (head_seq, head_mac) = read_head(store.as_ref()).await?;
        let (tx, rx) = mpsc::channel(max_batch * 4);
        let (committed, _) = broadcast::channel(4096);
        let (health_tx, healthy) = watch::channel(true);
        let head = Arc::new(AtomicU64::new(head_seq));
        let stats = Arc::new(BatchStats::default());
        let handle = BatcherHandle {
            tx,
            committed: committed.clone(),
            healthy,
            head: head.clone(),
            stats: stats.clone(),
        };
        let batcher = Batcher {
            store,
            keys,
            head_seq,
            head_mac,
            max_batch,
        };
        let task = tokio::spawn(batcher.run(rx, committed, health_tx, head, stats));
        Ok((handle, task))
    }

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Submission>,
        committed: broadcast::Sender<SealedEntry>,
        health: watch::Sender<bool>,
        head: Arc<AtomicU64>,
        stats: Arc<BatchStats>,
    ) {
        let mut queue = Vec::with_capacity(self.max_batch);
        while rx.recv_many(&mut queue, self.max_batch).await > 0 {
            let mut units = Vec::with_capacity(queue.len());
            let mut replies = Vec::with_capacity(queue.len());
            let (mut seq, mut prev) = (self.head_seq, self.head_mac);
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
                continue;
            }
            let started = std::time::Instant::now();
            let outcome = self.store.commit(&units).await;
            tracing::debug!(
                entries = units.len(),
                commit_us = started.elapsed().as_micros() as u64,
                "audit batch committed"
            );
            match outcome {
                Ok(()) => {
                    self.head_seq = seq;
                    self.head_mac = prev;
                    head.store(seq, Ordering::Release);
                    stats.batches.fetch_add(1, Ordering::Relaxed);
                    stats
                        .entries
                        .fetch_add(units.len() as u64, Ordering::Relaxed);
                    health.send_if_modified(|h| !std::mem::replace(h, true));
                    for (unit, reply) in units.into_iter().zip(replies) {
                        let _ = committed.send(unit.entry.clone());
                        let _ = reply.send(Ok(Committed {
                            seq: unit.entry.seq,
                            entry: unit.entry,
                        }));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, entries = units.len(), "audit commit failed; failing the batch closed");
                    health.send_if_modified(|h| std::mem::replace(h, false));
                    let msg = e.to_string();
                    for reply in replies {
                        let _ = reply.send(Err(CommitError::Unavailable(msg.clone())));
                    }
                    // Whether the failed transaction landed is unknown; re-read the head.
                    match read_head(self.store.as_ref()).await {
                        Ok((s, m)) => {
                            self.head_seq = s;
                            self.head_mac = m;
                            head.store(s, Ordering::Release);
                        }
                        Err(e) => tracing::error!(error = %e, "cannot re-read the audit head"),
                    }
                }
            }
        }
    }
}

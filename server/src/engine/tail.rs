//! Following the audit log (TailAudit): the one log every server writes to, in
//! sequence order and gapless, whichever server committed an entry.
//!
//! The store is the source; the rest only says when to read it. The local batcher's
//! broadcast hands over this server's entries (delivered straight away when the next
//! one is exactly the entry after the last examined, which on one server is always),
//! and on a shared store `watch_log_head` polls the shared head while anyone follows,
//! so entries other replicas commit are read from the store within `HEAD_POLL`. A
//! follower never skips: falling behind the broadcast, or seeing an entry that is not
//! the next one, only sends it back to the store.

use super::Engine;
use crate::audit::SealedEntry;
use crate::store::{AuditQuery, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

/// How often the shared head is read while a follower is open (shared store only).
/// Well inside the propagation bound of one second.
pub const HEAD_POLL: Duration = Duration::from_millis(100);

/// Entries read from the store at a time.
const PAGE: u32 = 1000;

type Sink = mpsc::Sender<Result<SealedEntry, StoreError>>;

impl Engine {
    /// Every entry matching `q` with a seq above `after` (None: from the current head
    /// on), backlog first and then as they commit on any server, in sequence order. The
    /// follower stops when the receiver is dropped; a store error is its last item.
    pub async fn follow_log(
        &self,
        q: AuditQuery,
        after: Option<u64>,
    ) -> Result<mpsc::Receiver<Result<SealedEntry, StoreError>>, StoreError> {
        self.follow_log_counted(q, after, None).await
    }

    /// `follow_log`, counting in `lags` each time the follower fell behind the
    /// broadcast and went back to the store (nothing is lost; the count says how often
    /// the fast path was missed).
    pub async fn follow_log_counted(
        &self,
        q: AuditQuery,
        after: Option<u64>,
        lags: Option<prometheus::IntCounter>,
    ) -> Result<mpsc::Receiver<Result<SealedEntry, StoreError>>, StoreError> {
        // Subscribe before reading the head, so nothing committed in between is missed.
        let live = self.batcher.subscribe();
        let shared = self.store.replicated().map(|_| self.log_head.subscribe());
        let head = self.store.audit_head().await?.map_or(0, |(seq, _)| seq);
        let head = head.max(self.batcher.head_seq());
        let cursor = after.unwrap_or(head);
        let (tx, rx) = mpsc::channel(256);
        let follower = Follower {
            store: self.store.clone(),
            q,
            cursor,
            known: head.max(cursor),
            lags,
        };
        tokio::spawn(follower.run(live, shared, tx));
        Ok(rx)
    }

    /// Keeps `log_head` at the shared store's head while anyone follows the log
    /// (started by `startup` on a shared store; one cheap read per `HEAD_POLL`).
    pub async fn watch_log_head(&self) {
        let mut tick = tokio::time::interval(HEAD_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.log_head.receiver_count() == 0 {
                continue;
            }
            match self.store.audit_head().await {
                Ok(Some((seq, _))) => {
                    self.log_head.send_if_modified(|h| {
                        let newer = seq > *h;
                        *h = (*h).max(seq);
                        newer
                    });
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "cannot read the shared audit head"),
            }
        }
    }
}

struct Follower {
    store: Arc<dyn Store>,
    q: AuditQuery,
    /// Every entry with a seq up to here has been examined (sent if it matched).
    cursor: u64,
    /// The highest seq known to be committed.
    known: u64,
    lags: Option<prometheus::IntCounter>,
}

impl Follower {
    async fn run(
        mut self,
        mut live: broadcast::Receiver<SealedEntry>,
        mut shared: Option<watch::Receiver<u64>>,
        tx: Sink,
    ) {
        loop {
            if self.known > self.cursor {
                if let Err(e) = self.catch_up(&tx).await {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                if tx.is_closed() {
                    return;
                }
            }
            tokio::select! {
                () = tx.closed() => return,
                r = live.recv() => match r {
                    Ok(e) => {
                        self.known = self.known.max(e.seq);
                        if e.seq == self.cursor + 1 {
                            // The very next entry: no need to read it back.
                            self.cursor = e.seq;
                            if self.q.matches(&e) && tx.send(Ok(e)).await.is_err() {
                                return;
                            }
                        }
                    }
                    // Fell behind the broadcast: the store has every entry it dropped.
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::info!(missed, "a log follower fell behind the broadcast; reading the store");
                        if let Some(lags) = &self.lags {
                            lags.inc();
                        }
                        match self.store.audit_head().await {
                            Ok(head) => {
                                self.known = self.known.max(head.map_or(0, |(seq, _)| seq));
                            }
                            Err(e) => {
                                let _ = tx.send(Err(e)).await;
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                r = changed(&mut shared) => match r {
                    Some(head) => self.known = self.known.max(head),
                    None => shared = None,
                },
            }
        }
    }

    /// Sends every matching entry after `cursor` from the store. The shared log commits
    /// in sequence order (one sequencer), so once an entry is visible so is every entry
    /// before it: a short page means every entry up to `known` has been examined.
    async fn catch_up(&mut self, tx: &Sink) -> Result<(), StoreError> {
        loop {
            let page = self.store.query_audit(&self.q, self.cursor, PAGE).await?;
            let full = page.len() == PAGE as usize;
            for e in page {
                self.cursor = e.seq;
                self.known = self.known.max(e.seq);
                if tx.send(Ok(e)).await.is_err() {
                    return Ok(());
                }
            }
            if !full {
                self.cursor = self.cursor.max(self.known);
                return Ok(());
            }
        }
    }
}

/// The next value of the shared head, or None once its sender is gone.
async fn changed(shared: &mut Option<watch::Receiver<u64>>) -> Option<u64> {
    match shared {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(*rx.borrow_and_update()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CommitUnit, SqliteStore, TreeUpdate};

    fn entry(seq: u64) -> SealedEntry {
        SealedEntry {
            seq,
            ts_ms: seq as i64,
            kind: "test".into(),
            // Every other entry matches the follower's filter.
            agent_id: if seq % 2 == 1 { "a" } else { "b" }.into(),
            session_id: String::new(),
            outcome: String::new(),
            key_id: "k".into(),
            canonical: format!("{{\"seq\":{seq}}}"),
            mac: format!("{seq:064x}"),
        }
    }

    async fn commit(store: &dyn Store, seqs: std::ops::RangeInclusive<u64>) {
        let units: Vec<CommitUnit> = seqs
            .map(|seq| CommitUnit {
                entry: entry(seq),
                ops: Vec::new(),
            })
            .collect();
        store.commit(&units, &TreeUpdate::default()).await.unwrap();
    }

    async fn next(rx: &mut mpsc::Receiver<Result<SealedEntry, StoreError>>) -> u64 {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("the follower delivers")
            .expect("the follower is running")
            .expect("no store error")
            .seq
    }

    /// A real SQLite store; the broadcast is the test's, so it can lag and skip entries
    /// (as another replica's commits are absent from it) on purpose.
    #[tokio::test]
    async fn a_follower_that_falls_behind_or_misses_entries_on_the_broadcast_skips_nothing() {
        let path = std::env::temp_dir().join(format!(
            "arbiter-tail-{}-{}.db",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let sqlite = SqliteStore::open(&path, false).await.unwrap();
        sqlite.migrate().await.unwrap();
        let store: Arc<dyn Store> = Arc::new(sqlite);
        commit(store.as_ref(), 1..=10).await;
        let (live, rx_live) = broadcast::channel(2);
        let (tx, mut rx) = mpsc::channel(4);
        let q = AuditQuery {
            agent_id: Some("a".into()),
            ..Default::default()
        };
        let follower = Follower {
            store: store.clone(),
            q,
            cursor: 2,
            known: 10,
            lags: None,
        };
        tokio::spawn(follower.run(rx_live, None, tx));
        // The backlog after the cursor, filtered.
        for want in [3, 5, 7, 9] {
            assert_eq!(next(&mut rx).await, want);
        }
        // Twenty commits into a broadcast of two: the follower lags and reads the store.
        commit(store.as_ref(), 11..=30).await;
        for seq in 11..=30 {
            let _ = live.send(entry(seq));
        }
        for want in (11..=30).filter(|s| s % 2 == 1) {
            assert_eq!(next(&mut rx).await, want);
        }
        // Entries committed elsewhere (absent from the broadcast) before one that is on it.
        commit(store.as_ref(), 31..=35).await;
        let _ = live.send(entry(35));
        for want in [31, 33, 35] {
            assert_eq!(next(&mut rx).await, want);
        }
        // The next entry on the broadcast is handed over directly, exactly once.
        commit(store.as_ref(), 36..=37).await;
        let _ = live.send(entry(36));
        let _ = live.send(entry(37));
        assert_eq!(next(&mut rx).await, 37);
        let _ = live.send(entry(37));
        assert!(
            tokio::time::timeout(Duration::from_millis(200), rx.recv())
                .await
                .is_err(),
            "nothing twice"
        );
        drop(rx);
        let _ = std::fs::remove_file(&path);
    }
}

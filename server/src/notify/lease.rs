//! Delivery by one replica at a time. With several servers on one database every
//! replica sees every committed entry; were each to deliver, every receiver would get
//! each event once per replica. Only the holder of the store's `notifier` lease
//! dispatches, and it keeps the delivery cursor in the database, so the replica that
//! takes the lease over (its holder stopped or lost the database) resumes from there:
//! events after that cursor may be sent twice around a hand-over (same `webhook-id`),
//! none is skipped.

use crate::store::{Replicated, StoreError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const JOB: &str = "notifier";

/// Exists only on a replicated store: a single server delivers alone and keeps its
/// cursor in a file (`CursorHome::File`).
pub struct Lease {
    store: Arc<dyn Replicated>,
    /// The last answer of `hold`: whether this replica delivers now.
    held: AtomicBool,
}

impl Lease {
    pub fn new(store: Arc<dyn Replicated>) -> Self {
        Self {
            store,
            held: AtomicBool::new(false),
        }
    }

    /// Takes or keeps the lease; false while another replica holds it.
    pub async fn hold(&self) -> bool {
        let held = self.store.lead(JOB).await;
        let was = self.held.swap(held, Ordering::SeqCst);
        if held != was {
            if held {
                tracing::info!("this replica holds the notifier lease and delivers webhooks");
            } else {
                tracing::warn!(
                    "this replica lost the notifier lease; another one delivers webhooks"
                );
            }
        }
        held
    }

    /// Whether the last `hold` succeeded (for writing the cursor only while leading).
    pub fn held(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }

    /// Where the previous holder stopped, if any replica ever delivered.
    pub async fn cursor(&self) -> Result<Option<u64>, StoreError> {
        self.store.delivery_cursor(JOB).await
    }

    pub async fn save(&self, seq: u64) -> Result<(), StoreError> {
        self.store.store_delivery_cursor(JOB, seq).await
    }
}

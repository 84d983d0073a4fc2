//! Reading and verifying the log through the store.

use super::{Engine, EngineError};
use crate::audit::verify::{Failure, Verifier};
use crate::audit::GENESIS;

/// The result of verifying a range of the log.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub checked: u64,
    pub failure: Option<Failure>,
    pub head_seq: u64,
    pub head_mac: String,
}

const PAGE: u32 = 10_000;

impl Engine {
    /// Verifies `[from, to]` (0 = to the end). A range that starts after 1 trusts the
    /// stored MAC of the entry before it.
    pub async fn verify_audit(&self, from: u64, to: u64) -> Result<VerifyReport, EngineError> {
        let from = from.max(1);
        let (head_seq, head_mac) = self.store.audit_head().await?.unwrap_or((0, String::new()));
        let to = if to == 0 { head_seq } else { to.min(head_seq) };
        let prev = if from == 1 {
            *GENESIS
        } else {
            let before = self.store.audit_range(from - 1, from - 1, 1).await?;
            match before
                .first()
                .and_then(|e| hex::decode(&e.mac).ok())
                .and_then(|m| <[u8; 32]>::try_from(m).ok())
            {
                Some(m) => m,
                None => {
                    return Ok(VerifyReport {
                        checked: 0,
                        failure: Some(Failure {
                            seq: from - 1,
                            fault: crate::audit::verify::Fault::Gap,
                            message: format!(
                                "entry {} (the start of the range's chain) is missing",
                                from - 1
                            ),
                        }),
                        head_seq,
                        head_mac,
                    })
                }
            }
        };
        let mut v = Verifier::new(&self.keys, from, prev);
        let fetch = |next: u64| {
            let store = self.store.clone();
            tokio::spawn(async move { store.audit_page(next, to, PAGE).await })
        };
        // The next page is read while this one is checked: reading and checking take
        // about as long as each other, so overlapping them nearly halves the time.
        let mut pending = (from <= to).then(|| fetch(from));
        while let Some(reading) = pending.take() {
            let page = reading
                .await
                .map_err(|e| EngineError::Unavailable(format!("audit read task: {e}")))??;
            let Some(last) = page.last() else { break };
            if last.seq < to {
                pending = Some(fetch(last.seq + 1));
            }
            let multi_thread = tokio::runtime::Handle::current().runtime_flavor()
                == tokio::runtime::RuntimeFlavor::MultiThread;
            let checked = if multi_thread {
                tokio::task::block_in_place(|| v.feed_all(&page))
            } else {
                v.feed_all(&page)
            };
            if let Err(f) = checked {
                return Ok(VerifyReport {
                    checked: v.checked,
                    failure: Some(f),
                    head_seq,
                    head_mac,
                });
            }
        }
        let failure = (v.checked < to.saturating_sub(from) + 1 && to >= from).then(|| Failure {
            seq: from + v.checked,
            fault: crate::audit::verify::Fault::Gap,
            message: format!("entries {}..{} are missing", from + v.checked, to),
        });
        Ok(VerifyReport {
            checked: v.checked,
            failure,
            head_seq,
            head_mac,
        })
    }
}

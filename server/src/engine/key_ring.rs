//! Key rotations and revocations happen offline on the key files (`arbiter keys
//! rotate|revoke`); the server audits them at its next start by comparing the key ring
//! it loaded with the one recorded in the last `keys.changed` entry.

use super::{Engine, EngineError};
use crate::audit::{EntryDraft, KeyRing, TreeSigner};
use crate::store::AuditQuery;
use serde_json::{json, Value};

/// What an auditor needs to know about the keys: ids, statuses and public keys, never
/// a secret.
pub fn key_ring_summary(
    hmac: &KeyRing,
    signer: &TreeSigner,
    retired: &[ed25519_dalek::VerifyingKey],
) -> Value {
    let mut keys: Vec<_> = hmac.keys().collect();
    keys.sort_by(|a, b| a.id.cmp(&b.id));
    json!({
        "hmac": keys.iter().map(|k| json!({
            "id": k.id,
            "status": k.status,
            "revoked_after_seq": k.revoked_after_seq,
        })).collect::<Vec<_>>(),
        "signing": {
            "origin": signer.origin,
            "active": hex::encode(signer.key.verifying_key().as_bytes()),
            "retired": retired.iter().map(|k| hex::encode(k.as_bytes())).collect::<Vec<_>>(),
        },
    })
}

/// What [`Engine::record_key_ring`] appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRingRecord {
    /// The ring equals the last recorded one: nothing was appended.
    Unchanged,
    /// The log held no ring yet (a new log): the first `keys.changed` entry.
    First(u64),
    /// The ring differs from the last recorded one (a rotation or revocation).
    Changed(u64),
}

impl Engine {
    /// Appends a `keys.changed` entry when the ring differs from the last recorded one
    /// (or none was recorded yet).
    pub async fn record_key_ring(&self, summary: Value) -> Result<KeyRingRecord, EngineError> {
        let q = AuditQuery {
            kinds: vec!["keys.changed".into()],
            ..Default::default()
        };
        let mut last: Option<Value> = None;
        let mut after = 0;
        loop {
            let page = self.store.query_audit(&q, after, 1000).await?;
            let Some(tail) = page.last() else { break };
            after = tail.seq;
            last = serde_json::from_str::<Value>(&tail.canonical)
                .ok()
                .and_then(|e| e.pointer("/body/after").cloned());
        }
        if last.as_ref() == Some(&summary) {
            return Ok(KeyRingRecord::Unchanged);
        }
        let first = last.is_none();
        let draft = EntryDraft {
            ts_ms: self.now_ms(),
            kind: "keys.changed".into(),
            agent_id: String::new(),
            session_id: String::new(),
            outcome: String::new(),
            body: json!({"before": last, "after": summary}).into(),
        };
        let seq = self.append(draft, Vec::new()).await?;
        Ok(if first {
            KeyRingRecord::First(seq)
        } else {
            KeyRingRecord::Changed(seq)
        })
    }
}

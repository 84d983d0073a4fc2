//! Replay answers rebuilt from the audit entries they answered.
//!
//! A `replies` row keeps a request's key, its fingerprint and the seq of the entry that
//! decided it, not a copy of the answer (issue 18: the copy was ≈ 1 KB per Evaluate,
//! a third of what an Evaluate wrote). Every field of an Evaluate's or a Record's
//! answer is in its entry's body, so the answer is read back from there when a reply
//! is loaded at start or fetched from a shared store; rows written by older releases
//! still carry their copy and are used as they are.

use super::evaluate::EvaluateResult;
use super::record::RecordResult;
use crate::pipeline::{Reason, Verdict};
use crate::state::{Amounts, Memo};
use crate::store::{ReplyRow, StoreError};
use serde::Deserialize;

/// The parts of a canonical entry an answer is rebuilt from.
#[derive(Deserialize)]
struct Entry<B> {
    outcome: String,
    body: B,
}

/// An Evaluate entry's body, as `Engine::evaluate_entry` writes it.
#[derive(Deserialize)]
struct EvaluateBody {
    decision_id: String,
    policy_version: String,
    action_digest: String,
    reasons: Vec<Reason>,
    approval_id: Option<String>,
    reservation: Option<ReservationBody>,
}

#[derive(Deserialize)]
struct ReservationBody {
    id: String,
    amounts: Amounts,
    expires_ts_ms: i64,
}

/// A Record entry's body, as `Engine::record` writes it.
#[derive(Deserialize)]
struct RecordBody {
    actual: Amounts,
    reserved: Amounts,
    overspend: bool,
    reservation_expired: bool,
}

/// An answer a reply row can be rebuilt into: from the audit entry it answered, or
/// from the copy an older release stored beside it.
pub(crate) trait Answer: serde::de::DeserializeOwned {
    /// The `replies.kind` this answer is stored under.
    const KIND: &'static str;
    fn from_entry(canonical: &str) -> Result<Self, String>;
}

impl Answer for EvaluateResult {
    const KIND: &'static str = "evaluate";
    fn from_entry(canonical: &str) -> Result<Self, String> {
        evaluate_answer(canonical)
    }
}

impl Answer for RecordResult {
    const KIND: &'static str = "record";
    fn from_entry(canonical: &str) -> Result<Self, String> {
        record_answer(canonical)
    }
}

/// The in-memory replay record of a stored reply; `None` when the entry it answered
/// is no longer in the log (an operator started on a log cut back on purpose, see
/// docs/audit-format.md): the answer is gone with its entry, so the request counts as
/// new rather than replaying something the log cannot show.
pub(crate) fn memo_from_row<A: Answer>(row: ReplyRow) -> Result<Option<Memo<A>>, StoreError> {
    let unreadable = |e: String| {
        StoreError::Corrupt(format!(
            "the audit entry at seq {} cannot answer the replay of {} {:?}: {e}",
            row.audit_seq, row.kind, row.key
        ))
    };
    if row.kind != A::KIND {
        return Err(unreadable(format!("a {} answer was expected", A::KIND)));
    }
    let answer = match (&row.response, &row.entry) {
        (Some(copy), _) => serde_json::from_str(copy).map_err(|e| unreadable(e.to_string()))?,
        (None, Some(entry)) => A::from_entry(entry).map_err(unreadable)?,
        (None, None) => {
            tracing::warn!(
                kind = %row.kind,
                key = %row.key,
                audit_seq = row.audit_seq,
                "a stored reply refers to an audit entry that is not in the log; it is not replayed"
            );
            return Ok(None);
        }
    };
    Ok(Some(Memo {
        agent_id: row.agent_id,
        fingerprint: row.fingerprint,
        answer,
        audit_seq: row.audit_seq,
        created_ms: row.created_ms,
    }))
}

fn evaluate_answer(canonical: &str) -> Result<EvaluateResult, String> {
    let e: Entry<EvaluateBody> = serde_json::from_str(canonical).map_err(|e| e.to_string())?;
    let verdict: Verdict = serde_json::from_value(serde_json::Value::String(e.outcome))
        .map_err(|e| format!("outcome: {e}"))?;
    let b = e.body;
    Ok(EvaluateResult {
        verdict,
        reasons: b.reasons,
        decision_id: b.decision_id,
        audit_seq: 0,
        policy_version: b.policy_version,
        action_digest: b.action_digest,
        reservation_id: b.reservation.as_ref().map(|r| r.id.clone()),
        reservation_expires_ms: b.reservation.as_ref().map(|r| r.expires_ts_ms),
        reserved: b.reservation.map(|r| r.amounts).unwrap_or_default(),
        approval_id: b.approval_id,
        replayed: false,
    })
}

fn record_answer(canonical: &str) -> Result<RecordResult, String> {
    let e: Entry<RecordBody> = serde_json::from_str(canonical).map_err(|e| e.to_string())?;
    let b = e.body;
    Ok(RecordResult {
        audit_seq: 0,
        actual: b.actual,
        reserved: b.reserved,
        overspend: b.overspend,
        reservation_expired: b.reservation_expired,
        duplicate: false,
    })
}

//! Events derived from committed audit entries. An event exists only once the entry
//! that records it is durable, and its id is a function of that entry (its MAC, which
//! is unique in the chain), so every replica and every retry names it the same.

use crate::audit::SealedEntry;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    ApprovalRequested,
    ApprovalDecided,
    ApprovalExpired,
    HaltEngaged,
    HaltReleased,
    BudgetThreshold,
    WatchdogAction,
}

impl EventType {
    pub const ALL: [EventType; 7] = [
        Self::ApprovalRequested,
        Self::ApprovalDecided,
        Self::ApprovalExpired,
        Self::HaltEngaged,
        Self::HaltReleased,
        Self::BudgetThreshold,
        Self::WatchdogAction,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::ApprovalRequested => "approval.requested",
            Self::ApprovalDecided => "approval.decided",
            Self::ApprovalExpired => "approval.expired",
            Self::HaltEngaged => "halt.engaged",
            Self::HaltReleased => "halt.released",
            Self::BudgetThreshold => "budget.threshold",
            Self::WatchdogAction => "watchdog.action",
        }
    }
}

/// The audit kinds events are derived from (the log follower reads only these).
pub const SOURCE_KINDS: [&str; 7] = [
    "evaluate",
    "approval.grant",
    "approval.deny",
    "approval.expire",
    "halt.engage",
    "halt.release",
    "record",
];

/// One event, as every endpoint sees it (the format decides the bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `webhook-id`: stable per event across retries, restarts and replicas.
    pub id: String,
    pub ty: EventType,
    /// The audit entry it comes from.
    pub seq: u64,
    pub ts_ms: i64,
    pub data: Value,
}

/// A stable id without `.` (the spec forbids it in the signed content's id).
pub fn event_id(source: &str, ty: EventType) -> String {
    let h = Sha256::digest(format!("{source}|{}", ty.name()).as_bytes());
    format!("msg_{}", &hex::encode(h)[..32])
}

/// The events one entry stands for (most entries: none). Budget crossings need the
/// ledger and are derived in `budget`.
pub fn from_entry(e: &SealedEntry) -> Vec<Event> {
    let body = match serde_json::from_str::<Value>(&e.canonical) {
        Ok(v) => v.get("body").cloned().unwrap_or(Value::Null),
        Err(_) => return Vec::new(),
    };
    let s = |k: &str| body.get(k).cloned().unwrap_or(Value::Null);
    let ev = |ty: EventType, data: Value| Event {
        id: event_id(&e.mac, ty),
        ty,
        seq: e.seq,
        ts_ms: e.ts_ms,
        data,
    };
    let base = json!({"audit_seq": e.seq, "agent_id": e.agent_id, "session_id": e.session_id});
    let with = |extra: Value| merge(base.clone(), extra);
    match e.kind.as_str() {
        "evaluate" if e.outcome == "pending_approval" => {
            let action = s("action");
            vec![ev(
                EventType::ApprovalRequested,
                with(json!({
                    "approval_id": s("approval_id"),
                    "decision_id": s("decision_id"),
                    "tool": action.get("tool").cloned().unwrap_or(Value::Null),
                    "api": action.get("api").cloned().unwrap_or(Value::Null),
                    "model": action.get("model").cloned().unwrap_or(Value::Null),
                    "estimate": action.get("estimate").cloned().unwrap_or(Value::Null),
                    "action_digest": s("action_digest"),
                    "policy_version": s("policy_version"),
                    "reasons": s("reasons"),
                })),
            )]
        }
        "approval.grant" | "approval.deny" => vec![ev(
            EventType::ApprovalDecided,
            with(json!({
                "approval_id": s("approval_id"),
                "decision": e.outcome,
                "approver": s("approver"),
                "reason": s("reason"),
                "action_digest": s("action_digest"),
            })),
        )],
        "approval.expire" => vec![ev(
            EventType::ApprovalExpired,
            with(json!({
                "approval_id": s("approval_id"),
                "was": s("was"),
                "expires_ts_ms": s("expires_ts_ms"),
            })),
        )],
        "halt.engage" | "halt.release" => halt_events(e, &body, base, ev),
        _ => Vec::new(),
    }
}

fn halt_events(
    e: &SealedEntry,
    body: &Value,
    base: Value,
    ev: impl Fn(EventType, Value) -> Event,
) -> Vec<Event> {
    let s = |k: &str| body.get(k).cloned().unwrap_or(Value::Null);
    let data = merge(
        base,
        json!({"target": s("target"), "mode": s("mode"), "reason": s("reason"), "principal": s("principal")}),
    );
    let engaged = e.kind == "halt.engage";
    let ty = if engaged {
        EventType::HaltEngaged
    } else {
        EventType::HaltReleased
    };
    let mut out = vec![ev(ty, data.clone())];
    // Automatic halts are also the watchdog's action, for those who follow only that.
    if engaged && body.get("principal").and_then(Value::as_str) == Some("watchdog") {
        out.push(ev(
            EventType::WatchdogAction,
            merge(data, json!({"action": "halt"})),
        ));
    }
    out
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &str, outcome: &str, body: Value) -> SealedEntry {
        SealedEntry {
            seq: 7,
            ts_ms: 1_700_000_000_000,
            kind: kind.into(),
            agent_id: "bot".into(),
            session_id: "s1".into(),
            outcome: outcome.into(),
            key_id: "k".into(),
            canonical: json!({"body": body}).to_string(),
            mac: "ab".repeat(32),
        }
    }

    #[test]
    fn a_pending_evaluate_is_an_approval_request_and_others_are_nothing() {
        let body = json!({"approval_id": "apr_1", "action": {"tool": "db.drop", "api": null}, "action_digest": "sha256:x"});
        let evs = from_entry(&entry("evaluate", "pending_approval", body.clone()));
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].ty, EventType::ApprovalRequested);
        assert_eq!(evs[0].data["approval_id"], "apr_1");
        assert_eq!(evs[0].data["tool"], "db.drop");
        assert_eq!(evs[0].data["audit_seq"], 7);
        assert!(from_entry(&entry("evaluate", "allow", body)).is_empty());
        assert!(from_entry(&entry("trust.set", "", json!({}))).is_empty());
    }

    #[test]
    fn a_watchdog_halt_is_also_a_watchdog_action_with_its_own_stable_id() {
        let e = entry(
            "halt.engage",
            "engaged",
            json!({"target": "agent:bot", "mode": "HALT_ALL", "reason": "watchdog: silent", "principal": "watchdog"}),
        );
        let evs = from_entry(&e);
        assert_eq!(
            evs.iter().map(|e| e.ty).collect::<Vec<_>>(),
            [EventType::HaltEngaged, EventType::WatchdogAction]
        );
        assert_ne!(evs[0].id, evs[1].id);
        assert_eq!(
            from_entry(&e),
            evs,
            "the same entry always gives the same events"
        );
        assert!(evs.iter().all(|e| !e.id.contains('.')));
        let human = entry("halt.engage", "engaged", json!({"principal": "alice"}));
        assert_eq!(from_entry(&human).len(), 1);
    }
}

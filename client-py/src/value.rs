//! Responses cross into Python as plain data (`Value`): built from the proto types
//! on a runtime thread without the GIL, turned into dicts and lists only once the
//! GIL is held. The facade (`python/arbiter/_types.py`) turns those dicts into typed
//! result objects, so the wire shape is known in exactly two places: here and there.

use arbiter_client::proto;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

/// A response, or one item of a stream, as plain data.
#[derive(Debug, Clone)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Str(String),
    List(Vec<Value>),
    Map(Vec<(&'static str, Value)>),
}

impl Value {
    pub fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self {
            Value::None => py.None().into_bound(py),
            Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
            Value::Int(i) => i.into_pyobject(py)?.into_any(),
            Value::UInt(u) => u.into_pyobject(py)?.into_any(),
            Value::Str(s) => s.into_pyobject(py)?.into_any(),
            Value::List(items) => {
                let list = PyList::empty(py);
                for item in items {
                    list.append(item.to_py(py)?)?;
                }
                list.into_any()
            }
            Value::Map(fields) => {
                let dict = PyDict::new(py);
                for (key, value) in fields {
                    // Interned: the same few keys cross on every call, so this finds
                    // the existing string instead of making and freeing one per field,
                    // and the facade's lookups of them compare by identity.
                    dict.set_item(PyString::intern(py, key), value.to_py(py)?)?;
                }
                dict.into_any()
            }
        })
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<i32> for Value {
    fn from(i: i32) -> Self {
        Value::Int(i64::from(i))
    }
}

impl From<u64> for Value {
    fn from(u: u64) -> Self {
        Value::UInt(u)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(o: Option<T>) -> Self {
        o.map_or(Value::None, Into::into)
    }
}

impl From<Vec<String>> for Value {
    fn from(items: Vec<String>) -> Self {
        Value::List(items.into_iter().map(Value::Str).collect())
    }
}

/// Builds a `Value::Map` from `key => value` pairs.
macro_rules! map {
    ($($key:literal => $value:expr),* $(,)?) => {
        $crate::value::Value::Map(vec![$(($key, $crate::value::Value::from($value))),*])
    };
}
pub(crate) use map;

/// A timestamp as integer microseconds since the Unix epoch (the facade makes a
/// timezone-aware `datetime`); `None` when absent.
pub fn timestamp(t: Option<prost_types::Timestamp>) -> Value {
    match t {
        Some(t) => Value::Int(
            t.seconds
                .saturating_mul(1_000_000)
                .saturating_add(i64::from(t.nanos / 1_000)),
        ),
        None => Value::None,
    }
}

/// Microseconds since the epoch → a proto timestamp.
pub fn to_timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1_000).unwrap_or(0),
    }
}

fn non_empty(s: String) -> Value {
    if s.is_empty() {
        Value::None
    } else {
        Value::Str(s)
    }
}

pub fn list<T>(items: Vec<T>, f: impl Fn(T) -> Value) -> Value {
    Value::List(items.into_iter().map(f).collect())
}

pub fn optional<T>(item: Option<T>, f: impl Fn(T) -> Value) -> Value {
    item.map_or(Value::None, f)
}

pub fn decision(d: arbiter_client::Decision) -> Value {
    use arbiter_client::DecisionOutcome;
    let outcome = match d.outcome {
        DecisionOutcome::Allow => "allow",
        DecisionOutcome::Deny => "deny",
        DecisionOutcome::PendingApproval => "pending_approval",
    };
    let raw = d.raw;
    map! {
        "outcome" => outcome,
        "reasons" => list(d.reasons, |r| map! {
            "stage" => r.stage, "code" => r.code, "message" => r.message, "passed" => r.passed,
        }),
        "decision_id" => d.decision_id,
        "approval_id" => d.approval_id,
        "audit_seq" => d.audit_seq,
        "policy_version" => d.policy_version,
        "action_digest" => d.action_digest,
        "reservation_id" => d.reservation_id,
        "reservation_expires_at" => timestamp(raw.reservation_expires_at),
        "reserved" => cost(raw.reserved),
        "receipt" => optional(raw.receipt, |r| map! {
            "entry" => r.entry, "mac" => r.mac, "inclusion_proof" => r.inclusion_proof,
            "checkpoint" => r.checkpoint,
        }),
        "replayed" => d.replayed,
    }
}

fn cost(c: Option<proto::Cost>) -> Value {
    let c = c.unwrap_or_default();
    map! { "micro_usd" => c.micro_usd, "tokens" => c.tokens }
}

pub fn record(r: proto::RecordResponse) -> Value {
    map! {
        "audit_seq" => r.audit_seq,
        "actual" => cost(r.actual),
        "reserved" => cost(r.reserved),
        "overspend" => r.overspend,
        "duplicate" => r.duplicate,
        "reservation_expired" => r.reservation_expired,
    }
}

pub fn approval(a: proto::Approval) -> Value {
    map! {
        "approval_id" => a.approval_id,
        "agent_id" => a.agent_id,
        "session_id" => non_empty(a.session_id),
        "action_digest" => a.action_digest,
        "policy_version" => a.policy_version,
        "state" => a.state,
        "reason" => a.reason,
        "action_summary" => a.action_summary,
        "requested_at" => timestamp(a.requested_at),
        "expires_at" => timestamp(a.expires_at),
        "decided_by" => non_empty(a.decided_by),
        "decision_reason" => non_empty(a.decision_reason),
        "decided_at" => timestamp(a.decided_at),
        "action_json" => a.action_json,
    }
}

pub fn halt(h: proto::Halt) -> Value {
    let target = h.target.unwrap_or_default();
    map! {
        "scope" => target.scope,
        "agent_id" => non_empty(target.agent_id),
        "session_id" => non_empty(target.session_id),
        "mode" => h.mode,
        "reason" => h.reason,
        "engaged_by" => h.engaged_by,
        "engaged_at" => timestamp(h.engaged_at),
    }
}

pub fn trust_assignment(t: proto::TrustAssignment) -> Value {
    map! {
        "agent_id" => t.agent_id,
        "scope" => non_empty(t.scope),
        "level" => t.level,
        "assigned_by" => t.assigned_by,
        "assigned_at" => timestamp(t.assigned_at),
    }
}

pub fn consent(c: proto::ConsentGrant) -> Value {
    map! {
        "agent_id" => c.agent_id,
        "data_type" => c.data_type,
        "purpose" => non_empty(c.purpose),
        "granted_by" => c.granted_by,
        "granted_at" => timestamp(c.granted_at),
        "expires_at" => timestamp(c.expires_at),
    }
}

pub fn budget(b: proto::BudgetSnapshot) -> Value {
    map! {
        "name" => b.name,
        "scope" => b.scope,
        "scope_key" => b.scope_key,
        "period" => b.period,
        "window_start" => timestamp(b.window_start),
        "window_end" => timestamp(b.window_end),
        "amounts" => list(b.amounts, |a| map! {
            "unit" => a.unit, "cap" => a.cap, "spent" => a.spent, "reserved" => a.reserved,
            "remaining" => a.remaining,
        }),
    }
}

pub fn agent(a: proto::Agent) -> Value {
    map! {
        "agent_id" => a.agent_id,
        "trust_level" => a.trust_level,
        "first_seen" => timestamp(a.first_seen),
        "last_seen" => timestamp(a.last_seen),
        "presence" => a.presence,
        "operator" => non_empty(a.operator),
        "halted" => a.halted,
    }
}

pub fn policy_load(p: proto::PolicyLoad) -> Value {
    map! {
        "version" => p.version,
        "source" => p.source,
        "loaded_at" => timestamp(p.loaded_at),
        "accepted" => p.accepted,
        "error" => non_empty(p.error),
    }
}

pub fn principal(p: proto::Principal) -> Value {
    map! {
        "name" => p.name,
        "roles" => list(p.roles, Value::from),
        "agents" => p.agents,
        "tls_identity" => non_empty(p.tls_identity),
        "created_at" => timestamp(p.created_at),
        "revoked_at" => timestamp(p.revoked_at),
    }
}

pub fn audit_entry(e: proto::AuditEntry) -> Value {
    map! {
        "seq" => e.seq,
        "kind" => e.kind,
        "time" => timestamp(e.time),
        "agent_id" => non_empty(e.agent_id),
        "session_id" => non_empty(e.session_id),
        "outcome" => non_empty(e.outcome),
        "key_id" => e.key_id,
        "canonical" => e.canonical,
        "mac" => e.mac,
    }
}

pub fn verify(v: proto::VerifyAuditResponse) -> Value {
    map! {
        "ok" => v.ok,
        "checked" => v.checked,
        "first_bad_seq" => (v.first_bad_seq != 0).then_some(v.first_bad_seq),
        "fault" => v.fault,
        "message" => non_empty(v.message),
        "head_seq" => v.head_seq,
        "head_mac" => v.head_mac,
    }
}

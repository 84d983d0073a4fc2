//! The audit bodies written on every action (Evaluate's and Record's), typed, so each is
//! serialised once, straight to its canonical bytes, from borrowed request data (no
//! `serde_json::Value` tree, no clone). Every struct declares its fields in JCS order
//! (sorted names; `audit::jcs` checks this against a full JCS implementation in every
//! debug build). docs/audit-format.md lists the members; the bytes are the same as
//! the `json!` bodies these replaced wrote, so older logs and verifiers are unaffected.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};

use crate::audit::canonical::Body;
use crate::delegation::TokenCheck;
use crate::domain::ActionJson;
use crate::jcs::SortedMap;
use crate::pipeline::Reason;
use crate::state::{Amounts, CounterKey, Reservation};

/// One Evaluate's body.
#[derive(Serialize)]
pub struct EvaluateBody<'a> {
    pub action: ActionJson<'a>,
    pub action_digest: &'a str,
    pub approval_id: Option<&'a str>,
    pub context: Redacted<'a>,
    pub decision_id: &'a str,
    pub delegation: Option<DelegationEntry<'a>>,
    pub explain: bool,
    pub min_trust: Option<&'static str>,
    pub policy_version: &'a str,
    #[serde(serialize_with = "reasons")]
    pub reasons: &'a [Reason],
    pub request_id: Option<&'a str>,
    pub reservation: Option<ReservationEntry<'a>>,
}

/// What the log keeps of a presented token: enough to trace the chain, never the
/// token itself (it is a bearer credential until it expires).
#[derive(Serialize)]
#[serde(untagged)]
pub enum DelegationEntry<'a> {
    Valid {
        expires_ts_ms: i64,
        issuers: &'a [String],
        subject: &'a str,
        token_id: &'a str,
    },
    Forged {
        forged: &'a str,
    },
}

impl<'a> DelegationEntry<'a> {
    pub fn of(check: &'a TokenCheck) -> Self {
        match check {
            TokenCheck::Valid(t) => Self::Valid {
                expires_ts_ms: t.grant.exp_ms,
                issuers: &t.grant.issuers,
                subject: &t.grant.sub,
                token_id: &t.grant.id,
            },
            TokenCheck::Forged(f) => Self::Forged { forged: &f.0 },
        }
    }
}

/// The reservation an allowed Evaluate made.
#[derive(Serialize)]
pub struct ReservationEntry<'a> {
    pub amounts: AmountsEntry,
    #[serde(serialize_with = "budgets")]
    pub budgets: &'a [CounterKey],
    pub expires_ts_ms: i64,
    pub id: &'a str,
}

impl<'a> ReservationEntry<'a> {
    pub fn of(r: &'a Reservation) -> Self {
        Self {
            amounts: r.amounts.into(),
            budgets: &r.keys,
            expires_ts_ms: r.expires_ms,
            id: &r.id,
        }
    }
}

/// One Record's body.
#[derive(Serialize)]
pub struct RecordBody<'a> {
    pub actual: AmountsEntry,
    pub decision_id: &'a str,
    pub duration_ms: u64,
    pub metadata: Redacted<'a>,
    pub output_digest: Option<&'a str>,
    pub overspend: bool,
    pub reservation_expired: bool,
    pub reservation_id: Option<&'a str>,
    pub reserved: AmountsEntry,
    pub unpriced: bool,
    pub usage: UsageEntry<'a>,
}

/// What the caller reported using.
#[derive(Serialize)]
pub struct UsageEntry<'a> {
    pub input_tokens: u64,
    pub micro_usd: Option<u64>,
    pub model: Option<&'a str>,
    pub output_tokens: u64,
}

/// `Amounts` in JCS order.
#[derive(Serialize)]
pub struct AmountsEntry {
    calls: u64,
    micro_usd: u64,
    tokens: u64,
}

impl From<Amounts> for AmountsEntry {
    fn from(a: Amounts) -> Self {
        Self {
            calls: a.calls,
            micro_usd: a.micro_usd,
            tokens: a.tokens,
        }
    }
}

/// A string map after the policy's redaction: each kept value as given or as its
/// keyed digest (sensitive keys), dropped keys left out.
pub struct Redacted<'a>(pub SortedMap<'a, std::borrow::Cow<'a, str>>);

impl Serialize for Redacted<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'a> Redacted<'a> {
    /// Keeps each `(key, value)` of `map` that `keep` returns a value for.
    pub fn of(
        map: &'a BTreeMap<String, String>,
        mut keep: impl FnMut(&'a str, &'a str) -> Option<std::borrow::Cow<'a, str>>,
    ) -> Self {
        Self(SortedMap(
            map.iter()
                .filter_map(|(k, v)| keep(k, v).map(|v| (k.as_str(), v)))
                .collect(),
        ))
    }
}

/// `Reason` in JCS order.
#[derive(Serialize)]
struct ReasonEntry<'a> {
    code: &'a str,
    message: &'a str,
    passed: bool,
    stage: &'a str,
}

fn reasons<S: Serializer>(reasons: &&[Reason], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(reasons.iter().map(|r| ReasonEntry {
        code: &r.code,
        message: &r.message,
        passed: r.passed,
        stage: &r.stage,
    }))
}

/// `CounterKey` in JCS order.
#[derive(Serialize)]
struct BudgetEntry<'a> {
    budget: &'a str,
    scope_key: &'a str,
    window_start_ms: i64,
}

fn budgets<S: Serializer>(keys: &&[CounterKey], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(keys.iter().map(|k| BudgetEntry {
        budget: &k.budget,
        scope_key: &k.scope_key,
        window_start_ms: k.window_start_ms,
    }))
}

impl EvaluateBody<'_> {
    pub fn body(&self) -> Body {
        Body::typed(self)
    }
}

impl RecordBody<'_> {
    pub fn body(&self) -> Body {
        Body::typed(self)
    }
}

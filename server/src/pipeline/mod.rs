//! The decision pipeline: halt → trust → budget → consent → scope (+ loop guard) →
//! approval, top to bottom. Every stage is a plain function of the request, the state
//! snapshot, the policy and the time; it returns a reason and intents and writes
//! nothing. `engine` commits the intents together with the audit entry.
//!
//! Invariant: this module does no I/O and reads no clock.

mod approval;
mod budget;
mod consent;
mod halt;
mod scope;
mod trust;

pub use budget::budget_view;
pub use scope::tool_visible;

use crate::domain::{Action, TrustLevel};
use crate::policy::CompiledPolicy;
use crate::state::{Amounts, ApprovalState, CounterKey, LoopKey, RuntimeState};
use serde::{Deserialize, Serialize};

/// A validated Evaluate request.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub agent_id: &'a str,
    pub session_id: Option<&'a str>,
    pub action: &'a Action,
    pub min_trust: Option<TrustLevel>,
    pub explain: bool,
    /// The approval id the request presents, if any.
    pub approval_id: Option<&'a str>,
    /// The delegation token the request presents, already read by the engine.
    pub delegation: Option<&'a crate::delegation::TokenCheck>,
}

impl Request<'_> {
    /// The issuers of a presented token whose signature verified.
    fn issuers(&self) -> &[String] {
        match self.delegation {
            Some(crate::delegation::TokenCheck::Valid(t)) => &t.grant.issuers,
            _ => &[],
        }
    }
}

/// What a stage reads: one consistent snapshot taken under the engine lock.
pub struct Snapshot<'a> {
    pub policy: &'a CompiledPolicy,
    pub state: &'a RuntimeState,
    pub now_ms: i64,
    /// False when the store cannot be read or written; budgets then fail closed.
    pub store_available: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    Deny,
    PendingApproval,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::PendingApproval => "pending_approval",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    pub stage: String,
    pub code: String,
    pub message: String,
    pub passed: bool,
}

impl Reason {
    pub fn pass(stage: &str, code: &str, message: impl Into<String>) -> Self {
        Self {
            stage: stage.to_owned(),
            code: code.to_owned(),
            message: message.into(),
            passed: true,
        }
    }

    pub fn fail(stage: &str, code: &str, message: impl Into<String>) -> Self {
        Self {
            stage: stage.to_owned(),
            code: code.to_owned(),
            message: message.into(),
            passed: false,
        }
    }
}

/// Budget the decision would hold if it is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationPlan {
    pub keys: Vec<CounterKey>,
    pub amounts: Amounts,
}

/// What the engine must commit if the decision is ALLOW or PENDING_APPROVAL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Intents {
    pub reservation: Option<ReservationPlan>,
    pub loop_call: Option<(LoopKey, i64)>,
    pub approval: ApprovalIntent,
}

/// What the approval stage asks the engine to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ApprovalIntent {
    #[default]
    None,
    /// Open a new approval (the decision is PENDING_APPROVAL); the text says why.
    Request(String),
    /// Mark this granted approval consumed.
    Consume(String),
    /// The presented approval is still pending: answer PENDING_APPROVAL with it again.
    StillPending(String),
}

#[derive(Debug, Clone)]
pub struct Decision {
    pub verdict: Verdict,
    pub reasons: Vec<Reason>,
    pub intents: Intents,
}

/// Runs every stage in the fixed order. Without `explain` it stops at the first stage
/// that fails; with it, every stage reports, but the first failure still decides and
/// nothing is reserved for a denial.
pub fn run(req: &Request<'_>, snap: &Snapshot<'_>) -> Decision {
    let mut reasons = Vec::with_capacity(6);
    let stop =
        |reasons: &Vec<Reason>| !req.explain && reasons.last().is_some_and(|r: &Reason| !r.passed);
    let deny = |reasons: Vec<Reason>| Decision {
        verdict: Verdict::Deny,
        reasons,
        intents: Intents::default(),
    };

    reasons.push(stage("halt", || halt::check(req, snap)));
    if stop(&reasons) {
        return deny(reasons);
    }
    let (reason, escalated) = stage("trust", || trust::check(req, snap));
    reasons.push(reason);
    if stop(&reasons) {
        return deny(reasons);
    }
    let (reason, reservation) = stage("budget", || budget::check(req, snap));
    reasons.push(reason);
    if stop(&reasons) {
        return deny(reasons);
    }
    reasons.push(stage("consent", || consent::check(req, snap)));
    if stop(&reasons) {
        return deny(reasons);
    }
    let (reason, loop_call) = stage("scope", || scope::check(req, snap));
    reasons.push(reason);
    if stop(&reasons) {
        return deny(reasons);
    }
    let (reason, approval) = stage("approval", || approval::check(req, snap, escalated));
    let asks_human = matches!(
        approval,
        ApprovalIntent::Request(_) | ApprovalIntent::StillPending(_)
    );
    reasons.push(reason);

    let failed = reasons.iter().filter(|r| !r.passed).count();
    if failed > 1 || (failed == 1 && !asks_human) {
        return deny(reasons);
    }
    Decision {
        verdict: if asks_human {
            Verdict::PendingApproval
        } else {
            Verdict::Allow
        },
        reasons,
        intents: Intents {
            reservation,
            // A pending action has not run; the loop guard counts it when it is allowed.
            loop_call: if asks_human { None } else { loop_call },
            approval,
        },
    }
}

/// Runs one stage inside its span (`arbiter.stage`). The span is DEBUG: without a
/// trace exporter it is disabled and costs a cached interest check.
fn stage<T>(name: &'static str, check: impl FnOnce() -> T) -> T {
    tracing::debug_span!("stage", otel.name = name, arbiter.stage = name).in_scope(check)
}

/// Reads an approval's state at the snapshot's time.
fn approval_state(snap: &Snapshot<'_>, id: &str) -> Option<ApprovalState> {
    snap.state
        .approvals
        .get(id)
        .map(|a| a.state_at(snap.now_ms))
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

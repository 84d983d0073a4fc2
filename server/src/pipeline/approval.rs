//! Stage 6: human approval. Owns `approval.required`, `approval.not_found`,
//! `approval.mismatch`, `approval.denied`, `approval.expired` and `approval.consumed`.
//!
//! A human is needed when a matching action rule says `approval: always`, when it marks
//! the action irreversible or external (never auto-approved), or when trust escalated.
//! A request that presents a granted approval for the same agent, action digest and
//! policy version consumes it and passes; anything else presented is denied.

use super::{approval_state, ApprovalIntent, Reason, Request, Snapshot};
use crate::policy::ApprovalMode;
use crate::state::ApprovalState;

pub fn check(req: &Request<'_>, snap: &Snapshot<'_>, escalated: bool) -> (Reason, ApprovalIntent) {
    let rules: Vec<_> = snap.policy.action_rules(req.action).collect();
    let why = if escalated {
        Some("trust escalation (agent at L3_ACT_APPROVE)".to_owned())
    } else if let Some(rule) = rules.iter().find(|r| r.approval == ApprovalMode::Always) {
        Some(match &rule.reason {
            Some(reason) => format!(
                "policy requires approval for this action (actions[{}]: {reason})",
                rule.index
            ),
            None => "policy requires approval for this action".to_owned(),
        })
    } else if rules.iter().any(|r| r.irreversible || r.external) {
        Some("irreversible or external actions are never auto-approved".to_owned())
    } else {
        None
    };

    if let Some(id) = req.approval_id {
        let Some(a) = snap.state.approvals.get(id) else {
            return (
                Reason::fail(
                    "approval",
                    "approval.not_found",
                    format!("approval {id} does not exist"),
                ),
                ApprovalIntent::None,
            );
        };
        let digest = req.action.digest().0;
        // Say which binding differs (never the other agent's name): an agent that changed
        // an argument learns that the approval was for another action.
        let mismatch = if a.agent_id != req.agent_id {
            Some("another agent".to_owned())
        } else if a.action_digest != digest {
            Some(format!(
                "another action ({}, this request is {digest}: tool, API, model, estimate, data, category, budget and arguments must be identical)",
                a.action_digest
            ))
        } else if a.policy_version != snap.policy.version {
            Some(format!("policy version {}", a.policy_version))
        } else {
            None
        };
        if let Some(what) = mismatch {
            return (
                Reason::fail(
                    "approval",
                    "approval.mismatch",
                    format!("approval {id} was given for {what}; ask again for this action"),
                ),
                ApprovalIntent::None,
            );
        }
        return match approval_state(snap, id).unwrap_or(ApprovalState::Expired) {
            ApprovalState::Granted => (
                Reason::pass(
                    "approval",
                    "ok",
                    format!("approval {id} granted by {}", a.decided_by),
                ),
                ApprovalIntent::Consume(id.to_owned()),
            ),
            ApprovalState::Pending => (
                Reason::fail(
                    "approval",
                    "approval.required",
                    format!("approval {id} is still waiting for a human"),
                ),
                ApprovalIntent::StillPending(id.to_owned()),
            ),
            ApprovalState::Denied => (
                Reason::fail(
                    "approval",
                    "approval.denied",
                    format!(
                        "approval {id} was denied by {}: {}",
                        a.decided_by, a.decision_reason
                    ),
                ),
                ApprovalIntent::None,
            ),
            ApprovalState::Expired => (
                Reason::fail(
                    "approval",
                    "approval.expired",
                    format!("approval {id} expired"),
                ),
                ApprovalIntent::None,
            ),
            ApprovalState::Consumed => (
                Reason::fail(
                    "approval",
                    "approval.consumed",
                    format!("approval {id} was already used; approvals are single-use"),
                ),
                ApprovalIntent::None,
            ),
        };
    }
    match why {
        Some(why) => (
            Reason::fail(
                "approval",
                "approval.required",
                format!("a human must approve: {why}"),
            ),
            ApprovalIntent::Request(why),
        ),
        None => (
            Reason::pass("approval", "ok", "no approval required"),
            ApprovalIntent::None,
        ),
    }
}

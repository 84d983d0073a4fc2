//! Stage 2: trust. Owns `trust.insufficient`. An agent at L3_ACT_APPROVE facing an
//! action that needs L4 or more passes to the approval stage instead (escalation),
//! unless a matching action rule says `approval: never`.

use super::{Reason, Request, Snapshot};
use crate::domain::TrustLevel;
use crate::policy::{facets, ApprovalMode, Facet};
use crate::state::TrustScopes;

/// The level an action needs: the policy default, raised by every matching action
/// rule, raised again by the request's `min_trust` (a request can never lower it).
pub fn required_level(req: &Request<'_>, snap: &Snapshot<'_>) -> TrustLevel {
    let policy = snap.policy;
    policy
        .action_rules(req.action)
        .filter_map(|r| r.trust)
        .chain(req.min_trust)
        .fold(policy.defaults.required_trust, TrustLevel::max)
}

/// Which scoped assignments can apply: per facet (tool, API call, model), the tool's own
/// name and the categories of the action rules covering that facet. The policy
/// classifies; the caller's `category` is passed apart, to narrow only. Data accesses
/// are not a trust facet: consent governs them (8.4), and no rule sets their trust.
fn trust_scopes<'a>(req: &Request<'a>, snap: &Snapshot<'a>) -> TrustScopes<'a> {
    let action = req.action;
    let facets = facets(action)
        .into_iter()
        .filter(|f| *f != Facet::Data)
        .map(|f| {
            let own = match f {
                Facet::Tool => action.tool.as_deref(),
                _ => None,
            };
            own.into_iter()
                .chain(snap.policy.categories_covering(action, f))
                .collect()
        })
        .collect();
    TrustScopes {
        facets,
        declared: action.category.as_deref(),
    }
}

pub fn check(req: &Request<'_>, snap: &Snapshot<'_>) -> (Reason, bool) {
    let required = required_level(req, snap);
    let scopes = trust_scopes(req, snap);
    let last_active = snap
        .state
        .agents
        .get(req.agent_id)
        .and_then(|a| a.last_allowed_ms);
    let eff = snap.state.trust.effective(
        req.agent_id,
        &scopes,
        snap.policy.defaults.trust_level,
        snap.policy.defaults.trust_decay_days,
        last_active,
        snap.now_ms,
    );
    if eff.level >= required {
        let msg = format!(
            "agent level {} ({}) meets required {}",
            eff.level, eff.source, required
        );
        return (Reason::pass("trust", "ok", msg), false);
    }
    let no_escalation = snap
        .policy
        .action_rules(req.action)
        .any(|r| r.approval == ApprovalMode::Never);
    if eff.level == TrustLevel::L3ActApprove
        && required >= TrustLevel::L4ActReport
        && !no_escalation
    {
        let msg = format!(
            "agent level {} ({}) is below required {}; escalating to human approval",
            eff.level, eff.source, required
        );
        return (Reason::pass("trust", "trust.escalated", msg), true);
    }
    let msg = format!(
        "agent {} has trust {} ({}), the action requires {}",
        req.agent_id, eff.level, eff.source, required
    );
    (Reason::fail("trust", "trust.insufficient", msg), false)
}

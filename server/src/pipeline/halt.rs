//! Stage 1: the kill switch, checked before anything else, even for agents with no
//! policy. Owns `halt.engaged`. Global halts follow their mode; agent and session halts
//! stop everything for their target, and for work delegated by that target.

use super::{Reason, Request, Snapshot};
use crate::state::HaltTarget;

pub fn check(req: &Request<'_>, snap: &Snapshot<'_>) -> Reason {
    let agent_critical = snap
        .policy
        .agent_rule(req.agent_id)
        .is_some_and(|r| r.critical);
    // Every facet must be covered by a critical rule: a critical tool does not carry an
    // API call or a model call made in the same action through a halt.
    let action_critical = snap.policy.is_critical_action(req.action);
    let mut exempt = Vec::new();
    // A halted agent cannot keep working through the agents it delegated to: its
    // agent halt applies to every request carrying a token it issued.
    let issuer_halts = req
        .issuers()
        .iter()
        .flat_map(|issuer| snap.state.halts.applicable(issuer, None))
        .filter(|h| !matches!(h.target, HaltTarget::Global));
    for h in snap
        .state
        .halts
        .applicable(req.agent_id, req.session_id)
        .chain(issuer_halts)
    {
        // SPEC §5: an agent or session halt blocks everything for its target; the
        // critical exemptions apply to global halts only.
        let global = matches!(h.target, HaltTarget::Global);
        if global && h.mode.lets_through(agent_critical, action_critical) {
            exempt.push(h.mode.name());
            continue;
        }
        let when = chrono::DateTime::from_timestamp_millis(h.engaged_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        return Reason::fail(
            "halt",
            "halt.engaged",
            format!(
                "{} halt on {} engaged by {} at {when}: {}",
                h.mode.name(),
                h.target.describe(),
                h.engaged_by,
                h.reason
            ),
        );
    }
    if exempt.is_empty() {
        Reason::pass("halt", "ok", "no halt applies")
    } else {
        Reason::pass(
            "halt",
            "ok",
            format!(
                "critical work passes the engaged {} halt",
                exempt.join(", ")
            ),
        )
    }
}

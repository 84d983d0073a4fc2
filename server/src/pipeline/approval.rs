//! Stage 6: human approval. Owns the `approval.*` codes. Approval workflows
//! (PENDING_APPROVAL, Approve, WatchApproval) arrive with the human-control release;
//! until then an action that policy says needs a human is denied, never let through.

use super::{Reason, Request, Snapshot};
use crate::policy::ApprovalMode;

pub fn check(req: &Request<'_>, snap: &Snapshot<'_>) -> Reason {
    let needs = snap.policy.action_rules(req.action).any(|r| {
        r.approval == ApprovalMode::Always
            || (r.approval != ApprovalMode::Never && (r.irreversible || r.external))
    });
    if needs {
        return Reason::fail(
            "approval",
            "approval.unavailable",
            "policy requires human approval for this action and this server does not run approvals yet",
        );
    }
    Reason::pass("approval", "ok", "no approval required")
}

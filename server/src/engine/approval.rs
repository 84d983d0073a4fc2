//! Deciding, reading, watching and expiring approvals.

use super::{Engine, EngineError};
use crate::audit::refusal::Refusal as CommitRefusal;
use crate::audit::EntryDraft;
use crate::auth::Refusal;
use crate::domain::Principal;
use crate::state::{Approval, ApprovalState};
use crate::store::StateOp;
use serde_json::json;

impl Engine {
    /// Grants or denies a pending approval. Exactly one of concurrent decisions wins:
    /// the state changes in memory under the lock before the commit, so a second
    /// decision sees it is no longer pending.
    pub async fn approve(
        &self,
        who: &Principal,
        id: &str,
        grant: bool,
        reason: String,
    ) -> Result<Approval, EngineError> {
        let now = self.now_ms();
        let policy = self.policy();
        let refused = |reason: String| Refusal {
            principal: who.name.clone(),
            rpc: "Approve",
            reason,
        };
        let prepared = {
            let mut s = self.lock();
            let Some(before) = s.approvals.get(id).cloned() else {
                return Err(EngineError::NotFound(format!(
                    "approval {id} does not exist"
                )));
            };
            match before.state_at(now) {
                ApprovalState::Pending => {}
                ApprovalState::Expired => {
                    return Err(EngineError::FailedPrecondition(format!(
                        "approval {id} has expired"
                    )))
                }
                other => {
                    return Err(EngineError::FailedPrecondition(format!(
                        "approval {id} is already {} (by {})",
                        other.name(),
                        before.decided_by
                    )))
                }
            }
            // Four-eyes: neither the agent nor its accountable operator approves its action.
            let operator = s.operators.get(&before.agent_id).cloned();
            let four_eyes = if who.is_anonymous() {
                None
            } else if who.acts_for(&before.agent_id) {
                Some(format!(
                    "{} acts for agent {} and cannot decide its approvals",
                    who.name, before.agent_id
                ))
            } else if operator.as_deref() == Some(who.name.as_str()) {
                Some(format!("{} is the registered operator of agent {}; another operator must decide (four-eyes)", who.name, before.agent_id))
            } else if operator.is_none() && !policy.defaults.approval_without_operator {
                Some(format!(
                    "agent {} has no registered operator and the policy lets nobody approve for it",
                    before.agent_id
                ))
            } else {
                None
            };
            match four_eyes {
                Some(why) => Err(why),
                None => {
                    let mut after = before.clone();
                    after.state = if grant {
                        ApprovalState::Granted
                    } else {
                        ApprovalState::Denied
                    };
                    after.decided_by = who.name.clone();
                    after.decision_reason = reason.clone();
                    after.decided_ms = Some(now);
                    let mut ops = vec![StateOp::PutApproval(after.clone())];
                    if !grant {
                        if let Some(r) = &before.reservation {
                            if s.ledger.release(&r.id).is_some() {
                                ops.push(StateOp::SettleReservation { id: r.id.clone() });
                            }
                        }
                    }
                    s.approvals.put(after.clone());
                    Ok((before, after, ops))
                }
            }
        };
        let (before, after, ops) = match prepared {
            Ok(p) => p,
            Err(why) => {
                self.record_refusal(refused(why.clone())).await;
                return Err(EngineError::PermissionDenied(why));
            }
        };
        let draft = EntryDraft {
            ts_ms: now,
            kind: if grant {
                "approval.grant"
            } else {
                "approval.deny"
            }
            .into(),
            agent_id: after.agent_id.clone(),
            session_id: after.session_id.clone(),
            outcome: after.state.name().into(),
            body: json!({
                "approval_id": id,
                "approver": who.name,
                "reason": reason,
                "action_digest": after.action_digest,
                "policy_version": after.policy_version,
            })
            .into(),
        };
        match self.append(draft, ops).await {
            Ok(_) => {
                let _ = self.approval_events.send(after.clone());
                Ok(after)
            }
            Err(e) => {
                {
                    let mut s = self.lock();
                    if let (false, Some(r)) = (grant, &before.reservation) {
                        if !s.ledger.is_open(&r.id) && r.expires_ms > now {
                            s.ledger.reserve(r.clone());
                        }
                    }
                    // Put it back only if nothing newer (a refresh bringing the winner's
                    // decision) replaced this attempt meanwhile.
                    if s.approvals.get(id).is_some_and(|a| *a == after) {
                        s.approvals.put(before);
                    }
                }
                match e {
                    EngineError::Lost(why @ CommitRefusal::ApprovalConflict { .. }) => {
                        Err(self.lost_approval_race(id, why).await)
                    }
                    e => Err(e),
                }
            }
        }
    }

    /// Another replica decided the approval first (the sequencer refused this step).
    /// That is the same fault as deciding an approval no longer pending on one server,
    /// so it gets the same code, FAILED_PRECONDITION. The winner's decision is read
    /// before answering, so from the answer on this replica shows it too: no window in
    /// which the approval still looks pending here.
    async fn lost_approval_race(&self, id: &str, why: CommitRefusal) -> EngineError {
        if let Err(e) = self.refresh_control().await {
            tracing::warn!(error = %e, approval = id, "cannot re-read the approval after a lost race");
        }
        let now = self.now_ms();
        let state = self.approval(id).map(|a| (a.state_at(now), a.decided_by));
        match state {
            Some((st, by)) if st != ApprovalState::Pending => {
                EngineError::FailedPrecondition(format!(
                    "approval {id} is already {} (by {by}, on another replica)",
                    st.name()
                ))
            }
            _ => EngineError::FailedPrecondition(format!(
                "approval {id} was decided on another replica first: {why}"
            )),
        }
    }

    /// An approval as of now (an expired one reads as expired before the sweeper runs).
    pub fn approval(&self, id: &str) -> Option<Approval> {
        let now = self.now_ms();
        self.lock().approvals.get(id).cloned().map(|mut a| {
            a.state = a.state_at(now);
            a
        })
    }

    pub fn approvals(&self, agent: Option<&str>, state: Option<ApprovalState>) -> Vec<Approval> {
        let now = self.now_ms();
        self.lock()
            .approvals
            .list()
            .into_iter()
            .map(|mut a| {
                a.state = a.state_at(now);
                a
            })
            .filter(|a| {
                agent.is_none_or(|x| a.agent_id == x) && state.is_none_or(|st| a.state == st)
            })
            .collect()
    }

    /// Every approval change from now on.
    pub fn approval_changes(&self) -> tokio::sync::broadcast::Receiver<Approval> {
        self.approval_events.subscribe()
    }

    /// Marks approvals whose time ran out as expired, releases what they held, and
    /// audits each expiry once. Run periodically.
    pub async fn expire_approvals(&self) {
        let now = self.now_ms();
        let due = self.lock().approvals.due_to_expire(now);
        for before in due {
            let mut after = before.clone();
            after.state = ApprovalState::Expired;
            let mut ops = vec![StateOp::PutApproval(after.clone())];
            {
                let mut s = self.lock();
                if s.approvals.get(&before.id).map(|a| a.state) != Some(before.state) {
                    continue; // decided meanwhile
                }
                if let Some(r) = &before.reservation {
                    if s.ledger.release(&r.id).is_some() {
                        ops.push(StateOp::SettleReservation { id: r.id.clone() });
                    }
                }
                s.approvals.put(after.clone());
            }
            let draft = EntryDraft {
                ts_ms: now,
                kind: "approval.expire".into(),
                agent_id: after.agent_id.clone(),
                session_id: after.session_id.clone(),
                outcome: "expired".into(),
                body: json!({"approval_id": after.id, "was": before.state.name(), "expires_ts_ms": after.expires_ms}).into(),
            };
            match self.append(draft, ops).await {
                Ok(_) => {
                    let _ = self.approval_events.send(after);
                }
                Err(e) => {
                    tracing::error!(error = %e, approval = %before.id, "could not record an approval expiry; will retry");
                    self.lock().approvals.put(before);
                }
            }
        }
    }
}

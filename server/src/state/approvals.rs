//! Human approvals (SPEC §3.6). An approval is bound to the agent, the action digest
//! and the policy version; it expires, and it is single-use.

use super::Reservation;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    Pending,
    Granted,
    Denied,
    Expired,
    Consumed,
}

impl ApprovalState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Granted => "granted",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Consumed => "consumed",
        }
    }

    /// No further change can happen.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Denied | Self::Expired | Self::Consumed)
    }

    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Granted,
            Self::Denied,
            Self::Expired,
            Self::Consumed,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    /// Whether an approval stored in state `from` (`None`: not stored yet) may be
    /// written in state `self`: created pending; decided or expired only while pending;
    /// a grant expires or is consumed once. Checked under the sequencer lock, so of two
    /// replicas racing for one approval exactly one wins.
    pub fn may_follow(self, from: Option<Self>) -> bool {
        matches!(
            (from, self),
            (None, Self::Pending)
                | (
                    Some(Self::Pending),
                    Self::Granted | Self::Denied | Self::Expired
                )
                | (Some(Self::Granted), Self::Expired | Self::Consumed)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub id: String,
    pub agent_id: String,
    pub session_id: String,
    pub action_digest: String,
    pub action_summary: String,
    pub policy_version: String,
    pub reason: String,
    pub state: ApprovalState,
    pub requested_ms: i64,
    pub expires_ms: i64,
    pub decided_by: String,
    pub decision_reason: String,
    pub decided_ms: Option<i64>,
    /// Budget held while pending (and until consumed or expired).
    pub reservation: Option<Reservation>,
    /// The Evaluate that requested it.
    pub decision_id: String,
    /// The action as its audit entry records it (canonical JSON, sensitive argument
    /// values as digests): what the approver is asked to allow. Empty for approvals
    /// stored before arguments existed.
    #[serde(default)]
    pub action_json: String,
}

impl Approval {
    /// The state as of `now`: an undecided or unused approval past its expiry is expired.
    pub fn state_at(&self, now_ms: i64) -> ApprovalState {
        match self.state {
            ApprovalState::Pending | ApprovalState::Granted if now_ms >= self.expires_ms => {
                ApprovalState::Expired
            }
            s => s,
        }
    }
}

#[derive(Debug, Default)]
pub struct ApprovalBook {
    by_id: HashMap<String, Approval>,
}

impl ApprovalBook {
    pub fn get(&self, id: &str) -> Option<&Approval> {
        self.by_id.get(id)
    }

    pub fn put(&mut self, a: Approval) {
        self.by_id.insert(a.id.clone(), a);
    }

    pub fn remove(&mut self, id: &str) {
        self.by_id.remove(id);
    }

    pub fn list(&self) -> Vec<Approval> {
        let mut v: Vec<Approval> = self.by_id.values().cloned().collect();
        v.sort_by(|a, b| b.requested_ms.cmp(&a.requested_ms).then(b.id.cmp(&a.id)));
        v
    }

    /// Approvals still waiting for a human at `now_ms` (for the metrics gauge).
    pub fn pending_count(&self, now_ms: i64) -> usize {
        self.by_id
            .values()
            .filter(|a| a.state_at(now_ms) == ApprovalState::Pending)
            .count()
    }

    /// Approvals whose stored state is still open but whose time has run out.
    pub fn due_to_expire(&self, now_ms: i64) -> Vec<Approval> {
        self.by_id
            .values()
            .filter(|a| !a.state.is_final() && a.state_at(now_ms) == ApprovalState::Expired)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::ApprovalState::{self, *};

    #[test]
    fn each_approval_state_is_left_at_most_once_and_only_forwards() {
        assert!(Pending.may_follow(None));
        for to in [Granted, Denied, Expired] {
            assert!(to.may_follow(Some(Pending)), "{to:?}");
            assert!(!to.may_follow(None), "{to:?}");
            assert!(!to.may_follow(Some(to)), "{to:?} twice");
        }
        assert!(Consumed.may_follow(Some(Granted)));
        assert!(Expired.may_follow(Some(Granted)));
        for from in [Pending, Denied, Expired, Consumed] {
            assert!(!Consumed.may_follow(Some(from)), "{from:?} -> consumed");
        }
        assert!(!Granted.may_follow(Some(Denied)));
        assert!(!Pending.may_follow(Some(Pending)));
        for s in [Pending, Granted, Denied, Expired, Consumed] {
            assert_eq!(ApprovalState::parse(s.name()), Some(s));
        }
    }
}

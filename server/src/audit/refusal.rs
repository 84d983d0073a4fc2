//! Why the sequenced commit refused a submission: another replica (or an earlier
//! submission in the same batch) already changed what this one was decided against.
//! The engine turns each variant into its own answer (a lost budget race is a DENY, a
//! lost approval race a FAILED_PRECONDITION, a changed halt a retry), so the reason is a
//! type, never a message to be matched: rewording a message must not change behaviour.

use crate::state::ApprovalState;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The budget's cap was reached by reservations made on other replicas.
    BudgetExceeded,
    /// The loop guard's window filled up with calls served across replicas.
    LoopDetected {
        tool: String,
        count: u64,
        window_ms: i64,
        max_calls: u32,
    },
    /// The watchdog already halted for this condition (once per condition).
    WatchdogDone { condition: String },
    /// The halt this change was checked against is no longer the stored one.
    HaltChanged { target: String },
    /// The approval already left the state this transition starts from; `was` is the
    /// stored state (`None`: no such approval is stored).
    ApprovalConflict {
        id: String,
        was: Option<ApprovalState>,
    },
    /// The decision was already settled by a Record on another replica.
    DecisionRecorded { decision_id: String },
    /// The MCP tool pin this change was decided against is no longer the stored one.
    ToolPinChanged { server: String, tool: String },
}

impl Refusal {
    /// The machine-readable code, as a DENY or an error detail would carry it.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BudgetExceeded => "budget.exceeded",
            Self::LoopDetected { .. } => "loop.detected",
            Self::WatchdogDone { .. } => "watchdog.done",
            Self::HaltChanged { .. } => "halt.changed",
            Self::ApprovalConflict { .. } => "approval.conflict",
            Self::DecisionRecorded { .. } => "decision.recorded",
            Self::ToolPinChanged { .. } => "mcp.pin_changed",
        }
    }

    /// The sentence after the code: what happened, for the caller and the log.
    pub fn detail(&self) -> String {
        match self {
            Self::BudgetExceeded => "the budget was used up by another replica".into(),
            Self::LoopDetected {
                tool,
                count,
                window_ms,
                max_calls,
            } => {
                let window = humantime::format_duration(std::time::Duration::from_millis(
                    (*window_ms).max(0) as u64,
                ));
                format!(
                    "tool {tool:?} called {count} times in the last {window} in this session, across replicas; the limit is {max_calls}"
                )
            }
            Self::WatchdogDone { condition } => format!("already halted for {condition}"),
            Self::HaltChanged { target } => {
                format!("the halt on {target} was changed on another replica")
            }
            Self::ApprovalConflict { id, was } => format!(
                "approval {id} is already {} on another replica",
                was.map_or("missing", ApprovalState::name)
            ),
            Self::DecisionRecorded { decision_id } => format!(
                "decision {decision_id} was recorded by another replica; retry to get its answer"
            ),
            Self::ToolPinChanged { server, tool } => {
                format!("the pin of {server}/{tool} was changed on another replica")
            }
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.detail())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_starts_with_the_code_and_names_what_changed() {
        let r = Refusal::ApprovalConflict {
            id: "apr_1".into(),
            was: Some(ApprovalState::Expired),
        };
        assert_eq!(
            r.to_string(),
            "approval.conflict: approval apr_1 is already expired on another replica"
        );
        let r = Refusal::LoopDetected {
            tool: "t".into(),
            count: 3,
            window_ms: 60_000,
            max_calls: 3,
        };
        assert!(r
            .to_string()
            .starts_with("loop.detected: tool \"t\" called 3 times in the last 1m"));
        assert_eq!(
            Refusal::ApprovalConflict {
                id: "a".into(),
                was: None
            }
            .detail(),
            "approval a is already missing on another replica"
        );
    }
}

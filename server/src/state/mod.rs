//! The in-memory copy of run-time state that the pipeline reads. The database is the
//! truth; this copy is rebuilt from it at start (and after a failed commit), and every
//! change reaches it only together with an audit entry.

pub mod approvals;
pub mod consent;
pub mod halts;
pub mod ledger;
pub mod loops;
pub mod tool_pins;
pub mod trust;

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

pub use approvals::{Approval, ApprovalBook, ApprovalState};
pub use consent::{ConsentBook, ConsentCheck, ConsentGrant};
pub use halts::{Halt, HaltBoard, HaltMode, HaltTarget};
pub use ledger::{Amounts, Counter, CounterKey, Ledger, Reservation};
pub use loops::{LoopKey, LoopWindows};
pub use tool_pins::{CandidateState, PinBook, PinnedDefinition, ToolPin, Verdict};
pub use trust::{EffectiveTrust, TrustAssignment, TrustBook, TrustScopes};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// Last ALLOW; trust decays from here, so denied requests do not refresh trust.
    pub last_allowed_ms: Option<i64>,
    /// Last time `last_seen_ms` was written to the store; writes are coalesced.
    pub persisted_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceStatus {
    Live,
    Idle,
    Unresponsive,
}

impl PresenceStatus {
    /// The name stored in the `presence` table.
    pub fn name(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Idle => "idle",
            Self::Unresponsive => "unresponsive",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "live" => Some(Self::Live),
            "idle" => Some(Self::Idle),
            "unresponsive" => Some(Self::Unresponsive),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub status: PresenceStatus,
    pub last_heartbeat_ms: i64,
    /// The heartbeat whose silence the watchdog already halted the agent for (stored,
    /// so that is done once per silence across restarts and replicas).
    pub silence_halted_ms: Option<i64>,
}

/// An allowed decision that Record has not settled yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenDecision {
    pub decision_id: String,
    pub agent_id: String,
    pub session_id: String,
    pub model: Option<String>,
    pub reservation: Option<Reservation>,
    pub created_ms: i64,
}

/// A stored answer (`A`: an Evaluate's or a Record's result), replayed for a repeated
/// request id or a repeated Record. Kept as the typed result rather than its JSON: an
/// Evaluate with a request id would otherwise serialise its answer on the hot path only
/// for a replay that rarely comes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Memo<A> {
    pub agent_id: String,
    /// Digest of the request it answered; a reuse with another request is refused.
    pub fingerprint: String,
    /// The answer as sent, with its `audit_seq`.
    pub answer: A,
    pub audit_seq: u64,
    pub created_ms: i64,
}

/// Everything the pipeline and the admin RPCs read from memory.
#[derive(Debug, Default)]
pub struct RuntimeState {
    pub trust: TrustBook,
    pub consent: ConsentBook,
    pub ledger: Ledger,
    pub halts: HaltBoard,
    pub approvals: ApprovalBook,
    /// MCP tool pins (`tool_pins`).
    pub tool_pins: PinBook,
    /// Agent → principal name of its registered operator (from Heartbeat).
    pub operators: HashMap<String, String>,
    /// Agent → presence: the newest heartbeat this server received or read from the
    /// store (where every server writes the heartbeats it received).
    pub presence: HashMap<String, Presence>,
    /// Heartbeats received here and not yet written to the store (newest per agent).
    /// Sorted, so concurrent upserts of several servers lock rows in one order.
    pub presence_unsaved: BTreeMap<String, Presence>,
    /// Agents whose loop guard tripped since the watchdog last looked.
    pub loop_trips: std::collections::BTreeSet<String>,
    /// Conditions the watchdog already acted on, so it acts once per condition.
    pub watchdog_done: std::collections::HashSet<String>,
    pub loops: LoopWindows,
    pub agents: BTreeMap<String, AgentInfo>,
    pub sessions: HashMap<(String, String), i64>,
    pub open_decisions: HashMap<String, OpenDecision>,
    /// Decision id → Record answer.
    pub recorded: HashMap<String, Memo<crate::engine::RecordResult>>,
    /// Evaluate request id → answer.
    pub requests: HashMap<String, Memo<crate::engine::EvaluateResult>>,
    /// Request ids and decision ids being committed right now. Dropping the sender
    /// (when the commit finishes) wakes every retry waiting on it.
    pub in_flight: HashMap<String, tokio::sync::watch::Sender<()>>,
}

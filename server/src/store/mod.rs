//! Persistence. `Store` is the one boundary to the database and holds what every
//! backend does; `sqlite` holds all the SQL for the embedded default, `postgres` for
//! several replicas on one database. What only a replicated store does (the sequencer,
//! control refresh, leases, shared progress) is the separate `Replicated` capability,
//! reached through `Store::replicated`. Every write arrives as a batch of `CommitUnit`s
//! from the audit batcher, so state changes and their audit entries commit together.

pub mod admission;
mod audit_log;
mod postgres;
mod replicated;
mod rows;
mod sqlite;
mod sqlite_reader;
mod sqlite_writer;

pub use audit_log::AuditLog;
pub use postgres::PgStore;
pub use postgres::NOTIFY_CHANNEL;
pub use replicated::{BudgetGuard, Replicated, SequencedBatch};
pub use sqlite::{SqliteStore, MIGRATOR as SQLITE_MIGRATIONS};

use crate::audit::SealedEntry;
use crate::state::{Amounts, ConsentGrant, CounterKey, OpenDecision, Reservation, TrustAssignment};
use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => Self::NotFound,
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::TypeNotFound { .. } => Self::Corrupt(e.to_string()),
            sqlx::Error::Database(ref db) if db.is_unique_violation() => {
                Self::Conflict(db.message().to_owned())
            }
            other => Self::Unavailable(Box::new(other)),
        }
    }
}

/// A change to run-time state, written in the same transaction as its audit entry.
#[derive(Debug, Clone)]
pub enum StateOp {
    TouchAgent {
        agent_id: String,
        first_seen_ms: i64,
        last_seen_ms: i64,
        last_allowed_ms: Option<i64>,
    },
    StartSession {
        agent_id: String,
        session_id: String,
        started_ms: i64,
    },
    Reserve(Reservation),
    SettleReservation {
        id: String,
    },
    AddSpend {
        keys: Vec<CounterKey>,
        amounts: Amounts,
    },
    OpenDecision(OpenDecision),
    CloseDecision {
        decision_id: String,
    },
    /// Keeps a request's key for replay; its audit_seq is the seq of the unit's entry,
    /// from which the answer is rebuilt (`engine::replies`), so no copy is stored.
    Remember {
        kind: &'static str,
        key: String,
        agent_id: String,
        fingerprint: String,
        created_ms: i64,
    },
    SetTrust(TrustAssignment),
    PutConsent(ConsentGrant),
    RevokeConsent {
        agent_id: String,
        data_type: String,
        purpose: Option<String>,
    },
    PolicyLoad {
        version: String,
        source: String,
        loaded_ms: i64,
        accepted: bool,
        error: String,
        /// The bundle's bytes, for an accepted load (replicas adopt it from the
        /// database); `None` for a rejection.
        bundle: Option<std::sync::Arc<[u8]>>,
    },
    PutApproval(crate::state::Approval),
    SetOperator {
        agent_id: String,
        operator: String,
        set_by: String,
        set_ms: i64,
    },
    EngageHalt(crate::state::Halt),
    /// The halt on `target` that a halt change was checked against (its release rule,
    /// what a release lifts); `None`: no halt. Writes nothing. A shared store refuses
    /// the unit under the sequencer lock when the stored halt differs (another replica
    /// changed it); the embedded store's one server checks under `halt_changes`.
    ExpectHalt {
        target: crate::state::HaltTarget,
        current: Option<crate::state::Halt>,
    },
    LiftHalt {
        target: crate::state::HaltTarget,
    },
    /// The watchdog halted the agent for its silence since this heartbeat (written with
    /// the halt, so no server or restart halts it again for the same silence).
    SilenceHalted {
        agent_id: String,
        heartbeat_ms: i64,
    },
    /// A call counted by the loop guard. A shared store counts the window again under
    /// the sequencer lock (refusing the call past `max_calls`) and keeps the tick; the
    /// embedded store's single server counts exactly in memory and stores nothing.
    LoopTick {
        agent_id: String,
        session_id: String,
        tool: String,
        ts_ms: i64,
        window_ms: i64,
        max_calls: u32,
    },
    /// The watchdog halted an agent for this condition (`budget:…`, `loop:…`); written
    /// with the halt, refused under the sequencer lock if already marked.
    WatchdogMark {
        condition: String,
        marked_ms: i64,
    },
    CreatePrincipal(PrincipalRow),
    RevokePrincipal {
        name: String,
        revoked_ms: i64,
    },
    /// Stores an MCP tool pin (upsert by server and tool).
    PutToolPin(crate::state::ToolPin),
    /// The pin of (`server`, `tool`) a pin change was decided against (`None`: the tool
    /// was unknown). Writes nothing. A shared store refuses the unit under the sequencer
    /// lock when the stored pin differs, so a replica whose copy is behind can neither
    /// pin a first-seen definition another replica already pinned nor undo an operator's
    /// approval; the embedded store's one server serializes under `pin_changes`.
    ExpectToolPin {
        server: String,
        tool: String,
        current: Option<crate::state::ToolPin>,
    },
}

/// Merkle nodes completed by a batch and the checkpoint signed for it.
#[derive(Debug, Clone, Default)]
pub struct TreeUpdate {
    pub nodes: Vec<crate::audit::merkle::Node>,
    pub checkpoint: Option<CheckpointRow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRow {
    pub size: u64,
    pub root_hex: String,
    pub note: String,
    pub ts_ms: i64,
}

/// One audit entry and the state changes it records.
#[derive(Debug, Clone)]
pub struct CommitUnit {
    pub entry: SealedEntry,
    pub ops: Vec<StateOp>,
}

/// A stored replay answer.
#[derive(Debug, Clone)]
pub struct ReplyRow {
    pub kind: String,
    pub key: String,
    pub agent_id: String,
    pub fingerprint: String,
    /// The answer as stored by releases before issue 18 (a JSON copy); `None` for
    /// rows written since, whose answer is rebuilt from `entry`.
    pub response: Option<String>,
    pub audit_seq: u64,
    pub created_ms: i64,
    /// The canonical audit entry at `audit_seq` (read with the row), when `response`
    /// is `None`.
    pub entry: Option<String>,
}

/// The columns of a `replies` row joined to the canonical entry it answered, for
/// `rows::reply`; `FROM replies r` must be followed by `REPLY_JOIN`.
pub(crate) const REPLY_COLUMNS: &str = "r.kind, r.key, r.agent_id, r.fingerprint, \
     NULLIF(r.response, '') AS response, r.audit_seq, r.created_ms, \
     CASE WHEN r.response = '' THEN a.canonical END AS entry";
pub(crate) const REPLY_JOIN: &str = "LEFT JOIN audit_entries a ON a.seq = r.audit_seq";

/// An agent's newest heartbeat, as kept in the `presence` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRow {
    pub agent_id: String,
    pub status: crate::state::PresenceStatus,
    pub last_heartbeat_ms: i64,
    /// Written only with the watchdog's halt (`StateOp::SilenceHalted`); ignored by
    /// `Store::put_presence`.
    pub silence_halted_ms: Option<i64>,
}

/// Everything needed to rebuild the in-memory state.
#[derive(Debug, Default)]
pub struct StateImage {
    pub trust: Vec<TrustAssignment>,
    pub consent: Vec<ConsentGrant>,
    pub counters: Vec<(CounterKey, Amounts)>,
    pub reservations: Vec<Reservation>,
    pub open_decisions: Vec<OpenDecision>,
    /// (agent id, first seen, last seen, last allowed)
    pub agents: Vec<(String, i64, i64, Option<i64>)>,
    pub sessions: Vec<(String, String, i64)>,
    pub replies: Vec<ReplyRow>,
    pub halts: Vec<crate::state::Halt>,
    pub approvals: Vec<crate::state::Approval>,
    /// (agent id, operator principal name)
    pub operators: Vec<(String, String)>,
    pub tool_pins: Vec<crate::state::ToolPin>,
    /// Every principal, read in the control snapshot (`Replicated::load_control` only).
    pub principals: Option<Vec<PrincipalRow>>,
    /// Version of the newest published policy bundle (`Replicated::load_control` only).
    pub published_policy: Option<String>,
    /// Conditions the watchdog already halted for (`load` only).
    pub watchdog_marks: Vec<String>,
    pub presence: Vec<PresenceRow>,
}

/// Filter for audit queries; `None` fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub agent_id: Option<String>,
    pub session_id: Option<String>,
    pub kinds: Vec<String>,
    pub outcome: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Newest entries first (the `limit` newest after `after_seq`), else oldest first.
    pub newest_first: bool,
}

impl AuditQuery {
    pub fn matches(&self, e: &SealedEntry) -> bool {
        self.agent_id.as_ref().is_none_or(|a| *a == e.agent_id)
            && self.session_id.as_ref().is_none_or(|s| *s == e.session_id)
            && (self.kinds.is_empty() || self.kinds.contains(&e.kind))
            && self.outcome.as_ref().is_none_or(|o| *o == e.outcome)
            && self.since_ms.is_none_or(|t| e.ts_ms >= t)
            && self.until_ms.is_none_or(|t| e.ts_ms < t)
    }
}

/// A stored principal; the API key itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalRow {
    pub name: String,
    pub roles: Vec<crate::domain::Role>,
    pub agents: Vec<String>,
    /// SHA-256 of the API key; `None` for a principal that authenticates only by
    /// client certificate.
    pub key_hash: Option<String>,
    /// The key's first characters, to recognise it in lists and the audit log.
    pub key_prefix: Option<String>,
    /// The client-certificate identity this principal is bound to (mTLS).
    pub tls_identity: Option<crate::domain::TlsIdentity>,
    pub created_by: String,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
}

/// The same query on both backends: rows recorded before bundles were kept (and
/// rejections) have no bundle and are never adopted.
const PUBLISHED_POLICY: &str = "SELECT version, source, loaded_ms, bundle FROM policy_loads \
     WHERE accepted = 1 AND bundle IS NOT NULL ORDER BY id DESC LIMIT 1";

/// The newest accepted bundle on record, with the bytes it was compiled from.
#[derive(Debug, Clone)]
pub struct PublishedPolicy {
    pub version: String,
    pub source: String,
    pub loaded_ms: i64,
    pub bundle: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct PolicyLoadRow {
    pub version: String,
    pub source: String,
    pub loaded_ms: i64,
    pub accepted: bool,
    pub error: String,
}

/// Connections a store's pool holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections, idle or in use.
    pub size: u32,
    pub idle: u32,
    /// The pool's upper bound.
    pub max: u32,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap liveness probe used by health checks.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Whether a write commits now: health asks it, after a failed commit, before it
    /// reports SERVING again (a full disk still answers reads). Writes no audited state.
    async fn probe_write(&self) -> Result<(), StoreError> {
        self.ping().await
    }
    /// Highest sequence number and its MAC, if the log is not empty.
    async fn audit_head(&self) -> Result<Option<(u64, String)>, StoreError>;
    /// State to rebuild memory from; replies newer than `replies_since_ms` only.
    async fn load(&self, now_ms: i64, replies_since_ms: i64) -> Result<StateImage, StoreError>;
    /// Writes a batch of units and the tree nodes they complete in one transaction.
    async fn commit(&self, units: &[CommitUnit], tree: &TreeUpdate) -> Result<(), StoreError>;
    /// Writes tree nodes alone (rebuilding the tree of an older log at start).
    async fn put_tree(&self, tree: &TreeUpdate) -> Result<(), StoreError>;
    /// Entries in the log (equal to the head's seq in a whole log: seqs are gapless
    /// from 1); read once at start.
    async fn audit_count(&self) -> Result<u64, StoreError>;
    /// Leaves in the stored tree.
    async fn tree_size(&self) -> Result<u64, StoreError>;
    /// A stored perfect subtree hash.
    async fn node(&self, level: u32, index: u64) -> Result<Option<[u8; 32]>, StoreError>;
    /// Several stored nodes in one round trip (what a proof needs).
    async fn nodes(
        &self,
        wanted: &[(u32, u64)],
    ) -> Result<std::collections::HashMap<(u32, u64), [u8; 32]>, StoreError> {
        let mut out = std::collections::HashMap::new();
        for &(level, index) in wanted {
            if let Some(h) = self.node(level, index).await? {
                out.insert((level, index), h);
            }
        }
        Ok(out)
    }
    /// The newest checkpoint, or the one for exactly `size` leaves.
    async fn checkpoint(&self, size: Option<u64>) -> Result<Option<CheckpointRow>, StoreError>;
    /// Entries with `from_seq <= seq <= to_seq`, at most `limit`, in order.
    async fn audit_range(
        &self,
        from_seq: u64,
        to_seq: u64,
        limit: u32,
    ) -> Result<Vec<SealedEntry>, StoreError>;
    /// The same rows as `audit_range`, read the fastest way the backend has (bulk
    /// verification reads millions of them).
    async fn audit_page(
        &self,
        from_seq: u64,
        to_seq: u64,
        limit: u32,
    ) -> Result<Vec<SealedEntry>, StoreError> {
        self.audit_range(from_seq, to_seq, limit).await
    }
    /// Entries after `after_seq` that match, at most `limit`, in order.
    async fn query_audit(
        &self,
        q: &AuditQuery,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<SealedEntry>, StoreError>;
    /// Policy load attempts, newest first.
    async fn policy_loads(&self, limit: u32) -> Result<Vec<PolicyLoadRow>, StoreError>;
    /// The newest accepted load that carries its bundle: on a shared database, the
    /// policy every replica serves.
    async fn published_policy(&self) -> Result<Option<PublishedPolicy>, StoreError>;
    /// Every principal, revoked ones included.
    async fn principals(&self) -> Result<Vec<PrincipalRow>, StoreError>;
    /// Periodic housekeeping off the request path (SQLite: WAL checkpoint).
    async fn maintain(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// At a clean stop, after the last batch has committed (SQLite: truncate the WAL).
    async fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Connection pool usage, for the metrics endpoint; `None` when the backend has no pool.
    fn pool_stats(&self) -> Option<PoolStats> {
        None
    }
    /// A stored reply older than what memory keeps.
    async fn find_reply(&self, kind: &str, key: &str) -> Result<Option<ReplyRow>, StoreError>;
    /// Writes heartbeats in one statement per chunk, moving each agent's last heartbeat
    /// only forward. Presence is not audited state, so this is the one write that does
    /// not arrive through `commit` (ARCHITECTURE.md): heartbeats stay off the log and
    /// off the request path.
    async fn put_presence(&self, rows: &[PresenceRow]) -> Result<(), StoreError>;

    /// The capabilities of a store that several servers write (PostgreSQL), or `None`
    /// for the embedded store, whose one server is the only writer and decides in memory
    /// what a replicated store decides in the database. Callers branch on this; the
    /// single-writer path is their `None` arm, so it is not a no-op in disguise.
    fn replicated(&self) -> Option<&dyn Replicated> {
        None
    }
}

/// Whether an op changes control state other replicas must pick up.
pub fn is_control_op(op: &StateOp) -> bool {
    matches!(
        op,
        StateOp::SetTrust(_)
            | StateOp::PutConsent(_)
            | StateOp::RevokeConsent { .. }
            | StateOp::PutApproval(_)
            | StateOp::SetOperator { .. }
            | StateOp::EngageHalt(_)
            | StateOp::LiftHalt { .. }
            | StateOp::CreatePrincipal(_)
            | StateOp::RevokePrincipal { .. }
            | StateOp::PolicyLoad { .. }
            | StateOp::PutToolPin(_)
    )
}

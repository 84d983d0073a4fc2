//! What only a store that several servers write (PostgreSQL, several replicas on one
//! database) does: the sequenced batch that admits against the database under a lock,
//! the refresh of control state other replicas changed, singleton-job leases, and
//! progress shared between them. `Store::replicated` hands it out; the embedded store
//! has no such capability, because its one server is the only writer and decides all of
//! this exactly in memory, and every caller says what that single-writer path does in
//! its own `None` arm.

use super::{CommitUnit, PresenceRow, StateImage, StoreError, TreeUpdate};
use crate::state::{Amounts, CounterKey, OpenDecision};
use async_trait::async_trait;
use std::sync::Arc;

#[async_trait]
pub trait Replicated: Send + Sync + 'static {
    /// A batch transaction holding the sequencer lock: the batcher seals after the head
    /// read there and admits the batch's submissions against the database.
    async fn begin_sequenced(&self) -> Result<Box<dyn SequencedBatch>, StoreError>;
    /// Control state another replica may have changed (trust, consent, halts,
    /// approvals, operators, principals, the published policy version), the budget
    /// counters (settled spend) and agents changed by batches after
    /// `changed_after_seq`, and the audit head the snapshot reflects.
    async fn load_control(&self, changed_after_seq: u64) -> Result<(u64, StateImage), StoreError>;
    /// An allowed decision still awaiting Record that another replica may have made.
    async fn find_open_decision(
        &self,
        decision_id: &str,
    ) -> Result<Option<OpenDecision>, StoreError>;
    /// A signal each time any writer commits a control change (LISTEN/NOTIFY).
    fn watch_changes(&self) -> tokio::sync::mpsc::Receiver<()>;
    /// Every agent's newest heartbeat, whichever server received it.
    async fn shared_presence(&self) -> Result<Vec<PresenceRow>, StoreError>;
    /// Whether this server holds (or just took) the lease for a singleton job such as
    /// the watchdog; false while another replica holds it.
    async fn lead(&self, job: &'static str) -> bool;
    /// A singleton job's shared progress (the webhook delivery cursor), so the server
    /// that takes its lease over resumes there; `None` when never stored.
    async fn delivery_cursor(&self, name: &str) -> Result<Option<u64>, StoreError>;
    /// Moves a shared progress mark forward (never back).
    async fn store_delivery_cursor(&self, name: &str, seq: u64) -> Result<(), StoreError>;
    /// Deletes stored loop-guard calls older than `before_ms` (no window counts them).
    async fn prune_loop_ticks(&self, before_ms: i64) -> Result<(), StoreError>;
    /// A handle of its own on the same store (same pool, same leases), for a task that
    /// outlives the borrow `Store::replicated` gives (the notifier's lease).
    fn handle(&self) -> Arc<dyn Replicated>;
}

/// A new reservation, to be admitted against its budgets' caps in the database under
/// the sequencer lock, so replicas together never overshoot.
#[derive(Debug, Clone)]
pub struct BudgetGuard {
    /// Each counter with its caps: micro-USD, tokens, calls.
    pub keys: Vec<(CounterKey, [Option<u64>; 3])>,
    pub amounts: Amounts,
    pub now_ms: i64,
}

/// One group commit under the sequencer lock: the head is read after the lock is taken,
/// so the batch is sealed after whatever another server committed.
#[async_trait]
pub trait SequencedBatch: Send {
    /// Releases the reservations that ran out of time by `now_ms`, then reads what each
    /// counter of `keys` holds in the database (settled spend plus open reservations;
    /// nothing for a counter not stored yet): two statements however many keys, so a
    /// batch's budget admission costs two round trips under the lock, not one per
    /// reservation and counter (`store::admission::fits` does the arithmetic).
    async fn budget_usage(
        &mut self,
        keys: &[CounterKey],
        now_ms: i64,
    ) -> Result<std::collections::HashMap<CounterKey, Amounts>, StoreError>;
    /// Whether the decision is still awaiting Record (so exactly one Record settles it,
    /// whichever replica serves it).
    async fn decision_open(&mut self, decision_id: &str) -> Result<bool, StoreError>;
    /// An approval's stored state (`None` when it is not stored yet), so exactly one
    /// transition out of each state wins, whichever replica makes it.
    async fn approval_state(
        &mut self,
        id: &str,
    ) -> Result<Option<crate::state::ApprovalState>, StoreError>;
    /// Loop-guard calls stored for (agent, session, tool) after `since_ms`.
    async fn loop_calls(
        &mut self,
        agent_id: &str,
        session_id: &str,
        tool: &str,
        since_ms: i64,
    ) -> Result<u64, StoreError>;
    /// The halt stored on `target`, as of now, under the lock.
    async fn halt(
        &mut self,
        target: &crate::state::HaltTarget,
    ) -> Result<Option<crate::state::Halt>, StoreError>;
    /// The MCP tool pin stored for (`server`, `tool`), as of now, under the lock.
    async fn tool_pin(
        &mut self,
        server: &str,
        tool: &str,
    ) -> Result<Option<crate::state::ToolPin>, StoreError>;
    /// Whether the watchdog already halted for this condition (on any replica).
    async fn watchdog_marked(&mut self, condition: &str) -> Result<bool, StoreError>;
    /// The audit head as of now, under the lock.
    async fn head(&mut self) -> Result<Option<(u64, String)>, StoreError>;
    /// Writes the batch and its tree nodes, then commits (releasing the lock).
    async fn commit(
        self: Box<Self>,
        units: &[CommitUnit],
        tree: &TreeUpdate,
    ) -> Result<(), StoreError>;
}

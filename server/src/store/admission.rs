//! The rules a shared store's sequenced commit applies under its lock, one function per
//! rule: each replica decided against its own copy of the state, and the database is
//! the only place all of them meet. A submission that lost a race is refused with a
//! typed [`Refusal`] and writes nothing; what a kept submission writes is noted, so the
//! submissions after it in the same batch are checked against it too.
//!
//! The embedded store has one server, which decides exactly in memory; it never runs
//! these checks (docs/postgres.md, "Several replicas").

use super::{BudgetGuard, SequencedBatch, StateOp, StoreError};
use crate::audit::refusal::Refusal;
use crate::state::{Amounts, ApprovalState, CounterKey, Halt, ToolPin};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Why a submission is not admitted: a lost race, or a database that did not answer.
#[derive(Debug)]
pub enum Verdict {
    Refused(Refusal),
    Unavailable(StoreError),
}

impl From<StoreError> for Verdict {
    fn from(e: StoreError) -> Self {
        Self::Unavailable(e)
    }
}

/// What the submissions kept so far in this batch write, ahead of the database.
#[derive(Default)]
pub struct Admission {
    /// Reservations admitted earlier in this batch, per budget counter.
    pending: BTreeMap<CounterKey, Amounts>,
    /// What the database holds per capped counter (spend plus open reservations), read
    /// once per batch.
    stored: HashMap<CounterKey, Amounts>,
    closed: HashSet<String>,
    approvals: HashMap<String, Option<ApprovalState>>,
    marked: HashSet<String>,
    /// By halt target key.
    halts: HashMap<String, Option<Halt>>,
    /// Loop-guard calls, per (agent, session, tool).
    ticked: HashMap<(String, String, String), u64>,
    /// By (server, tool).
    pins: HashMap<(String, String), Option<ToolPin>>,
}

/// Whether any submission needs the sequenced checks (most batches do not).
pub fn needed(ops: &[StateOp], guard: Option<&BudgetGuard>) -> bool {
    guard.is_some()
        || ops.iter().any(|o| {
            matches!(
                o,
                StateOp::CloseDecision { .. }
                    | StateOp::PutApproval(_)
                    | StateOp::WatchdogMark { .. }
                    | StateOp::LoopTick { .. }
                    | StateOp::ExpectHalt { .. }
                    | StateOp::ExpectToolPin { .. }
            )
        })
}

/// Whether `guard` fits every cap: what the database holds, plus what this batch
/// admitted before it (`pending`), plus its own amounts.
pub fn fits(
    guard: &BudgetGuard,
    stored: &HashMap<CounterKey, Amounts>,
    pending: &BTreeMap<CounterKey, Amounts>,
) -> bool {
    guard.keys.iter().all(|(key, caps)| {
        let mut total = pending.get(key).copied().unwrap_or_default();
        total.add(guard.amounts);
        if let Some(held) = stored.get(key) {
            total.add(*held);
        }
        let used = [total.micro_usd, total.tokens, total.calls];
        caps.iter()
            .zip(used)
            .all(|(cap, used)| cap.is_none_or(|c| used <= c))
    })
}

impl Admission {
    /// Reads, in one call, what the database holds for every capped counter of
    /// `guards` not read yet in this batch. The batcher calls it with the whole batch
    /// first, so `admit` finds them all read; expiry is judged at the latest request
    /// time among them.
    pub async fn read_budgets<'g>(
        &mut self,
        batch: &mut dyn SequencedBatch,
        guards: impl Iterator<Item = &'g BudgetGuard>,
    ) -> Result<(), StoreError> {
        let mut keys = Vec::new();
        let mut now_ms = i64::MIN;
        for guard in guards {
            now_ms = now_ms.max(guard.now_ms);
            for (key, caps) in &guard.keys {
                if caps.iter().any(Option::is_some)
                    && !self.stored.contains_key(key)
                    && !keys.contains(key)
                {
                    keys.push(key.clone());
                }
            }
        }
        if keys.is_empty() {
            return Ok(());
        }
        let mut held = batch.budget_usage(&keys, now_ms).await?;
        for key in keys {
            // A counter not stored yet holds nothing.
            let amounts = held.remove(&key).unwrap_or_default();
            self.stored.insert(key, amounts);
        }
        Ok(())
    }

    /// Checks one submission against the database and this batch; on success notes
    /// what it writes. Nothing is noted for a refused submission.
    pub async fn admit(
        &mut self,
        batch: &mut dyn SequencedBatch,
        ops: &[StateOp],
        guard: Option<&BudgetGuard>,
    ) -> Result<(), Verdict> {
        for op in ops {
            match op {
                StateOp::LoopTick { .. } => self.loop_window(batch, op).await?,
                StateOp::WatchdogMark { condition, .. } => {
                    self.watchdog_once(batch, condition).await?
                }
                StateOp::ExpectHalt { target, current } => {
                    let stored = match self.halts.get(&target.key()) {
                        Some(h) => h.clone(),
                        None => batch.halt(target).await?,
                    };
                    if stored != *current {
                        return Err(Verdict::Refused(Refusal::HaltChanged {
                            target: target.describe(),
                        }));
                    }
                }
                StateOp::ExpectToolPin {
                    server,
                    tool,
                    current,
                } => self.pin_unchanged(batch, server, tool, current).await?,
                StateOp::PutApproval(a) => {
                    let stored = match self.approvals.get(&a.id) {
                        Some(s) => *s,
                        None => batch.approval_state(&a.id).await?,
                    };
                    if !a.state.may_follow(stored) {
                        return Err(Verdict::Refused(Refusal::ApprovalConflict {
                            id: a.id.clone(),
                            was: stored,
                        }));
                    }
                }
                StateOp::CloseDecision { decision_id } => {
                    self.record_once(batch, decision_id).await?
                }
                _ => {}
            }
        }
        if let Some(guard) = guard {
            self.read_budgets(batch, std::iter::once(guard)).await?;
            if !fits(guard, &self.stored, &self.pending) {
                return Err(Verdict::Refused(Refusal::BudgetExceeded));
            }
            for (key, _) in &guard.keys {
                self.pending
                    .entry(key.clone())
                    .or_default()
                    .add(guard.amounts);
            }
        }
        self.note(ops);
        Ok(())
    }

    /// The loop guard counts every replica's calls in the window.
    async fn loop_window(
        &self,
        batch: &mut dyn SequencedBatch,
        op: &StateOp,
    ) -> Result<(), Verdict> {
        let StateOp::LoopTick {
            agent_id,
            session_id,
            tool,
            ts_ms,
            window_ms,
            max_calls,
        } = op
        else {
            return Ok(());
        };
        let stored = batch
            .loop_calls(agent_id, session_id, tool, ts_ms - window_ms)
            .await?;
        let key = (agent_id.clone(), session_id.clone(), tool.clone());
        let count = stored + self.ticked.get(&key).copied().unwrap_or(0);
        if count + 1 > u64::from(*max_calls) {
            return Err(Verdict::Refused(Refusal::LoopDetected {
                tool: tool.clone(),
                count,
                window_ms: *window_ms,
                max_calls: *max_calls,
            }));
        }
        Ok(())
    }

    /// The watchdog halts once per condition, whichever replica holds its lease.
    async fn watchdog_once(
        &self,
        batch: &mut dyn SequencedBatch,
        condition: &str,
    ) -> Result<(), Verdict> {
        if self.marked.contains(condition) || batch.watchdog_marked(condition).await? {
            return Err(Verdict::Refused(Refusal::WatchdogDone {
                condition: condition.to_owned(),
            }));
        }
        Ok(())
    }

    /// A pin change applies to the pin it was decided against, or not at all.
    async fn pin_unchanged(
        &self,
        batch: &mut dyn SequencedBatch,
        server: &str,
        tool: &str,
        current: &Option<ToolPin>,
    ) -> Result<(), Verdict> {
        let key = (server.to_owned(), tool.to_owned());
        let stored = match self.pins.get(&key) {
            Some(p) => p.clone(),
            None => batch.tool_pin(server, tool).await?,
        };
        if stored != *current {
            return Err(Verdict::Refused(Refusal::ToolPinChanged {
                server: server.to_owned(),
                tool: tool.to_owned(),
            }));
        }
        Ok(())
    }

    /// A Record settles its decision once, whichever replica serves it.
    async fn record_once(
        &mut self,
        batch: &mut dyn SequencedBatch,
        decision_id: &str,
    ) -> Result<(), Verdict> {
        if self.closed.contains(decision_id) || !batch.decision_open(decision_id).await? {
            return Err(Verdict::Refused(Refusal::DecisionRecorded {
                decision_id: decision_id.to_owned(),
            }));
        }
        Ok(())
    }

    /// Records what a kept submission writes, for the submissions after it.
    fn note(&mut self, ops: &[StateOp]) {
        for op in ops {
            match op {
                StateOp::LoopTick {
                    agent_id,
                    session_id,
                    tool,
                    ..
                } => {
                    *self
                        .ticked
                        .entry((agent_id.clone(), session_id.clone(), tool.clone()))
                        .or_default() += 1;
                }
                StateOp::PutApproval(a) => {
                    self.approvals.insert(a.id.clone(), Some(a.state));
                }
                StateOp::WatchdogMark { condition, .. } => {
                    self.marked.insert(condition.clone());
                }
                StateOp::EngageHalt(h) => {
                    self.halts.insert(h.target.key(), Some(h.clone()));
                }
                StateOp::LiftHalt { target } => {
                    self.halts.insert(target.key(), None);
                }
                StateOp::CloseDecision { decision_id } => {
                    self.closed.insert(decision_id.clone());
                }
                StateOp::PutToolPin(p) => {
                    self.pins
                        .insert((p.server.clone(), p.tool.clone()), Some(p.clone()));
                }
                _ => {}
            }
        }
    }
}

use super::entries::{RecordBody, UsageEntry};
use super::{Engine, EngineError};
use crate::audit::refusal::Refusal;
use crate::audit::EntryDraft;
use crate::domain::MicroUsd;
use crate::state::{Amounts, Memo, OpenDecision, Reservation};
use crate::store::StateOp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOutcome {
    Success,
    Failure,
    Error,
}

impl RecordOutcome {
    pub fn name(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Error => "error",
        }
    }
}

/// A validated Record request.
#[derive(Debug, Clone)]
pub struct RecordInput {
    pub decision_id: String,
    pub outcome: RecordOutcome,
    pub model: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub micro_usd: Option<MicroUsd>,
    pub duration_ms: u64,
    pub output_digest: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordResult {
    pub audit_seq: u64,
    pub actual: Amounts,
    pub reserved: Amounts,
    pub overspend: bool,
    pub reservation_expired: bool,
    #[serde(skip)]
    pub duplicate: bool,
}

/// One try at a Record: its answer, or the Record for the same decision that is being
/// committed right now, to wait for.
enum Attempt {
    Done(RecordResult),
    Wait(tokio::sync::watch::Receiver<()>),
}

impl Engine {
    /// Settles a decision's reservation with what the action really used. A second
    /// Record for the same decision returns the first answer and writes nothing; one
    /// that arrives while the first commits waits for it and answers its result (the
    /// open decision is gone from memory by then, and NOT_FOUND would be false).
    pub async fn record(
        &self,
        input: RecordInput,
        who: &crate::domain::Principal,
    ) -> Result<RecordResult, EngineError> {
        loop {
            match self.record_attempt(&input, who).await? {
                Attempt::Done(result) => return Ok(result),
                Attempt::Wait(mut first) => {
                    // The sender is dropped when the first Record's commit ends.
                    let waited =
                        tokio::time::timeout(std::time::Duration::from_secs(10), first.changed())
                            .await;
                    if waited.is_err() {
                        return Err(EngineError::Aborted(format!(
                            "a Record for decision {} is still being written; retry shortly",
                            input.decision_id
                        )));
                    }
                }
            }
        }
    }

    /// One try: adopt a decision another replica opened, check who may record it, then
    /// answer a duplicate, wait for a Record in flight, or stage and commit this one.
    async fn record_attempt(
        &self,
        input: &RecordInput,
        who: &crate::domain::Principal,
    ) -> Result<Attempt, EngineError> {
        let now = self.now_ms();
        let policy = self.policy();
        let in_flight_key = format!("record:{}", input.decision_id);
        if let Some(wait) = self
            .adopt_shared_decision(input, &in_flight_key, now)
            .await?
        {
            return Ok(wait);
        }
        self.check_owner(input, who).await?;
        let staged = {
            let mut s = self.lock();
            if let Some(memo) = s.recorded.get(&input.decision_id) {
                return duplicate(memo).map(Attempt::Done);
            }
            if let Some(first) = s.in_flight.get(&in_flight_key) {
                return Ok(Attempt::Wait(first.subscribe()));
            }
            self.stage_record(&mut s, input, &policy, &in_flight_key, now)
        };
        match staged {
            Some(staged) => self.commit_record(input, staged, &in_flight_key, now).await,
            // Not in memory: an answer older than memory keeps, or no such decision.
            None => self.stored_record_reply(input, who).await,
        }
    }

    /// A decision made by another replica on a shared database: adopt the open
    /// decision (and its reservation) so this replica can settle it; the database
    /// admits one Record. `Some(Wait)` when a Record for it is being committed here.
    async fn adopt_shared_decision(
        &self,
        input: &RecordInput,
        in_flight_key: &str,
        now: i64,
    ) -> Result<Option<Attempt>, EngineError> {
        let known = {
            let s = self.lock();
            if let Some(first) = s.in_flight.get(in_flight_key) {
                return Ok(Some(Attempt::Wait(first.subscribe())));
            }
            s.recorded.contains_key(&input.decision_id)
                || s.open_decisions.contains_key(&input.decision_id)
        };
        // A single writer made every open decision itself: it is in memory or gone.
        if let (false, Some(replicated)) = (known, self.store.replicated()) {
            if let Some(open) = replicated.find_open_decision(&input.decision_id).await? {
                let mut s = self.lock();
                if let Some(r) = &open.reservation {
                    if !s.ledger.is_open(&r.id) && r.expires_ms > now {
                        s.ledger.reserve(r.clone());
                    }
                }
                s.open_decisions
                    .entry(open.decision_id.clone())
                    .or_insert(open);
            }
        }
        Ok(None)
    }

    /// Only a principal acting for the decision's agent may record it; a refusal is
    /// recorded as one.
    async fn check_owner(
        &self,
        input: &RecordInput,
        who: &crate::domain::Principal,
    ) -> Result<(), EngineError> {
        let owner = {
            let s = self.lock();
            s.recorded
                .get(&input.decision_id)
                .map(|m| m.agent_id.clone())
                .or_else(|| {
                    s.open_decisions
                        .get(&input.decision_id)
                        .map(|d| d.agent_id.clone())
                })
        };
        if let Some(agent) = owner.filter(|a| !who.acts_for(a)) {
            let reason = format!(
                "Record for a decision of agent {agent} requires an agent principal bound to it"
            );
            self.record_refusal(crate::auth::Refusal {
                principal: who.name.clone(),
                rpc: "Record",
                reason: reason.clone(),
            })
            .await;
            return Err(EngineError::PermissionDenied(reason));
        }

        Ok(())
    }

    /// Settles the open decision in memory (spend, the reservation released, the
    /// decision closed) and builds its entry and state changes; `None` when the
    /// decision is not open here. Marks the Record in flight.
    fn stage_record(
        &self,
        s: &mut crate::state::RuntimeState,
        input: &RecordInput,
        policy: &crate::policy::CompiledPolicy,
        in_flight_key: &str,
        now: i64,
    ) -> Option<Staged> {
        let open = s.open_decisions.get(&input.decision_id).cloned()?;
        s.in_flight
            .insert(in_flight_key.to_owned(), tokio::sync::watch::channel(()).0);
        let model = input.model.clone().or(open.model.clone());
        let price = model.as_deref().and_then(|m| policy.prices.get(m));
        // A model without a price and no reported cost is charged $0 but flagged.
        let unpriced = input.micro_usd.is_none() && model.is_some() && price.is_none();
        let micro_usd = match (input.micro_usd, price) {
            (Some(m), _) => m.0,
            (None, Some(p)) => p.cost(input.input_tokens, input.output_tokens).0,
            (None, None) => 0,
        };
        let actual = Amounts {
            micro_usd,
            tokens: input.input_tokens.saturating_add(input.output_tokens),
            calls: 1,
        };
        let mut ops = Vec::new();
        let mut reopened = None;
        let (reserved, expired) = match &open.reservation {
            Some(r) => {
                let was_open = s.ledger.release(&r.id).is_some();
                if was_open {
                    reopened = Some(r.clone());
                }
                s.ledger.add_spent(&r.keys, actual);
                ops.push(StateOp::SettleReservation { id: r.id.clone() });
                ops.push(StateOp::AddSpend {
                    keys: r.keys.clone(),
                    amounts: actual,
                });
                (r.amounts, !was_open)
            }
            None => (Amounts::default(), false),
        };
        s.open_decisions.remove(&input.decision_id);
        ops.push(StateOp::CloseDecision {
            decision_id: input.decision_id.clone(),
        });
        let result = RecordResult {
            audit_seq: 0,
            actual,
            reserved,
            overspend: open.reservation.is_some() && actual.exceeds(reserved),
            reservation_expired: expired,
            duplicate: false,
        };
        ops.push(StateOp::Remember {
            kind: "record",
            key: input.decision_id.clone(),
            agent_id: open.agent_id.clone(),
            fingerprint: String::new(),
            created_ms: now,
        });
        let draft = EntryDraft {
            ts_ms: now,
            kind: "record".into(),
            agent_id: open.agent_id.clone(),
            session_id: open.session_id.clone(),
            outcome: input.outcome.name().into(),
            body: RecordBody {
                actual: actual.into(),
                decision_id: &input.decision_id,
                duration_ms: input.duration_ms,
                metadata: self.redact(policy, &input.metadata),
                output_digest: input.output_digest.as_deref(),
                overspend: result.overspend,
                reservation_expired: expired,
                reservation_id: open.reservation.as_ref().map(|r| r.id.as_str()),
                reserved: reserved.into(),
                unpriced,
                usage: UsageEntry {
                    input_tokens: input.input_tokens,
                    micro_usd: input.micro_usd.map(|m| m.0),
                    model: model.as_deref(),
                    output_tokens: input.output_tokens,
                },
            }
            .body(),
        };
        Some(Staged {
            open,
            result,
            draft,
            ops,
            reopened,
        })
    }

    /// Commits a staged Record and answers it, or takes its memory changes back.
    async fn commit_record(
        &self,
        input: &RecordInput,
        staged: Staged,
        in_flight_key: &str,
        now: i64,
    ) -> Result<Attempt, EngineError> {
        let Staged {
            open,
            result,
            draft,
            ops,
            reopened,
        } = staged;
        let committed = self.batcher.append(draft, ops).await;
        let mut s = self.lock();
        s.in_flight.remove(in_flight_key);
        match committed {
            Ok(c) => {
                let mut result = result;
                result.audit_seq = c.seq;
                s.recorded.insert(
                    input.decision_id.clone(),
                    Memo {
                        agent_id: open.agent_id,
                        fingerprint: String::new(),
                        answer: result.clone(),
                        audit_seq: c.seq,
                        created_ms: now,
                    },
                );
                Ok(Attempt::Done(result))
            }
            Err(e) => {
                if let Some(r) = &open.reservation {
                    s.ledger.remove_spent(&r.keys, result.actual);
                }
                if matches!(
                    e,
                    crate::audit::batcher::CommitError::Refused(Refusal::DecisionRecorded { .. })
                ) {
                    // Another replica recorded it: forget it here, so a retry answers
                    // from the stored reply.
                    return Err(e.into());
                }
                if let Some(r) = reopened {
                    s.ledger.reserve(r);
                }
                s.open_decisions.insert(open.decision_id.clone(), open);
                Err(e.into())
            }
        }
    }

    /// The answer to a Record of a decision memory no longer holds: the stored reply,
    /// if it is still in the log, else NOT_FOUND.
    async fn stored_record_reply(
        &self,
        input: &RecordInput,
        who: &crate::domain::Principal,
    ) -> Result<Attempt, EngineError> {
        match self.store.find_reply("record", &input.decision_id).await? {
            Some(row) if !who.acts_for(&row.agent_id) => {
                Err(EngineError::PermissionDenied(format!(
                    "Record for a decision of agent {} requires an agent principal bound to it",
                    row.agent_id
                )))
            }
            Some(row) => match super::replies::memo_from_row(row)? {
                Some(memo) => duplicate(&memo).map(Attempt::Done),
                None => Err(not_awaiting(&input.decision_id)),
            },
            None => Err(not_awaiting(&input.decision_id)),
        }
    }
}

/// A Record settled in memory, waiting for its commit.
struct Staged {
    open: OpenDecision,
    result: RecordResult,
    draft: EntryDraft,
    ops: Vec<StateOp>,
    /// The reservation released here, to reopen if the commit fails.
    reopened: Option<Reservation>,
}

fn duplicate(memo: &Memo<RecordResult>) -> Result<RecordResult, EngineError> {
    let mut r = memo.answer.clone();
    r.audit_seq = memo.audit_seq;
    r.duplicate = true;
    Ok(r)
}

fn not_awaiting(decision_id: &str) -> EngineError {
    EngineError::NotFound(format!(
        "decision_id: {decision_id} is not an allowed decision awaiting Record"
    ))
}

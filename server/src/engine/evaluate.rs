use super::entries::{DelegationEntry, EvaluateBody, ReservationEntry};
use super::{new_id, Engine, EngineError};
use crate::audit::batcher::CommitError;
use crate::audit::refusal::Refusal;
use crate::audit::EntryDraft;
use crate::delegation::TokenCheck;
use crate::domain::{Action, AgentId, ParseError, SessionId, TrustLevel};
use crate::pipeline::{self, ApprovalIntent, Reason, Snapshot, Verdict};
use crate::policy::CompiledPolicy;
use crate::state::RuntimeState;
use crate::state::{Amounts, Approval, ApprovalState, Memo, OpenDecision, Reservation};
use crate::store::StateOp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use tracing::Instrument;

/// A validated Evaluate request.
#[derive(Debug, Clone)]
pub struct EvaluateInput {
    pub agent_id: AgentId,
    pub session_id: Option<SessionId>,
    pub action: Action,
    pub request_id: Option<String>,
    pub explain: bool,
    pub receipt: bool,
    pub min_trust: Option<TrustLevel>,
    pub approval_id: Option<String>,
    pub delegation_token: Option<String>,
    pub context: BTreeMap<String, String>,
}

/// The answer, as sent and as stored for replays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvaluateResult {
    pub verdict: Verdict,
    pub reasons: Vec<Reason>,
    pub decision_id: String,
    pub audit_seq: u64,
    pub policy_version: String,
    pub action_digest: String,
    pub reservation_id: Option<String>,
    pub reservation_expires_ms: Option<i64>,
    pub reserved: Amounts,
    #[serde(default)]
    pub approval_id: Option<String>,
    #[serde(skip)]
    pub replayed: bool,
}

/// The one-line summary an approver reads: what is done, with the recorded (redacted)
/// arguments, shortened; the full action is in the approval's `action_json`.
fn approval_summary(
    action: &Action,
    recorded: Option<&serde_json::Map<String, serde_json::Value>>,
) -> String {
    const MAX_ARGS: usize = 240;
    let mut text = action.summary();
    if let Some(args) = recorded {
        let args = serde_json::to_string(args).expect("a JSON object serializes");
        if args.chars().count() > MAX_ARGS {
            let cut: String = args.chars().take(MAX_ARGS).collect();
            text.push_str(&format!(" with {cut}…"));
        } else {
            text.push_str(&format!(" with {args}"));
        }
    }
    text
}

impl EvaluateInput {
    /// What must match for a repeated request id to be a retry rather than a reuse.
    fn fingerprint(&self, digest: &str) -> String {
        let text = format!(
            "{}\n{}\n{}\n{}\n{:?}\n{}",
            self.agent_id,
            self.session_id.as_ref().map(|s| s.as_str()).unwrap_or(""),
            digest,
            self.explain,
            self.min_trust,
            self.delegation_token.as_deref().unwrap_or("")
        );
        hex::encode(Sha256::digest(text.as_bytes()))
    }
}

/// One Evaluate's facts, computed once before the lock and shared by every step.
struct Call<'a> {
    input: &'a EvaluateInput,
    policy: &'a CompiledPolicy,
    token: Option<&'a TokenCheck>,
    digest: &'a str,
    fingerprint: &'a str,
    /// The arguments as the log records them (redacted).
    recorded_arguments: Option<&'a serde_json::Map<String, serde_json::Value>>,
    now: i64,
}

impl Call<'_> {
    fn agent(&self) -> &str {
        self.input.agent_id.as_str()
    }

    fn session(&self) -> Option<&str> {
        self.input.session_id.as_ref().map(|s| s.as_str())
    }
}

/// What the pipeline decided and what that changed in memory.
struct Decided {
    decision: pipeline::Decision,
    decision_id: String,
    reservation: Option<Reservation>,
    approval_id: Option<String>,
    ops: Vec<StateOp>,
    undo: Undo,
}

/// What one Evaluate decided and changed in memory, ready to commit.
struct Staged {
    result: EvaluateResult,
    draft: EntryDraft,
    ops: Vec<StateOp>,
    undo: Undo,
    /// Whether the answer is kept for replays of its request id.
    remember: bool,
    guard: Option<crate::store::BudgetGuard>,
}

impl Engine {
    /// Decides, reserves and audits one action. See the module docs for the commit rule.
    pub async fn evaluate(&self, input: EvaluateInput) -> Result<EvaluateResult, EngineError> {
        let token = input
            .delegation_token
            .as_deref()
            .map(|t| self.tokens.check(t));
        let policy = self.policy();
        let digest = input.action.digest();
        let fingerprint = input.fingerprint(&digest.0);
        let in_flight_key = input.request_id.as_ref().map(|r| format!("evaluate:{r}"));
        if let Some(replayed) = self
            .claim_request_id(&input, in_flight_key.as_deref(), &fingerprint)
            .await?
        {
            return Ok(replayed);
        }
        let recorded_arguments = self.recorded_arguments(&policy, &input.action);
        let call = Call {
            input: &input,
            policy: &policy,
            token: token.as_ref(),
            digest: &digest.0,
            fingerprint: &fingerprint,
            recorded_arguments: recorded_arguments.as_ref(),
            now: self.now_ms(),
        };
        let staged = self.decide_and_stage(&call);
        self.commit_staged(&call, staged, in_flight_key.as_deref())
            .await
    }

    /// Claims the request id. A retry that overtakes its original waits for the
    /// original's answer and replays it instead of failing or deciding twice; a replay
    /// is answered from memory and writes nothing.
    async fn claim_request_id(
        &self,
        input: &EvaluateInput,
        in_flight_key: Option<&str>,
        fingerprint: &str,
    ) -> Result<Option<EvaluateResult>, EngineError> {
        let (Some(key), Some(rid)) = (in_flight_key, &input.request_id) else {
            return Ok(None);
        };
        loop {
            let mut pending = {
                let mut s = self.lock();
                if let Some(memo) = s.requests.get(rid.as_str()) {
                    return replay(memo, input.agent_id.as_str(), fingerprint).map(Some);
                }
                match s.in_flight.get(key) {
                    Some(tx) => tx.subscribe(),
                    None => {
                        s.in_flight
                            .insert(key.to_owned(), tokio::sync::watch::channel(()).0);
                        return Ok(None);
                    }
                }
            };
            if tokio::time::timeout(std::time::Duration::from_secs(10), pending.changed())
                .await
                .is_err()
            {
                return Err(EngineError::Aborted(format!(
                    "request_id {rid:?} is still being evaluated; retry shortly"
                )));
            }
        }
    }

    /// Runs the pipeline under the state lock and applies what it decided to memory,
    /// collecting the state ops to commit and how to take them back.
    fn decide_and_stage(&self, call: &Call<'_>) -> Staged {
        let (agent, session, now) = (call.agent(), call.session(), call.now);
        let mut s = self.lock();
        s.ledger.release_expired(now);
        let held = take_held_reservation(&mut s, call);
        let decision = pipeline::run(
            &pipeline::Request {
                agent_id: agent,
                session_id: session,
                action: &call.input.action,
                min_trust: call.input.min_trust,
                explain: call.input.explain,
                approval_id: call.input.approval_id.as_deref(),
                delegation: call.token,
            },
            &Snapshot {
                policy: call.policy,
                state: &s,
                now_ms: now,
                store_available: self.store_available(),
            },
        );
        if decision.reasons.iter().any(|r| r.code == "loop.detected") {
            s.loop_trips.insert(agent.to_owned());
        }
        let decision_id = new_id("dec");
        let mut ops = Vec::new();
        let mut undo = Undo::default();
        let allowed = decision.verdict == Verdict::Allow;
        Self::touch(&mut s, agent, session, allowed, now, &mut ops);
        let reservation = planned_reservation(call, &decision, &decision_id);
        match (&held, decision.verdict) {
            (Some(r), Verdict::Allow) => {
                ops.push(StateOp::SettleReservation { id: r.id.clone() });
                undo.held = Some(r.clone());
            }
            (Some(r), _) => s.ledger.reserve(r.clone()),
            (None, _) => {}
        }
        let approval_id = stage_approval(
            &mut s,
            call,
            &decision.intents.approval,
            &reservation,
            &decision_id,
            &mut ops,
            &mut undo,
        );
        if let Some(r) = &reservation {
            s.ledger.reserve(r.clone());
            ops.push(StateOp::Reserve(r.clone()));
            undo.reservation = Some(r.id.clone());
        }
        if let Some(call_key) = decision.intents.loop_call.clone() {
            stage_loop_call(&mut s, call, call_key, &mut ops, &mut undo);
        }
        if allowed {
            let open = open_decision(call, &decision_id, &reservation);
            s.open_decisions.insert(decision_id.clone(), open.clone());
            ops.push(StateOp::OpenDecision(open));
            undo.open_decision = Some(decision_id.clone());
        }
        drop(s);
        self.staged(
            call,
            Decided {
                decision,
                decision_id,
                reservation,
                approval_id,
                ops,
                undo,
            },
        )
    }

    /// The answer, its replay copy, its audit entry and its budget guard, built outside
    /// the state lock from what was decided under it.
    fn staged(&self, call: &Call<'_>, d: Decided) -> Staged {
        let Decided {
            decision,
            decision_id,
            reservation,
            approval_id,
            mut ops,
            undo,
        } = d;
        let (agent, now) = (call.agent(), call.now);
        let result = EvaluateResult {
            verdict: decision.verdict,
            reasons: decision.reasons,
            decision_id,
            audit_seq: 0,
            policy_version: call.policy.version.clone(),
            action_digest: call.digest.to_owned(),
            reservation_id: reservation.as_ref().map(|r| r.id.clone()),
            reservation_expires_ms: reservation.as_ref().map(|r| r.expires_ms),
            reserved: reservation.as_ref().map(|r| r.amounts).unwrap_or_default(),
            approval_id,
            replayed: false,
        };
        // Stored with audit_seq 0; a replay takes the seq from the memo.
        let remember = call.input.request_id.as_ref().is_some_and(|rid| {
            ops.push(StateOp::Remember {
                kind: "evaluate",
                key: rid.clone(),
                agent_id: agent.to_owned(),
                fingerprint: call.fingerprint.to_owned(),
                created_ms: now,
            });
            true
        });
        let draft = self.evaluate_entry(call, &result, reservation.as_ref());
        let guard = reservation
            .as_ref()
            .map(|r| budget_guard(call.policy, r, now));
        Staged {
            result,
            draft,
            ops,
            undo,
            remember,
            guard,
        }
    }

    /// The audit entry of one decision.
    fn evaluate_entry(
        &self,
        call: &Call<'_>,
        result: &EvaluateResult,
        reservation: Option<&Reservation>,
    ) -> EntryDraft {
        EntryDraft {
            ts_ms: call.now,
            kind: "evaluate".into(),
            agent_id: call.agent().to_owned(),
            session_id: call.session().unwrap_or("").to_owned(),
            outcome: result.verdict.name().to_owned(),
            body: EvaluateBody {
                action: call.input.action.json_with(call.recorded_arguments),
                action_digest: call.digest,
                approval_id: result.approval_id.as_deref(),
                context: self.redact(call.policy, &call.input.context),
                decision_id: &result.decision_id,
                delegation: call.token.map(DelegationEntry::of),
                explain: call.input.explain,
                min_trust: call.input.min_trust.map(|l| l.name()),
                policy_version: &call.policy.version,
                reasons: &result.reasons,
                request_id: call.input.request_id.as_deref(),
                reservation: reservation.map(ReservationEntry::of),
            }
            .body(),
        }
    }

    /// Commits the staged decision and answers it, or takes its memory changes back;
    /// a race lost to another replica is answered (and logged) as the denial it is.
    async fn commit_staged(
        &self,
        call: &Call<'_>,
        staged: Staged,
        in_flight_key: Option<&str>,
    ) -> Result<EvaluateResult, EngineError> {
        let Staged {
            result,
            draft,
            ops,
            undo,
            remember,
            guard,
        } = staged;
        // Whether another replica can win a race for the budget or the approval this
        // decision consumes (shared stores), so a refusal is a loss to log as the
        // denial it is.
        let may_race = guard.is_some()
            || ((undo.approval.is_some() || undo.loop_call.is_some())
                && self.store.replicated().is_some());
        let committed = self
            .batcher
            .append_guarded(draft, ops, guard)
            .instrument(tracing::debug_span!(crate::telemetry::span::AUDIT_COMMIT))
            .await;
        // The lock is released before the lost-race denial is written (an await).
        let failed = {
            let mut s = self.lock();
            if let Some(k) = in_flight_key {
                s.in_flight.remove(k);
            }
            match committed {
                Ok(c) => {
                    if let Some(a) = undo.event {
                        let _ = self.approval_events.send(a);
                    }
                    let mut result = result;
                    result.audit_seq = c.seq;
                    if let (Some(rid), true) = (&call.input.request_id, remember) {
                        s.requests.insert(
                            rid.clone(),
                            Memo {
                                agent_id: call.agent().to_owned(),
                                fingerprint: call.fingerprint.to_owned(),
                                answer: result.clone(),
                                audit_seq: c.seq,
                                created_ms: call.now,
                            },
                        );
                    }
                    return Ok(result);
                }
                Err(e) => {
                    undo.roll_back(&mut s, call.now);
                    e
                }
            }
        };
        self.answer_refusal(call, failed, result, may_race).await
    }

    /// The answer to a commit the store refused: a lost race becomes the DENY its stage
    /// would have given; anything else is the error it is (never ALLOW).
    async fn answer_refusal(
        &self,
        call: &Call<'_>,
        failed: CommitError,
        result: EvaluateResult,
        may_race: bool,
    ) -> Result<EvaluateResult, EngineError> {
        if !may_race {
            return Err(failed.into());
        }
        match failed {
            CommitError::Refused(Refusal::BudgetExceeded) => {
                let lost = Reason::fail(
                    "budget",
                    "budget.exceeded",
                    "another replica reserved the rest of the budget while this request was decided",
                );
                self.deny_lost_race(call, result, lost).await
            }
            CommitError::Refused(why @ Refusal::ApprovalConflict { was, .. }) => {
                // Another replica consumed the approval first, or it expired or was
                // denied there: the code this replica's approval stage would now give.
                let code = match was {
                    Some(ApprovalState::Expired) => "approval.expired",
                    Some(ApprovalState::Denied) => "approval.denied",
                    _ => "approval.consumed",
                };
                let lost = Reason::fail("approval", code, why.detail());
                self.deny_lost_race(call, result, lost).await
            }
            CommitError::Refused(why @ Refusal::LoopDetected { .. }) => {
                // Calls served by other replicas filled the window first.
                self.lock().loop_trips.insert(call.agent().to_owned());
                let lost = Reason::fail("scope", "loop.detected", why.detail());
                self.deny_lost_race(call, result, lost).await
            }
            e => Err(e.into()),
        }
    }

    /// Another replica took what this decision needed (the rest of a budget, or the
    /// approval it presents) between this replica's check and its commit: the answer is
    /// the DENY that stage would have given (`lost`), logged like any other decision.
    async fn deny_lost_race(
        &self,
        call: &Call<'_>,
        mut result: EvaluateResult,
        lost: Reason,
    ) -> Result<EvaluateResult, EngineError> {
        let explain = call.input.explain;
        let mut reasons = Vec::with_capacity(result.reasons.len());
        for r in result.reasons.drain(..) {
            if r.stage == lost.stage {
                reasons.push(lost.clone());
                if !explain {
                    break;
                }
            } else {
                reasons.push(r);
            }
        }
        result.verdict = Verdict::Deny;
        result.reasons = reasons;
        result.reservation_id = None;
        result.reservation_expires_ms = None;
        result.reserved = Amounts::default();
        result.approval_id = None;
        // The same entry as the decision's, now with the denial's outcome, reasons and
        // no reservation or approval.
        let draft = self.evaluate_entry(call, &result, None);
        result.audit_seq = self.append(draft, Vec::new()).await?;
        Ok(result)
    }
}

/// Memory changes to take back when the commit fails.
#[derive(Default)]
struct Undo {
    /// A granted approval's held reservation that this decision settles.
    held: Option<Reservation>,
    /// Approval id and its state before (None: it was created here).
    approval: Option<(String, Option<Approval>)>,
    /// The approval change to announce once durable.
    event: Option<Approval>,
    reservation: Option<String>,
    loop_call: Option<crate::state::LoopKey>,
    open_decision: Option<String>,
}

impl Undo {
    /// Takes back every memory change of a decision whose commit failed.
    fn roll_back(self, s: &mut RuntimeState, now: i64) {
        if let Some(id) = self.reservation {
            s.ledger.release(&id);
        }
        if let Some(r) = self.held {
            s.ledger.reserve(r);
        }
        match self.approval {
            Some((_, Some(before))) => s.approvals.put(before),
            Some((id, None)) => s.approvals.remove(&id),
            None => {}
        }
        if let Some(key) = self.loop_call {
            s.loops.forget(&key, now);
        }
        if let Some(id) = self.open_decision {
            s.open_decisions.remove(&id);
        }
    }
}

/// An approval for this very action holds budget already; it is released for the check
/// so the action is not counted twice (and restored unless the action is allowed).
fn take_held_reservation(s: &mut RuntimeState, call: &Call<'_>) -> Option<Reservation> {
    let held = call
        .input
        .approval_id
        .as_deref()
        .and_then(|id| s.approvals.get(id))
        .filter(|a| {
            // Pending too: re-sending a still-pending request must not count the held
            // budget twice.
            matches!(
                a.state_at(call.now),
                ApprovalState::Granted | ApprovalState::Pending
            ) && a.agent_id == call.agent()
                && a.action_digest == call.digest
        })
        .and_then(|a| a.reservation.clone())
        .filter(|r| s.ledger.is_open(&r.id));
    if let Some(r) = &held {
        s.ledger.release(&r.id);
    }
    held
}

/// The reservation the decision asks for, held while a human decides and then for the
/// usual TTL after a grant; none when a still-pending approval already holds it.
fn planned_reservation(
    call: &Call<'_>,
    decision: &pipeline::Decision,
    decision_id: &str,
) -> Option<Reservation> {
    let defaults = &call.policy.defaults;
    let hold_ms = match &decision.intents.approval {
        ApprovalIntent::Request(_) => {
            defaults.approval_ttl.as_millis() as i64 + defaults.reservation_ttl.as_millis() as i64
        }
        _ => defaults.reservation_ttl.as_millis() as i64,
    };
    if matches!(decision.intents.approval, ApprovalIntent::StillPending(_)) {
        return None;
    }
    let plan = decision.intents.reservation.clone()?;
    Some(Reservation {
        id: new_id("res"),
        decision_id: decision_id.to_owned(),
        agent_id: call.agent().to_owned(),
        keys: plan.keys,
        amounts: plan.amounts,
        created_ms: call.now,
        expires_ms: call.now + hold_ms,
    })
}

/// Opens or consumes the approval the decision asks for; returns the approval id the
/// answer names.
fn stage_approval(
    s: &mut RuntimeState,
    call: &Call<'_>,
    intent: &ApprovalIntent,
    reservation: &Option<Reservation>,
    decision_id: &str,
    ops: &mut Vec<StateOp>,
    undo: &mut Undo,
) -> Option<String> {
    match intent {
        ApprovalIntent::Request(why) => {
            let a = Approval {
                id: new_id("apr"),
                agent_id: call.agent().to_owned(),
                session_id: call.session().unwrap_or("").to_owned(),
                action_digest: call.digest.to_owned(),
                action_summary: approval_summary(&call.input.action, call.recorded_arguments),
                action_json: crate::jcs::to_string_any_number(
                    &call.input.action.json_with(call.recorded_arguments),
                ),
                policy_version: call.policy.version.clone(),
                reason: why.clone(),
                state: ApprovalState::Pending,
                requested_ms: call.now,
                expires_ms: call.now + call.policy.defaults.approval_ttl.as_millis() as i64,
                decided_by: String::new(),
                decision_reason: String::new(),
                decided_ms: None,
                reservation: reservation.clone(),
                decision_id: decision_id.to_owned(),
            };
            let id = a.id.clone();
            s.approvals.put(a.clone());
            ops.push(StateOp::PutApproval(a.clone()));
            undo.approval = Some((id.clone(), None));
            undo.event = Some(a);
            Some(id)
        }
        ApprovalIntent::Consume(id) => {
            if let Some(before) = s.approvals.get(id).cloned() {
                let mut a = before.clone();
                a.state = ApprovalState::Consumed;
                s.approvals.put(a.clone());
                ops.push(StateOp::PutApproval(a.clone()));
                undo.approval = Some((id.clone(), Some(before)));
                undo.event = Some(a);
            }
            Some(id.clone())
        }
        ApprovalIntent::StillPending(id) => Some(id.clone()),
        ApprovalIntent::None => None,
    }
}

/// Counts the call in its loop window; with a loop guard the tick is also committed, so
/// replicas (and a restart) see the same window.
fn stage_loop_call(
    s: &mut RuntimeState,
    call: &Call<'_>,
    (key, window_ms): (crate::state::LoopKey, i64),
    ops: &mut Vec<StateOp>,
    undo: &mut Undo,
) {
    s.loops.record(key.clone(), call.now, window_ms);
    if let Some(guard) = call
        .policy
        .agent_rule(call.agent())
        .and_then(|r| r.loop_guard)
    {
        ops.push(StateOp::LoopTick {
            agent_id: key.0.clone(),
            session_id: key.1.clone(),
            tool: key.2.clone(),
            ts_ms: call.now,
            window_ms,
            max_calls: guard.max_calls,
        });
    }
    undo.loop_call = Some(key);
}

/// The decision an ALLOW leaves open until its Record closes it.
fn open_decision(
    call: &Call<'_>,
    decision_id: &str,
    reservation: &Option<Reservation>,
) -> OpenDecision {
    OpenDecision {
        decision_id: decision_id.to_owned(),
        agent_id: call.agent().to_owned(),
        session_id: call.session().unwrap_or("").to_owned(),
        model: call.input.action.model.clone(),
        reservation: reservation.clone(),
        created_ms: call.now,
    }
}

/// With several replicas the database admits the reservation against the caps too
/// (under the sequencer lock); the embedded store ignores this.
fn budget_guard(policy: &CompiledPolicy, r: &Reservation, now: i64) -> crate::store::BudgetGuard {
    crate::store::BudgetGuard {
        keys: r
            .keys
            .iter()
            .map(|k| {
                let caps = policy
                    .budgets
                    .iter()
                    .find(|b| b.name == k.budget)
                    .map_or([None; 3], |b| {
                        [b.caps.micro_usd.map(|m| m.0), b.caps.tokens, b.caps.calls]
                    });
                (k.clone(), caps)
            })
            .collect(),
        amounts: r.amounts,
        now_ms: now,
    }
}

fn replay(
    memo: &Memo<EvaluateResult>,
    agent: &str,
    fingerprint: &str,
) -> Result<EvaluateResult, EngineError> {
    if memo.agent_id != agent || memo.fingerprint != fingerprint {
        return Err(EngineError::Invalid(ParseError::new(
            "request_id",
            "was already used for a different request; use a new id for a new action",
        )));
    }
    let mut result = memo.answer.clone();
    result.audit_seq = memo.audit_seq;
    result.replayed = true;
    Ok(result)
}

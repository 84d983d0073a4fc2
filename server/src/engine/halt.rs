//! Engaging and lifting halts. Only operators and admins reach these (api/control.rs);
//! no agent-facing call (Evaluate, Record, Heartbeat) ever changes halt state.

use super::{Engine, EngineError};
use crate::audit::refusal::Refusal;
use crate::audit::EntryDraft;
use crate::domain::Principal;
use crate::state::{Halt, HaltMode, HaltTarget};
use crate::store::StateOp;
use serde_json::json;

fn ids(t: &HaltTarget) -> (String, String) {
    match t {
        HaltTarget::Global => (String::new(), String::new()),
        HaltTarget::Agent(a) => (a.clone(), String::new()),
        HaltTarget::Session(a, s) => (a.clone(), s.clone()),
    }
}

impl Engine {
    /// Engages (or changes) the halt on a target.
    pub async fn halt(
        &self,
        who: &Principal,
        target: HaltTarget,
        mode: HaltMode,
        reason: String,
    ) -> Result<Halt, EngineError> {
        self.halt_with(who, target, mode, reason, Vec::new()).await
    }

    /// `halt`, committing `also` in the same transaction (what the watchdog acted on).
    pub(super) async fn halt_with(
        &self,
        who: &Principal,
        target: HaltTarget,
        mode: HaltMode,
        reason: String,
        also: Vec<StateOp>,
    ) -> Result<Halt, EngineError> {
        let _serial = self.halt_changes.lock().await;
        let mut attempt = 0;
        loop {
            let previous = self.lock().halts.get(&target).cloned();
            let tried = self
                .engage(who, &target, mode, &reason, previous, also.clone())
                .await;
            match tried {
                Err(EngineError::Lost(why @ Refusal::HaltChanged { .. }))
                    if self.catch_up_after_lost_race(&mut attempt).await =>
                {
                    tracing::debug!(%why, "halt changed on another replica; checking again");
                }
                other => return other,
            }
        }
    }

    /// One try at replacing `previous` (this server's copy) with a `mode` halt. On a
    /// shared store the commit carries `previous` (`StateOp::ExpectHalt`) and is refused
    /// if another replica changed the halt since, so the release rule is always checked
    /// against the halt actually replaced.
    async fn engage(
        &self,
        who: &Principal,
        target: &HaltTarget,
        mode: HaltMode,
        reason: &str,
        previous: Option<Halt>,
        also: Vec<StateOp>,
    ) -> Result<Halt, EngineError> {
        if let Some(p) = &previous {
            self.refuse_weakening(who, p, mode).await?;
        }
        let h = Halt {
            target: target.clone(),
            mode,
            reason: reason.to_owned(),
            engaged_by: who.name.clone(),
            engaged_ms: self.now_ms(),
        };
        let (agent, session) = ids(target);
        let mut body = json!({"target": target.key(), "mode": mode.name(), "reason": reason, "principal": who.name});
        if let Some(p) = &previous {
            // The halt this one replaces: who engaged what stays in the log.
            body["replaces"] = json!({
                "mode": p.mode.name(),
                "reason": p.reason,
                "principal": p.engaged_by,
                "engaged_ms": p.engaged_ms,
            });
        }
        let draft = EntryDraft {
            ts_ms: h.engaged_ms,
            kind: "halt.engage".into(),
            agent_id: agent,
            session_id: session,
            outcome: "engaged".into(),
            body: body.into(),
        };
        let mut ops = self.expect_halt(target, previous);
        ops.push(StateOp::EngageHalt(h.clone()));
        ops.extend(also);
        self.append(draft, ops).await?;
        self.lock().halts.engage(h.clone());
        Ok(h)
    }

    /// Lifts the halt on exactly this target; NOT_FOUND when none is engaged.
    pub async fn resume(
        &self,
        who: &Principal,
        target: HaltTarget,
        reason: String,
    ) -> Result<Halt, EngineError> {
        let _serial = self.halt_changes.lock().await;
        let mut attempt = 0;
        loop {
            match self.lift(who, &target, &reason).await {
                Err(EngineError::Lost(why @ Refusal::HaltChanged { .. }))
                    if self.catch_up_after_lost_race(&mut attempt).await =>
                {
                    tracing::debug!(%why, "halt changed on another replica; checking again");
                }
                other => return other,
            }
        }
    }

    /// One try at lifting the halt this server holds on `target` (refused on a shared
    /// store if another replica changed it since, so the log names what was lifted).
    async fn lift(
        &self,
        who: &Principal,
        target: &HaltTarget,
        reason: &str,
    ) -> Result<Halt, EngineError> {
        let Some(h) = self.lock().halts.get(target).cloned() else {
            return Err(EngineError::NotFound(format!(
                "no halt is engaged on {}",
                target.describe()
            )));
        };
        let (agent, session) = ids(target);
        let draft = EntryDraft {
            ts_ms: self.now_ms(),
            kind: "halt.release".into(),
            agent_id: agent,
            session_id: session,
            outcome: "released".into(),
            body: json!({"target": target.key(), "mode": h.mode.name(), "reason": reason, "principal": who.name}).into(),
        };
        let mut ops = self.expect_halt(target, Some(h.clone()));
        ops.push(StateOp::LiftHalt {
            target: target.clone(),
        });
        self.append(draft, ops).await?;
        self.lock().halts.lift(target);
        Ok(h)
    }

    /// The precondition a shared store checks under the sequencer lock; nothing on the
    /// embedded store, whose one server serializes halt changes (`halt_changes`).
    fn expect_halt(&self, target: &HaltTarget, current: Option<Halt>) -> Vec<StateOp> {
        if self.store.replicated().is_some() {
            vec![StateOp::ExpectHalt {
                target: target.clone(),
                current,
            }]
        } else {
            Vec::new()
        }
    }

    /// After a control change (a halt, a tool pin) was refused on a shared store
    /// because another replica changed it meanwhile (or the watchdog's condition was
    /// marked): brings this server's copy up to the database and says whether to try
    /// again (a few times at most).
    pub(super) async fn catch_up_after_lost_race(&self, attempt: &mut u32) -> bool {
        const ATTEMPTS: u32 = 3;
        *attempt += 1;
        if self.store.replicated().is_none() || *attempt >= ATTEMPTS {
            return false;
        }
        for _ in 0..50 {
            match self.refresh_control().await {
                Ok(true) => return true,
                // A snapshot older than this server's own newest change: shortly again.
                Ok(false) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot re-read the halts");
                    return false;
                }
            }
        }
        false
    }

    /// Replacing a halt with one no stronger takes away what the old one stopped (or,
    /// with the same mode, who engaged it and why): that is a release, so only a
    /// principal that may lift the halt may do it. A stronger halt only adds.
    async fn refuse_weakening(
        &self,
        who: &Principal,
        previous: &Halt,
        mode: HaltMode,
    ) -> Result<(), EngineError> {
        if mode > previous.mode || who.governs(previous.target.agent()) {
            return Ok(());
        }
        let reason = format!(
            "Halt: {} may not lift the {} halt on {} (it acts for the agent it halts), \
             so it cannot replace it with a {} halt; only a stronger mode may be engaged",
            who.name,
            previous.mode.name(),
            previous.target.describe(),
            mode.name()
        );
        self.record_refusal(crate::auth::Refusal {
            principal: who.name.clone(),
            rpc: "Halt",
            reason: reason.clone(),
        })
        .await;
        Err(EngineError::PermissionDenied(reason))
    }

    pub fn halts(&self) -> Vec<Halt> {
        self.lock().halts.all()
    }

    /// Whether any halt applies to this agent (for ListAgents).
    pub fn is_halted(&self, agent: &str) -> bool {
        self.lock().halts.applicable(agent, None).next().is_some()
    }
}

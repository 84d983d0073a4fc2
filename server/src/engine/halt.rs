//! Engaging and lifting halts. Only operators and admins reach these (api/control.rs);
//! no agent-facing call (Evaluate, Record, Heartbeat) ever changes halt state.

use super::{Engine, EngineError};
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
        let previous = self.lock().halts.get(&target).cloned();
        if let Some(p) = &previous {
            self.refuse_weakening(who, p, mode).await?;
        }
        let h = Halt {
            target: target.clone(),
            mode,
            reason: reason.clone(),
            engaged_by: who.name.clone(),
            engaged_ms: self.now_ms(),
        };
        let (agent, session) = ids(&target);
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
            body,
        };
        let mut ops = vec![StateOp::EngageHalt(h.clone())];
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
        let Some(h) = self.lock().halts.get(&target).cloned() else {
            return Err(EngineError::NotFound(format!(
                "no halt is engaged on {}",
                target.describe()
            )));
        };
        let (agent, session) = ids(&target);
        let draft = EntryDraft {
            ts_ms: self.now_ms(),
            kind: "halt.release".into(),
            agent_id: agent,
            session_id: session,
            outcome: "released".into(),
            body: json!({"target": target.key(), "mode": h.mode.name(), "reason": reason, "principal": who.name}),
        };
        self.append(
            draft,
            vec![StateOp::LiftHalt {
                target: target.clone(),
            }],
        )
        .await?;
        self.lock().halts.lift(&target);
        Ok(h)
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

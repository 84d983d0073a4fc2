//! Run-time administration: trust, consent, budget snapshots, agents, policy info.

use super::{Engine, EngineError, Principal};
use crate::audit::EntryDraft;
use crate::domain::{AgentId, TrustLevel};
use crate::pipeline::budget_view;
use crate::policy::{BudgetScope, CompiledPolicy};
use crate::state::{ConsentGrant, Counter, EffectiveTrust, TrustAssignment};
use crate::store::{PolicyLoadRow, StateOp};
use serde_json::json;
use std::sync::Arc;

/// One budget window as shown to operators.
#[derive(Debug, Clone)]
pub struct BudgetView {
    pub name: String,
    pub scope: BudgetScope,
    pub scope_key: String,
    pub period: &'static str,
    pub window_start_ms: i64,
    pub window_end_ms: Option<i64>,
    pub counter: Counter,
    pub caps: crate::policy::Caps,
    pub session_elapsed_s: Option<u64>,
}

/// One unit a budget window caps, as `GetBudgets` and the console show it.
pub struct CappedUnit {
    pub unit: &'static str,
    pub cap: u64,
    pub spent: u64,
    pub reserved: u64,
}

impl BudgetView {
    /// The units this window caps, in a fixed order (USD, tokens, calls, session
    /// seconds); a session's elapsed time is its "spend", with nothing reserved.
    pub fn capped_units(&self) -> Vec<CappedUnit> {
        let (c, caps) = (&self.counter, &self.caps);
        let unit = |unit, cap, spent, reserved| CappedUnit {
            unit,
            cap,
            spent,
            reserved,
        };
        [
            caps.micro_usd
                .map(|cap| unit("micro_usd", cap.0, c.spent.micro_usd, c.reserved.micro_usd)),
            caps.tokens
                .map(|cap| unit("tokens", cap, c.spent.tokens, c.reserved.tokens)),
            caps.calls
                .map(|cap| unit("calls", cap, c.spent.calls, c.reserved.calls)),
            caps.session_seconds.map(|cap| {
                unit(
                    "session_seconds",
                    cap,
                    self.session_elapsed_s.unwrap_or(0),
                    0,
                )
            }),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

pub struct PolicyInfo {
    pub current: Arc<CompiledPolicy>,
    pub history: Vec<PolicyLoadRow>,
}

impl Engine {
    pub async fn set_trust(
        &self,
        who: &Principal,
        agent: AgentId,
        level: TrustLevel,
        scope: String,
        reason: String,
    ) -> Result<(TrustAssignment, u64), EngineError> {
        let now = self.now_ms();
        let a = TrustAssignment {
            agent_id: agent.to_string(),
            scope,
            level,
            assigned_by: who.name.clone(),
            assigned_ms: now,
        };
        let draft = EntryDraft {
            ts_ms: now,
            kind: "trust.set".into(),
            agent_id: a.agent_id.clone(),
            session_id: String::new(),
            outcome: String::new(),
            body: json!({"level": level.name(), "scope": a.scope, "principal": who.name, "reason": reason}).into(),
        };
        let seq = self
            .append(draft, vec![StateOp::SetTrust(a.clone())])
            .await?;
        self.lock().trust.set(a.clone());
        Ok((a, seq))
    }

    pub fn get_trust(&self, agent: &AgentId, scope: &str) -> EffectiveTrust {
        let policy = self.policy();
        let s = self.lock();
        let scopes = if scope.is_empty() {
            crate::state::TrustScopes::default()
        } else {
            crate::state::TrustScopes::one(scope)
        };
        s.trust.effective(
            agent.as_str(),
            &scopes,
            policy.defaults.trust_level,
            policy.defaults.trust_decay_days,
            s.agents.get(agent.as_str()).and_then(|a| a.last_allowed_ms),
            self.now_ms(),
        )
    }

    pub fn list_trust(&self, agent: Option<&str>) -> Vec<TrustAssignment> {
        self.lock().trust.list(agent)
    }

    pub async fn grant_consent(
        &self,
        who: &Principal,
        agent: AgentId,
        data_type: String,
        purpose: Option<String>,
        expires_ms: Option<i64>,
    ) -> Result<(ConsentGrant, u64), EngineError> {
        let now = self.now_ms();
        if let Some(e) = expires_ms {
            if e <= now {
                return Err(
                    crate::domain::ParseError::new("expires_at", "must be in the future").into(),
                );
            }
        }
        let g = ConsentGrant {
            agent_id: agent.to_string(),
            data_type,
            purpose,
            granted_by: who.name.clone(),
            granted_ms: now,
            expires_ms,
        };
        let draft = EntryDraft {
            ts_ms: now,
            kind: "consent.grant".into(),
            agent_id: g.agent_id.clone(),
            session_id: String::new(),
            outcome: String::new(),
            body: json!({"data_type": g.data_type, "purpose": g.purpose, "expires_ts_ms": g.expires_ms, "principal": who.name}).into(),
        };
        let seq = self
            .append(draft, vec![StateOp::PutConsent(g.clone())])
            .await?;
        self.lock().consent.upsert(g.clone());
        Ok((g, seq))
    }

    pub async fn revoke_consent(
        &self,
        who: &Principal,
        agent: AgentId,
        data_type: String,
        purpose: Option<String>,
    ) -> Result<u64, EngineError> {
        if !self
            .lock()
            .consent
            .exists(agent.as_str(), &data_type, purpose.as_deref())
        {
            let what = purpose
                .as_deref()
                .map_or("every purpose".to_owned(), |p| format!("purpose {p:?}"));
            return Err(EngineError::NotFound(format!(
                "no consent grant for agent {agent}, data type {data_type:?}, {what}"
            )));
        }
        let now = self.now_ms();
        let draft = EntryDraft {
            ts_ms: now,
            kind: "consent.revoke".into(),
            agent_id: agent.to_string(),
            session_id: String::new(),
            outcome: String::new(),
            body: json!({"data_type": data_type, "purpose": purpose, "principal": who.name}).into(),
        };
        let op = StateOp::RevokeConsent {
            agent_id: agent.to_string(),
            data_type: data_type.clone(),
            purpose: purpose.clone(),
        };
        let seq = self.append(draft, vec![op]).await?;
        self.lock()
            .consent
            .remove(agent.as_str(), &data_type, purpose.as_deref());
        Ok(seq)
    }

    pub fn list_consents(&self, agent: Option<&str>) -> Vec<ConsentGrant> {
        self.lock().consent.list(agent)
    }

    /// Budgets that apply to an agent (and session), with their current windows.
    pub fn budgets(&self, agent: Option<&str>, session: Option<&str>) -> Vec<BudgetView> {
        let policy = self.policy();
        let now = self.now_ms();
        let mut s = self.lock();
        s.ledger.release_expired(now);
        budget_view(&policy, &s, agent, session, now)
    }

    /// The current windows of session-scoped budgets that hold spend or reservations,
    /// at most `limit`, ordered by agent then session. A session with nothing counted
    /// is left out: sessions are never forgotten, so listing them all would grow
    /// without bound.
    pub fn session_budgets(&self, limit: usize) -> Vec<BudgetView> {
        let policy = self.policy();
        let now = self.now_ms();
        let today = chrono::DateTime::from_timestamp_millis(now).unwrap_or_default();
        let mut s = self.lock();
        s.ledger.release_expired(now);
        let counted: std::collections::HashSet<&str> = s
            .ledger
            .keys()
            .filter(|k| {
                policy.budget(&k.budget).is_some_and(|b| {
                    b.scope == BudgetScope::Session && b.period.window(today).0 == k.window_start_ms
                })
            })
            .map(|k| k.scope_key.as_str())
            .collect();
        if counted.is_empty() {
            return Vec::new();
        }
        let mut pairs: Vec<(&String, &String)> = s
            .sessions
            .keys()
            .filter(|(a, sess)| counted.contains(format!("{a}/{sess}").as_str()))
            .map(|(a, sess)| (a, sess))
            .collect();
        pairs.sort();
        pairs.truncate(limit);
        pairs
            .into_iter()
            .flat_map(|(a, sess)| budget_view(&policy, &s, Some(a), Some(sess), now))
            .filter(|b| b.scope == BudgetScope::Session && b.counter != Counter::default())
            .collect()
    }

    /// Agents seen so far, with their effective trust.
    pub fn agents(&self) -> Vec<(String, crate::state::AgentInfo, TrustLevel)> {
        let policy = self.policy();
        let now = self.now_ms();
        let s = self.lock();
        s.agents
            .iter()
            .map(|(id, info)| {
                let t = s.trust.effective(
                    id,
                    &crate::state::TrustScopes::default(),
                    policy.defaults.trust_level,
                    policy.defaults.trust_decay_days,
                    info.last_allowed_ms,
                    now,
                );
                (id.clone(), info.clone(), t.level)
            })
            .collect()
    }

    pub async fn policy_info(&self) -> Result<PolicyInfo, EngineError> {
        Ok(PolicyInfo {
            current: self.policy(),
            history: self.store.policy_loads(100).await?,
        })
    }

    /// The tools from `tools` that the agent may see, in the given order.
    pub fn filter_tools(&self, agent: &AgentId, tools: Vec<String>) -> Vec<String> {
        let policy = self.policy();
        match policy.agent_rule(agent.as_str()) {
            None => Vec::new(),
            Some(rule) => tools
                .into_iter()
                .filter(|t| crate::pipeline::tool_visible(rule, t))
                .collect(),
        }
    }

    /// Deletes the stored loop-guard calls no window of the current policy can count
    /// any more (shared store; one replica at a time, the watchdog lease holder).
    pub async fn prune_loop_ticks(&self) {
        // The embedded store keeps no loop ticks: its one server counts them exactly in
        // memory.
        let Some(replicated) = self.store.replicated() else {
            return;
        };
        if !replicated.lead("watchdog").await {
            return;
        }
        let longest = self
            .policy()
            .agents
            .iter()
            .filter_map(|r| r.loop_guard)
            .map(|g| g.window)
            .max()
            .unwrap_or_default();
        // A minute of slack for replicas whose clocks disagree slightly.
        let cutoff = self.now_ms() - longest.as_millis() as i64 - 60_000;
        if let Err(e) = replicated.prune_loop_ticks(cutoff).await {
            tracing::warn!(error = %e, "could not prune loop-guard calls; will retry");
        }
    }

    /// Drops replay answers older than the retention window and expired reservations.
    pub fn prune(&self) {
        let policy = self.policy();
        let now = self.now_ms();
        let cutoff = now - policy.defaults.request_id_retention.as_millis() as i64;
        let mut s = self.lock();
        s.ledger.release_expired(now);
        s.requests.retain(|_, m| m.created_ms >= cutoff);
        s.recorded.retain(|_, m| m.created_ms >= cutoff);
    }
}

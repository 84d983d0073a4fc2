//! Trust assignments: manual, optionally scoped to a tool or budget category, with
//! optional inactivity decay.

use crate::domain::TrustLevel;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustAssignment {
    pub agent_id: String,
    /// Tool name or budget category; empty applies to every action.
    pub scope: String,
    pub level: TrustLevel,
    pub assigned_by: String,
    pub assigned_ms: i64,
}

/// How an effective level was derived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveTrust {
    pub level: TrustLevel,
    pub source: &'static str,
    pub assignment: Option<TrustAssignment>,
}

#[derive(Debug, Default)]
pub struct TrustBook {
    by_agent: HashMap<String, Vec<TrustAssignment>>,
}

const DAY_MS: i64 = 86_400_000;

impl TrustBook {
    pub fn set(&mut self, a: TrustAssignment) {
        let list = self.by_agent.entry(a.agent_id.clone()).or_default();
        list.retain(|x| x.scope != a.scope);
        list.push(a);
    }

    /// The level for an action touching `scopes` (its tool, its category). A scoped
    /// assignment wins over the agent-wide one; unassigned agents get `default`. With
    /// decay on, the level drops one step per `decay_days` since the later of the
    /// assignment and the agent's last activity.
    pub fn effective(
        &self,
        agent: &str,
        scopes: &[&str],
        default: TrustLevel,
        decay_days: u32,
        last_active_ms: Option<i64>,
        now_ms: i64,
    ) -> EffectiveTrust {
        let list = self.by_agent.get(agent);
        // The action's tool is more specific than its category: try scopes in order.
        let scoped = list.and_then(|l| {
            scopes
                .iter()
                .find_map(|sc| l.iter().find(|a| !a.scope.is_empty() && a.scope == *sc))
        });
        let global = list.and_then(|l| l.iter().find(|a| a.scope.is_empty()));
        let Some(a) = scoped.or(global) else {
            return EffectiveTrust {
                level: default,
                source: "default",
                assignment: None,
            };
        };
        let source = if scoped.is_some() {
            "scoped"
        } else {
            "assigned"
        };
        if decay_days > 0 {
            let since = last_active_ms.unwrap_or(a.assigned_ms).max(a.assigned_ms);
            let idle_days = (now_ms - since).max(0) / DAY_MS;
            let steps = (idle_days / i64::from(decay_days)) as u64;
            if steps > 0 {
                return EffectiveTrust {
                    level: a.level.lowered_by(steps),
                    source: "decayed",
                    assignment: Some(a.clone()),
                };
            }
        }
        EffectiveTrust {
            level: a.level,
            source,
            assignment: Some(a.clone()),
        }
    }

    pub fn list(&self, agent: Option<&str>) -> Vec<TrustAssignment> {
        let mut out: Vec<TrustAssignment> = self
            .by_agent
            .values()
            .flatten()
            .filter(|a| agent.is_none_or(|x| a.agent_id == x))
            .cloned()
            .collect();
        out.sort_by(|a, b| (&a.agent_id, &a.scope).cmp(&(&b.agent_id, &b.scope)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assign(scope: &str, level: TrustLevel, at: i64) -> TrustAssignment {
        TrustAssignment {
            agent_id: "a".into(),
            scope: scope.into(),
            level,
            assigned_by: "op".into(),
            assigned_ms: at,
        }
    }

    #[test]
    fn scoped_assignment_wins_and_unknown_agents_get_the_default() {
        let mut t = TrustBook::default();
        t.set(assign("", TrustLevel::L2Suggest, 0));
        t.set(assign("payments", TrustLevel::L4ActReport, 0));
        let e = t.effective("a", &["send_email"], TrustLevel::L0Observer, 0, None, 0);
        assert_eq!((e.level, e.source), (TrustLevel::L2Suggest, "assigned"));
        let e = t.effective(
            "a",
            &["charge", "payments"],
            TrustLevel::L0Observer,
            0,
            None,
            0,
        );
        assert_eq!((e.level, e.source), (TrustLevel::L4ActReport, "scoped"));
        let e = t.effective("b", &[], TrustLevel::L1Monitor, 0, None, 0);
        assert_eq!((e.level, e.source), (TrustLevel::L1Monitor, "default"));
    }

    #[test]
    fn inactivity_decays_one_level_per_period() {
        let mut t = TrustBook::default();
        t.set(assign("", TrustLevel::L4ActReport, 0));
        let e = t.effective("a", &[], TrustLevel::L0Observer, 7, Some(0), 6 * DAY_MS);
        assert_eq!(e.level, TrustLevel::L4ActReport);
        let e = t.effective("a", &[], TrustLevel::L0Observer, 7, Some(0), 15 * DAY_MS);
        assert_eq!((e.level, e.source), (TrustLevel::L2Suggest, "decayed"));
    }
}

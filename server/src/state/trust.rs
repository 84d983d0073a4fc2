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

/// What selects the trust assignments for one action (docs/policy.md §8.2).
#[derive(Debug, Default)]
pub struct TrustScopes<'a> {
    /// For each facet of the action (tool, API call, model), the scopes that cover it:
    /// the tool's name for the tool, and the category of every matching action rule
    /// that covers that facet. Never a field the caller chooses alone.
    pub facets: Vec<Vec<&'a str>>,
    /// The category the caller declared. It may narrow (a lower scoped level applies),
    /// never pick a more permissive level.
    pub declared: Option<&'a str>,
}

impl<'a> TrustScopes<'a> {
    /// One facet covered by `scope` (GetTrust for a scope).
    pub fn one(scope: &'a str) -> Self {
        Self {
            facets: vec![vec![scope]],
            declared: None,
        }
    }
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

    /// The level for an action. Per facet of the action, the lowest scoped assignment
    /// among the scopes covering it replaces the agent-wide level (even if higher); a
    /// facet no scoped assignment covers gets the agent-wide one (or `default`). The
    /// action gets the lowest of its facets, so a scope that covers one facet never
    /// carries another. The caller's declared category can only lower the result. With
    /// decay on, an assignment drops one step per `decay_days` since the later of the
    /// assignment and the agent's last activity.
    pub fn effective(
        &self,
        agent: &str,
        scopes: &TrustScopes<'_>,
        default: TrustLevel,
        decay_days: u32,
        last_active_ms: Option<i64>,
        now_ms: i64,
    ) -> EffectiveTrust {
        let list = self.by_agent.get(agent).map(Vec::as_slice).unwrap_or(&[]);
        let resolve = |a: &TrustAssignment, source: &'static str| {
            let mut level = a.level;
            let mut source = source;
            if decay_days > 0 {
                let since = last_active_ms.unwrap_or(a.assigned_ms).max(a.assigned_ms);
                let idle_days = (now_ms - since).max(0) / DAY_MS;
                let steps = (idle_days / i64::from(decay_days)) as u64;
                if steps > 0 {
                    level = a.level.lowered_by(steps);
                    source = "decayed";
                }
            }
            EffectiveTrust {
                level,
                source,
                assignment: Some(a.clone()),
            }
        };
        let scoped = |scope: &str| {
            list.iter()
                .find(|a| !a.scope.is_empty() && a.scope == scope)
                .map(|a| resolve(a, "scoped"))
        };
        let base = match list.iter().find(|a| a.scope.is_empty()) {
            Some(a) => resolve(a, "assigned"),
            None => EffectiveTrust {
                level: default,
                source: "default",
                assignment: None,
            },
        };
        let lowest = |a: EffectiveTrust, b: EffectiveTrust| if b.level < a.level { b } else { a };
        let mut eff = scopes
            .facets
            .iter()
            .map(|covering| {
                covering
                    .iter()
                    .filter_map(|sc| scoped(sc))
                    .reduce(lowest)
                    .unwrap_or_else(|| base.clone())
            })
            .reduce(lowest)
            .unwrap_or_else(|| base.clone());
        if let Some(declared) = scopes.declared.and_then(scoped) {
            eff = lowest(eff, declared);
        }
        eff
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
        let e = t.effective(
            "a",
            &TrustScopes::one("send_email"),
            TrustLevel::L0Observer,
            0,
            None,
            0,
        );
        assert_eq!((e.level, e.source), (TrustLevel::L2Suggest, "assigned"));
        let scopes = TrustScopes {
            facets: vec![vec!["charge", "payments"]],
            declared: None,
        };
        let e = t.effective("a", &scopes, TrustLevel::L0Observer, 0, None, 0);
        assert_eq!((e.level, e.source), (TrustLevel::L4ActReport, "scoped"));
        let e = t.effective(
            "b",
            &TrustScopes::default(),
            TrustLevel::L1Monitor,
            0,
            None,
            0,
        );
        assert_eq!((e.level, e.source), (TrustLevel::L1Monitor, "default"));
    }

    #[test]
    fn a_scope_covering_one_facet_does_not_carry_another_and_a_declared_one_only_lowers() {
        let mut t = TrustBook::default();
        t.set(assign("", TrustLevel::L1Monitor, 0));
        t.set(assign("reports", TrustLevel::L5Autonomous, 0));
        t.set(assign("sandbox", TrustLevel::L0Observer, 0));
        let level = |facets: Vec<Vec<&str>>, declared| {
            let scopes = TrustScopes { facets, declared };
            t.effective("a", &scopes, TrustLevel::L0Observer, 0, None, 0)
                .level
        };
        assert_eq!(level(vec![vec!["reports"]], None), TrustLevel::L5Autonomous);
        // The tool is covered by "reports", the API call is not.
        assert_eq!(
            level(vec![vec!["reports"], vec![]], None),
            TrustLevel::L1Monitor
        );
        // A declared category never raises ...
        assert_eq!(
            level(vec![vec!["refund_order"]], Some("reports")),
            TrustLevel::L1Monitor
        );
        // ... but narrows, and two scopes on one facet give the lower.
        assert_eq!(
            level(vec![vec!["reports"]], Some("sandbox")),
            TrustLevel::L0Observer
        );
        assert_eq!(
            level(vec![vec!["reports", "sandbox"]], None),
            TrustLevel::L0Observer
        );
    }

    #[test]
    fn inactivity_decays_one_level_per_period() {
        let mut t = TrustBook::default();
        t.set(assign("", TrustLevel::L4ActReport, 0));
        let none = TrustScopes::default();
        let e = t.effective("a", &none, TrustLevel::L0Observer, 7, Some(0), 6 * DAY_MS);
        assert_eq!(e.level, TrustLevel::L4ActReport);
        let e = t.effective("a", &none, TrustLevel::L0Observer, 7, Some(0), 15 * DAY_MS);
        assert_eq!((e.level, e.source), (TrustLevel::L2Suggest, "decayed"));
    }
}

//! Engaged halts (SPEC §5). A halt targets everything, one agent, or one session, and
//! its mode says what still passes: HALT_NONCRITICAL lets agents marked `critical` keep
//! working and other agents only critical actions; HALT_ALL lets only critical actions
//! through; EMERGENCY stops everything.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HaltMode {
    HaltNoncritical,
    HaltAll,
    Emergency,
}

impl HaltMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::HaltNoncritical => "HALT_NONCRITICAL",
            Self::HaltAll => "HALT_ALL",
            Self::Emergency => "EMERGENCY",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "HALT_NONCRITICAL" => Some(Self::HaltNoncritical),
            "HALT_ALL" => Some(Self::HaltAll),
            "EMERGENCY" => Some(Self::Emergency),
            _ => None,
        }
    }

    /// Whether an action passes this mode.
    pub fn lets_through(self, agent_critical: bool, action_critical: bool) -> bool {
        match self {
            Self::HaltNoncritical => agent_critical || action_critical,
            Self::HaltAll => action_critical,
            Self::Emergency => false,
        }
    }
}

/// What a halt applies to. Ordered so the broadest target is reported first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum HaltTarget {
    Global,
    Agent(String),
    Session(String, String),
}

impl HaltTarget {
    /// The store's primary key.
    pub fn key(&self) -> String {
        match self {
            Self::Global => "global".into(),
            Self::Agent(a) => format!("agent:{a}"),
            Self::Session(a, s) => format!("session:{a}/{s}"),
        }
    }

    /// The `halts` row's scope, agent and session columns ("" where the scope names none).
    pub fn columns(&self) -> (&'static str, &str, &str) {
        match self {
            Self::Global => ("global", "", ""),
            Self::Agent(a) => ("agent", a, ""),
            Self::Session(a, s) => ("session", a, s),
        }
    }

    /// The agent a target names, if any.
    pub fn agent(&self) -> Option<&str> {
        match self {
            Self::Global => None,
            Self::Agent(a) | Self::Session(a, _) => Some(a),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Global => "every agent".into(),
            Self::Agent(a) => format!("agent {a}"),
            Self::Session(a, s) => format!("session {s} of agent {a}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Halt {
    pub target: HaltTarget,
    pub mode: HaltMode,
    pub reason: String,
    pub engaged_by: String,
    pub engaged_ms: i64,
}

#[derive(Debug, Default)]
pub struct HaltBoard {
    halts: BTreeMap<HaltTarget, Halt>,
}

impl HaltBoard {
    pub fn engage(&mut self, h: Halt) {
        self.halts.insert(h.target.clone(), h);
    }

    pub fn lift(&mut self, target: &HaltTarget) -> Option<Halt> {
        self.halts.remove(target)
    }

    pub fn get(&self, target: &HaltTarget) -> Option<&Halt> {
        self.halts.get(target)
    }

    /// Halts that apply to an agent (and session), broadest first. A halt on an agent
    /// never seen before applies as soon as it appears, because targets are names.
    pub fn applicable<'a>(
        &'a self,
        agent: &str,
        session: Option<&str>,
    ) -> impl Iterator<Item = &'a Halt> + 'a {
        let targets = [
            Some(HaltTarget::Global),
            Some(HaltTarget::Agent(agent.to_owned())),
            session.map(|s| HaltTarget::Session(agent.to_owned(), s.to_owned())),
        ];
        targets
            .into_iter()
            .flatten()
            .filter_map(move |t| self.halts.get(&t))
    }

    pub fn all(&self) -> Vec<Halt> {
        self.halts.values().cloned().collect()
    }

    /// Halts in force (for the metrics gauge).
    pub fn len(&self) -> usize {
        self.halts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.halts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_form_a_ladder() {
        use HaltMode::*;
        assert!(HaltNoncritical.lets_through(true, false));
        assert!(HaltNoncritical.lets_through(false, true));
        assert!(!HaltNoncritical.lets_through(false, false));
        assert!(!HaltAll.lets_through(true, false));
        assert!(HaltAll.lets_through(false, true));
        assert!(!Emergency.lets_through(true, true));
    }

    #[test]
    fn halts_apply_by_target() {
        let mut b = HaltBoard::default();
        let h = |t| Halt {
            target: t,
            mode: HaltMode::Emergency,
            reason: "r".into(),
            engaged_by: "op".into(),
            engaged_ms: 0,
        };
        b.engage(h(HaltTarget::Session("a".into(), "s1".into())));
        assert_eq!(b.applicable("a", Some("s1")).count(), 1);
        assert_eq!(b.applicable("a", Some("s2")).count(), 0);
        assert_eq!(b.applicable("a", None).count(), 0);
        b.engage(h(HaltTarget::Agent("never-seen".into())));
        assert_eq!(b.applicable("never-seen", None).count(), 1);
    }
}

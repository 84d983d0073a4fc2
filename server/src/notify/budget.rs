//! Budget crossings: after each committed `record` entry (the only entry that moves
//! `spent`), the budgets of that agent and session are compared with the configured
//! shares of their caps. A crossing is announced once per budget window, share and
//! dimension; its id depends only on those, so a restart or another replica that
//! announces it again sends the same `webhook-id`.

use super::event::{event_id, Event, EventType};
use crate::engine::{BudgetView, Engine};
use serde_json::json;
use std::collections::HashSet;

const MAX_REMEMBERED: usize = 100_000;

type Crossing = (String, String, i64, &'static str, u64);

pub struct BudgetWatch {
    /// Shares in thousandths (0.8 → 800), so they can be keys.
    shares: Vec<u64>,
    announced: HashSet<Crossing>,
}

impl BudgetWatch {
    pub fn new(shares: &[f64]) -> Self {
        let mut shares: Vec<u64> = shares.iter().map(|s| (s * 1000.0).round() as u64).collect();
        shares.sort_unstable();
        shares.dedup();
        Self {
            shares,
            announced: HashSet::new(),
        }
    }

    /// Crossings visible after an entry of `agent`/`session` (sequence `seq`).
    pub fn check(&mut self, engine: &Engine, agent: &str, session: &str, seq: u64) -> Vec<Event> {
        if self.shares.is_empty() || agent.is_empty() {
            return Vec::new();
        }
        let session = (!session.is_empty()).then_some(session);
        let views = engine.budgets(Some(agent), session);
        let now = engine.now_ms();
        // A bound on memory: forgetting only means a crossing may be sent again, with
        // the same id (receivers dedupe on it).
        if self.announced.len() > MAX_REMEMBERED {
            self.announced.clear();
        }
        views
            .iter()
            .flat_map(|v| self.crossings(v, seq, now))
            .collect()
    }

    fn crossings(&mut self, v: &BudgetView, seq: u64, now: i64) -> Vec<Event> {
        let dims = [
            (
                "micro_usd",
                v.counter.spent.micro_usd,
                v.caps.micro_usd.map(|m| m.0),
            ),
            ("tokens", v.counter.spent.tokens, v.caps.tokens),
            ("calls", v.counter.spent.calls, v.caps.calls),
        ];
        let mut out = Vec::new();
        for (dim, spent, cap) in dims {
            let Some(cap) = cap.filter(|c| *c > 0) else {
                continue;
            };
            for &share in &self.shares {
                // spent / cap ≥ share / 1000, in integers.
                if u128::from(spent) * 1000 < u128::from(cap) * u128::from(share) {
                    continue;
                }
                let key = (
                    v.name.clone(),
                    v.scope_key.clone(),
                    v.window_start_ms,
                    dim,
                    share,
                );
                if !self.announced.insert(key) {
                    continue;
                }
                let source = format!(
                    "budget|{}|{}|{}|{dim}|{share}",
                    v.name, v.scope_key, v.window_start_ms
                );
                out.push(Event {
                    id: event_id(&source, EventType::BudgetThreshold),
                    ty: EventType::BudgetThreshold,
                    seq,
                    ts_ms: now,
                    data: json!({
                        "audit_seq": seq,
                        "budget": v.name,
                        "scope_key": v.scope_key,
                        "period": v.period,
                        "window_start_ms": v.window_start_ms,
                        "dimension": dim,
                        "share": share as f64 / 1000.0,
                        "spent": spent,
                        "cap": cap,
                    }),
                });
            }
        }
        out
    }
}

//! Stage 3: budget check and reservation plan. Owns `budget.not_found`,
//! `budget.exceeded`, `budget.session_time_exceeded`, `budget.session_required`,
//! `budget.unpriced` and `budget.unavailable`.

use super::{Reason, Request, ReservationPlan, Snapshot};
use crate::policy::{Budget, BudgetScope, CompiledPolicy};
use crate::state::{Amounts, CounterKey};

/// What the action is expected to cost, before any budget applies.
pub fn estimate(req: &Request<'_>, policy: &CompiledPolicy) -> Result<Amounts, String> {
    let a = req.action;
    let tokens = a.estimate.tokens.saturating_add(a.max_tokens);
    let micro_usd = if a.estimate.micro_usd.0 > 0 {
        a.estimate.micro_usd.0
    } else if let Some(model) = &a.model {
        match policy.prices.get(model) {
            Some(price) => price.cost(a.estimate.tokens, a.max_tokens).0,
            None => return Err(model.clone()),
        }
    } else {
        0
    };
    Ok(Amounts {
        micro_usd,
        tokens,
        calls: 1,
    })
}

/// Budgets that apply to this request, in policy order, plus the one it names. A
/// category budget applies when the policy classifies the action into its category
/// (an action rule's `category`) or the request declares it: budgets only add limits,
/// so a declared category can add one but never take away the policy's.
fn applicable<'p>(req: &Request<'_>, policy: &'p CompiledPolicy) -> Vec<&'p Budget> {
    let classified: Vec<&str> = policy.categories(req.action).collect();
    let mut out: Vec<&Budget> = policy
        .budgets
        .iter()
        .filter(|b| b.agents.is_match(req.agent_id))
        .filter(|b| match (b.scope, b.category.as_deref()) {
            (BudgetScope::Category, Some(c)) => {
                classified.contains(&c) || req.action.category.as_deref() == Some(c)
            }
            (BudgetScope::Category, None) => false,
            _ => true,
        })
        .collect();
    if let Some(named) = req.action.budget.as_deref().and_then(|n| policy.budget(n)) {
        if named.agents.is_match(req.agent_id) && !out.iter().any(|b| b.name == named.name) {
            out.push(named);
        }
    }
    out
}

pub fn scope_key(b: &Budget, agent: &str, session: Option<&str>) -> Option<String> {
    Some(match b.scope {
        BudgetScope::Agent => agent.to_owned(),
        BudgetScope::Session => format!("{agent}/{}", session?),
        BudgetScope::Category => b.category.clone().unwrap_or_default(),
        BudgetScope::Global => "*".to_owned(),
    })
}

pub fn counter_key(
    b: &Budget,
    agent: &str,
    session: Option<&str>,
    now_ms: i64,
) -> Option<CounterKey> {
    let now = chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
    Some(CounterKey {
        budget: b.name.clone(),
        scope_key: scope_key(b, agent, session)?,
        window_start_ms: b.period.window(now).0,
    })
}

fn usd(v: u64) -> String {
    crate::domain::MicroUsd(v).to_string()
}

pub fn check(req: &Request<'_>, snap: &Snapshot<'_>) -> (Reason, Option<ReservationPlan>) {
    let policy = snap.policy;
    if let Some(name) = req.action.budget.as_deref() {
        match policy.budget(name) {
            None => {
                return (
                    Reason::fail(
                        "budget",
                        "budget.not_found",
                        format!(
                            "the request names budget {name:?}, which the policy does not define"
                        ),
                    ),
                    None,
                )
            }
            // Naming a budget must not let an agent spend (or exhaust) one that is not its own.
            Some(b) if !b.agents.is_match(req.agent_id) => {
                return (
                    Reason::fail(
                        "budget",
                        "budget.not_applicable",
                        format!("budget {name:?} does not apply to agent {}", req.agent_id),
                    ),
                    None,
                )
            }
            Some(_) => {}
        }
    }
    let budgets = applicable(req, policy);
    if budgets.is_empty() {
        return (Reason::pass("budget", "ok", "no budget applies"), None);
    }
    let est = match estimate(req, policy) {
        Ok(e) => e,
        Err(model) => {
            if budgets.iter().any(|b| b.caps.micro_usd.is_some()) {
                return (
                    Reason::fail(
                        "budget",
                        "budget.unpriced",
                        format!("model {model:?} has no price; send estimate.micro_usd or add it to the policy's prices"),
                    ),
                    None,
                );
            }
            Amounts {
                micro_usd: 0,
                tokens: req.action.estimate.tokens + req.action.max_tokens,
                calls: 1,
            }
        }
    };

    let mut keys = Vec::with_capacity(budgets.len());
    for b in budgets {
        if !snap.store_available {
            if b.fail_open {
                continue;
            }
            return (
                Reason::fail(
                    "budget",
                    "budget.unavailable",
                    format!(
                        "spend for budget {:?} cannot be read (store unavailable); failing closed",
                        b.name
                    ),
                ),
                None,
            );
        }
        let Some(key) = counter_key(b, req.agent_id, req.session_id, snap.now_ms) else {
            return (
                Reason::fail(
                    "budget",
                    "budget.session_required",
                    format!(
                        "budget {:?} is per session; the request has no session_id",
                        b.name
                    ),
                ),
                None,
            );
        };
        if let Some(max_secs) = b.caps.session_seconds {
            let started = req
                .session_id
                .and_then(|s| {
                    snap.state
                        .sessions
                        .get(&(req.agent_id.to_owned(), s.to_owned()))
                })
                .copied()
                .unwrap_or(snap.now_ms);
            let elapsed = (snap.now_ms - started).max(0) as u64 / 1000;
            if elapsed > max_secs {
                return (
                    Reason::fail(
                        "budget",
                        "budget.session_time_exceeded",
                        format!(
                            "budget {:?}: session has run {elapsed} s, cap is {max_secs} s",
                            b.name
                        ),
                    ),
                    None,
                );
            }
        }
        let c = snap.state.ledger.counter(&key);
        let dims: [(&str, Option<u64>, u64, u64, u64); 3] = [
            (
                "micro_usd",
                b.caps.micro_usd.map(|m| m.0),
                c.spent.micro_usd,
                c.reserved.micro_usd,
                est.micro_usd,
            ),
            (
                "tokens",
                b.caps.tokens,
                c.spent.tokens,
                c.reserved.tokens,
                est.tokens,
            ),
            (
                "calls",
                b.caps.calls,
                c.spent.calls,
                c.reserved.calls,
                est.calls,
            ),
        ];
        for (unit, cap, spent, reserved, want) in dims {
            let Some(cap) = cap else { continue };
            if spent.saturating_add(reserved).saturating_add(want) > cap {
                let show = |v: u64| {
                    if unit == "micro_usd" {
                        usd(v)
                    } else {
                        v.to_string()
                    }
                };
                return (
                    Reason::fail(
                        "budget",
                        "budget.exceeded",
                        format!(
                            "budget {:?} ({} {}, {}): {unit}: spent {} + reserved {} + estimate {} exceeds cap {}",
                            b.name,
                            b.scope.name(),
                            key.scope_key,
                            b.period.name(),
                            show(spent),
                            show(reserved),
                            show(want),
                            show(cap)
                        ),
                    ),
                    None,
                );
            }
        }
        keys.push(key);
    }
    let n = keys.len();
    (
        Reason::pass(
            "budget",
            "ok",
            format!(
                "{n} budget(s) checked; reserving {} and {} tokens",
                usd(est.micro_usd),
                est.tokens
            ),
        ),
        (!keys.is_empty()).then_some(ReservationPlan { keys, amounts: est }),
    )
}

/// Budgets that apply to an agent (or, with no agent, the shared ones), for snapshots.
pub fn budget_view(
    policy: &CompiledPolicy,
    state: &crate::state::RuntimeState,
    agent: Option<&str>,
    session: Option<&str>,
    now_ms: i64,
) -> Vec<crate::engine::BudgetView> {
    let now = chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
    policy
        .budgets
        .iter()
        .filter(|b| match agent {
            Some(a) => b.agents.is_match(a),
            None => matches!(b.scope, BudgetScope::Global | BudgetScope::Category),
        })
        .filter_map(|b| {
            let key = counter_key(b, agent.unwrap_or(""), session, now_ms)?;
            let (start, end) = b.period.window(now);
            let session_elapsed_s = match (b.caps.session_seconds, agent, session) {
                (Some(_), Some(a), Some(s)) => state
                    .sessions
                    .get(&(a.to_owned(), s.to_owned()))
                    .map(|started| ((now_ms - started).max(0) / 1000) as u64),
                _ => None,
            };
            Some(crate::engine::BudgetView {
                name: b.name.clone(),
                scope: b.scope,
                scope_key: key.scope_key.clone(),
                period: b.period.name(),
                window_start_ms: start,
                window_end_ms: end,
                counter: state.ledger.counter(&key),
                caps: b.caps.clone(),
                session_elapsed_s,
            })
        })
        .collect()
}

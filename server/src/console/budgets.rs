//! The Budgets page: every budget window the policy defines that has a counter (or
//! applies to a seen agent), with spent / reserved / remaining per unit as `<meter>`
//! bars (the CSP forbids inline styles, so the bar is an element, not a width), and the
//! overspend flags: a window whose spent alone passed its cap (a Record reported more
//! than was reserved), and one whose spent plus reserved passed it.

use super::views::{usd, when};
use super::{Peer, Shared};
use crate::engine::BudgetView;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use minijinja::context;
use minijinja::value::Serde;
use serde::Serialize;

/// One unit of one window, as the page shows it.
#[derive(Serialize)]
struct Amount {
    unit: &'static str,
    cap: u64,
    spent: u64,
    reserved: u64,
    remaining: u64,
    /// The same values in words (dollars for micro-USD).
    cap_text: String,
    spent_text: String,
    reserved_text: String,
    remaining_text: String,
    /// Spent alone passed the cap.
    overspent: bool,
    /// Spent plus reserved passed the cap.
    overcommitted: bool,
}

#[derive(Serialize)]
pub(super) struct Window {
    name: String,
    scope: &'static str,
    scope_key: String,
    period: &'static str,
    start: String,
    end: String,
    amounts: Vec<Amount>,
    flagged: bool,
}

fn amount(unit: &'static str, cap: u64, spent: u64, reserved: u64) -> Amount {
    let text = |v: u64| {
        if unit == "micro_usd" {
            usd(v)
        } else {
            v.to_string()
        }
    };
    let remaining = cap.saturating_sub(spent).saturating_sub(reserved);
    Amount {
        unit,
        cap,
        spent,
        reserved,
        remaining,
        cap_text: text(cap),
        spent_text: text(spent),
        reserved_text: text(reserved),
        remaining_text: text(remaining),
        overspent: spent > cap,
        overcommitted: spent.saturating_add(reserved) > cap,
    }
}

/// The units a window caps, as the gRPC `GetBudgets` lists them.
pub(super) fn window(b: BudgetView) -> Window {
    let amounts: Vec<_> = b
        .capped_units()
        .into_iter()
        .map(|u| amount(u.unit, u.cap, u.spent, u.reserved))
        .collect();
    Window {
        flagged: amounts.iter().any(|a| a.overcommitted),
        name: b.name,
        scope: b.scope.name(),
        scope_key: b.scope_key,
        period: b.period,
        start: b
            .window_end_ms
            .map(|_| when(b.window_start_ms))
            .unwrap_or_default(),
        end: b.window_end_ms.map(when).unwrap_or_default(),
        amounts,
    }
}

/// Session windows listed at most (those holding spend or reservations now).
const SESSIONS_SHOWN: usize = 200;

/// The global and category windows, then each seen agent's (a window shared by
/// several agents, such as a global one, is listed once), then the session windows
/// that count something in their current period.
fn views_of_every_agent(engine: &crate::engine::Engine) -> Vec<BudgetView> {
    let mut seen = std::collections::HashSet::new();
    let mut all = engine.budgets(None, None);
    for (agent, _, _) in engine.agents() {
        all.extend(engine.budgets(Some(&agent), None));
    }
    all.extend(engine.session_budgets(SESSIONS_SHOWN));
    all.retain(|b| seen.insert((b.name.clone(), b.scope_key.clone())));
    all
}

pub async fn page(State(c): State<Shared>, peer: Peer, headers: HeaderMap) -> Response {
    let caller = match c.caller(&headers, peer.0) {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    let flash = c.sessions.take_flash(&caller.session_id);
    let windows: Vec<Window> = views_of_every_agent(&c.engine)
        .into_iter()
        .map(window)
        .collect();
    c.views
        .page(
            "budgets.html",
            &caller,
            flash,
            "budgets",
            context! { windows => Serde(windows) },
        )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::amount;

    #[test]
    fn flags_say_which_line_was_crossed() {
        let a = amount("micro_usd", 100, 40, 30);
        assert_eq!(a.remaining, 30);
        assert!(!a.overspent && !a.overcommitted);
        let a = amount("micro_usd", 100, 80, 30);
        assert!(!a.overspent && a.overcommitted);
        assert_eq!(a.remaining, 0);
        let a = amount("calls", 3, 4, 0);
        assert!(a.overspent && a.overcommitted);
        assert_eq!(a.cap_text, "3");
    }
}

//! The Policy page: the version being served, with where it came from, and the load
//! history (newest first, the last 100 attempts) with each rejected load's error, as
//! the gRPC `GetPolicy` returns them. Read only: policy changes by file or bundle.

use super::views::when;
use super::{Peer, Shared};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use minijinja::context;
use minijinja::value::Serde;
use serde::Serialize;

#[derive(Serialize)]
struct Load {
    version: String,
    source: String,
    at: String,
    accepted: bool,
    error: String,
    /// The version being served now.
    current: bool,
}

pub async fn page(State(c): State<Shared>, peer: Peer, headers: HeaderMap) -> Response {
    let caller = match c.caller(&headers, peer.0) {
        Ok(caller) => caller,
        Err(r) => return r,
    };
    let info = match c.engine.policy_info().await {
        Ok(info) => info,
        Err(e) => {
            tracing::warn!(error = %e, "the console could not read the policy history");
            return c.error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Arbiter cannot read the policy history right now; reload in a moment.",
            );
        }
    };
    let served = &info.current.version;
    // The newest accepted load of the served version is the one in force.
    let in_force = info
        .history
        .iter()
        .position(|r| r.accepted && r.version == *served);
    let history: Vec<Load> = info
        .history
        .into_iter()
        .enumerate()
        .map(|(i, r)| Load {
            current: Some(i) == in_force,
            version: r.version,
            source: r.source,
            at: when(r.loaded_ms),
            accepted: r.accepted,
            error: r.error,
        })
        .collect();
    let rejected = history.iter().filter(|l| !l.accepted).count();
    let loaded_at = in_force.map(|i| history[i].at.clone()).unwrap_or_default();
    let flash = c.sessions.take_flash(&caller.session_id);
    c.views
        .page(
            "policy.html",
            &caller,
            flash,
            "policy",
            context! {
                version => served,
                source => &info.current.source,
                loaded_at => loaded_at,
                agent_rules => info.current.agents.len(),
                budgets => info.current.budgets.len(),
                history => Serde(history),
                rejected => rejected,
            },
        )
        .into_response()
}

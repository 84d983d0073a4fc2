//! `notifications/tools/list_changed`: once a session has listed its tools, the gateway
//! filters that list again every `list_watch` interval and notifies the session only when
//! its own filtered list changed. A policy reload, a trust change or an upstream's new
//! tools can all change what an agent may see, and Arbiter has no stream of "what this
//! agent may see", so the gateway polls FilterTools (one call per watched session).

use crate::gateway::Gateway;
use crate::identity::Caller;
use rmcp::model::Tool;
use rmcp::service::{Peer, RoleServer};
use std::time::Duration;

/// Bound on watched sessions: past it a new session is listed but not watched.
const WATCHED_MAX: usize = 10_000;

/// The names a session was last shown, in order (order is part of what it sees).
pub(crate) fn names(tools: &[Tool]) -> Vec<String> {
    tools.iter().map(|t| t.name.to_string()).collect()
}

/// Remembers what the session `key` was just shown and, the first time, starts its
/// watcher. `key` names one MCP connection (its peer); empty means none to notify.
pub(crate) fn track(
    gw: &Gateway,
    key: &str,
    peer: Peer<RoleServer>,
    caller: Caller,
    shown: Vec<String>,
) {
    let every = gw.inner.list_watch;
    if key.is_empty() || every.is_zero() {
        return;
    }
    {
        let mut watched = gw.inner.watched.lock().expect("watched lock");
        if let Some(last) = watched.get_mut(key) {
            // The session re-listed: it has seen this list, so compare against it.
            *last = shown;
            return;
        }
        if watched.len() >= WATCHED_MAX {
            return;
        }
        watched.insert(key.to_owned(), shown);
    }
    tokio::spawn(watch(gw.clone(), key.to_owned(), peer, caller, every));
}

async fn watch(gw: Gateway, key: String, peer: Peer<RoleServer>, caller: Caller, every: Duration) {
    while !peer.is_transport_closed() {
        tokio::time::sleep(every).await;
        // Arbiter unreachable: keep the last list (the next tools/list fails closed).
        let Ok(tools) = gw.list(&caller).await else {
            continue;
        };
        if !replace(&gw, &key, names(&tools)) {
            continue;
        }
        if let Err(e) = peer.notify_tool_list_changed().await {
            tracing::debug!(session = %key, error = %e, "session gone; list watch stops");
            break;
        }
    }
    gw.inner.watched.lock().expect("watched lock").remove(&key);
}

/// Stores `now` as the session's list; true when it differs from what it was shown.
fn replace(gw: &Gateway, key: &str, now: Vec<String>) -> bool {
    let mut watched = gw.inner.watched.lock().expect("watched lock");
    match watched.get_mut(key) {
        Some(last) if *last != now => {
            *last = now;
            true
        }
        _ => false,
    }
}

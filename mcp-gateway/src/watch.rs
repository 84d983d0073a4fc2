//! `notifications/tools/list_changed`: once a session has listed its tools, the gateway
//! filters that list again every `list_watch` interval and notifies the session only when
//! its own filtered list changed. A policy reload, a trust change or an upstream's new
//! tools can all change what an agent may see, and Arbiter has no stream of "what this
//! agent may see", so the gateway polls FilterTools (one call per watched session).
//!
//! A 2026-07-28 client has no session: it opens a `subscriptions/listen` stream instead,
//! which is watched the same way for as long as it stays open, against what the agent
//! could see when it opened (or when it was last notified).

use crate::gateway::Gateway;
use crate::identity::Caller;
use rmcp::model::{ErrorData, SubscriptionFilter, Tool};
use rmcp::service::{Peer, RoleServer, SubscriptionContext};
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
    }
    if reserve(gw, key, shown) {
        tokio::spawn(watch(gw.clone(), key.to_owned(), peer, caller, every));
    }
}

/// Starts watching `key` with what it was shown; false past the bound on watches.
fn reserve(gw: &Gateway, key: &str, shown: Vec<String>) -> bool {
    let mut watched = gw.inner.watched.lock().expect("watched lock");
    if watched.len() >= WATCHED_MAX {
        return false;
    }
    watched.insert(key.to_owned(), shown);
    true
}

/// What a `subscriptions/listen` gets: `tools/list_changed`, if it asked and the gateway
/// watches lists at all (`list_watch` above 0); the gateway proxies nothing else that
/// changes.
pub(crate) fn accepted(gw: &Gateway, requested: &SubscriptionFilter) -> SubscriptionFilter {
    let tools = requested.tools_list_changed == Some(true) && !gw.inner.list_watch.is_zero();
    if tools {
        SubscriptionFilter::builder().tools_list_changed().build()
    } else {
        SubscriptionFilter::new()
    }
}

/// Runs one `subscriptions/listen` stream of a 2026-07-28 client until the client
/// closes it: the agent's filtered list is taken when it opens, filtered again every
/// `list_watch`, and `tools/list_changed` is sent on the stream when it changed.
pub(crate) async fn listen(gw: &Gateway, sub: SubscriptionContext) -> Result<(), ErrorData> {
    let every = gw.inner.list_watch;
    if sub.accepted().tools_list_changed != Some(true) {
        sub.cancelled().await;
        return Ok(());
    }
    let (caller, _) = gw.caller(sub.request_context())?;
    // Arbiter unreachable now: the first list that can be read is news to the client.
    let shown = gw
        .list(&caller)
        .await
        .map(|t| names(&t))
        .unwrap_or_default();
    let key = format!("listen:{}", uuid::Uuid::new_v4());
    if !reserve(gw, &key, shown) {
        // Past the bound: acknowledged, never notified (as for legacy sessions).
        sub.cancelled().await;
        return Ok(());
    }
    let rounds = async {
        loop {
            tokio::time::sleep(every).await;
            let Ok(tools) = gw.list(&caller).await else {
                continue;
            };
            if replace(gw, &key, names(&tools))
                && sub.sink().notify_tool_list_changed().await.is_err()
            {
                break;
            }
        }
    };
    tokio::select! {
        _ = sub.cancelled() => {}
        _ = rounds => {}
    }
    gw.inner.watched.lock().expect("watched lock").remove(&key);
    Ok(())
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

//! Server-sent events that keep pages live. The approvals stream only says *that*
//! something changed (the page then fetches the queue, authorized like any request);
//! the audit stream carries each new entry's row, rendered and escaped here. A stream
//! ends when its session does (checked on every event and every second), so a revoked
//! or signed-out browser stops hearing anything.

use super::{audit, Caller, Peer, Shared};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream};
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// Entries a reconnecting audit tail catches up on at most.
const BACKLOG: u64 = 1000;
/// How often a quiet stream re-checks its session.
const RECHECK: Duration = Duration::from_secs(1);

fn still_allowed(c: &Shared, caller: &Caller) -> bool {
    if !c.sessions.is_live(&caller.session_id) {
        return false;
    }
    let book = c.engine.principal_book();
    let book = book.read().unwrap_or_else(|p| p.into_inner());
    book.current(&caller.principal.name)
        .is_some_and(|p| p == caller.principal)
}

fn sse<S>(s: S) -> Response
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    Sse::new(s)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

pub async fn approvals(State(c): State<Shared>, peer: Peer, headers: HeaderMap) -> Response {
    let caller = match c.caller(&headers, peer.0) {
        Ok(caller) => caller,
        Err(_) => return StatusCode::UNAUTHORIZED.into_response(),
    };
    let changes = c.engine.approval_changes();
    let events = stream::unfold(
        (c, caller, changes),
        |(c, caller, mut changes)| async move {
            loop {
                let next = tokio::time::timeout(RECHECK, changes.recv()).await;
                if !still_allowed(&c, &caller) {
                    return None;
                }
                match next {
                    Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => {
                        let e = Event::default().event("approvals").data("changed");
                        return Some((Ok(e), (c, caller, changes)));
                    }
                    Ok(Err(RecvError::Closed)) => return None,
                    Err(_) => {}
                }
            }
        },
    );
    sse(events)
}

pub async fn audit(
    State(c): State<Shared>,
    peer: Peer,
    headers: HeaderMap,
    Query(f): Query<audit::Filter>,
) -> Response {
    let caller = match c.caller(&headers, peer.0) {
        Ok(caller) => caller,
        Err(_) => return StatusCode::UNAUTHORIZED.into_response(),
    };
    if !audit::reads_log(&caller) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let q = match f.query() {
        Ok(q) => q,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    // A stale page does not replay the whole log: at most the last BACKLOG entries.
    let head = c.engine.batcher().head_seq();
    let after = f.after.map(|a| a.max(head.saturating_sub(BACKLOG)));
    let entries = match c.engine.follow_log(q, after).await {
        Ok(rx) => rx,
        Err(e) => {
            tracing::warn!(error = %e, "console audit tail cannot start");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    let events = stream::unfold(
        (c, caller, entries),
        |(c, caller, mut entries)| async move {
            loop {
                let next = tokio::time::timeout(RECHECK, entries.recv()).await;
                if !still_allowed(&c, &caller) {
                    return None;
                }
                match next {
                    Ok(Some(Ok(entry))) => {
                        let html = c.views.render(
                        "audit_list.html",
                        minijinja::context! { entries => minijinja::value::Serde(vec![audit::row(&entry)]) },
                    );
                        let e = Event::default().event("entry").data(html.0);
                        return Some((Ok(e), (c, caller, entries)));
                    }
                    Ok(Some(Err(_))) | Ok(None) => return None,
                    Err(_) => {}
                }
            }
        },
    );
    sse(events)
}

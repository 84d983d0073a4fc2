//! Log notifications (`notifications/message`) an upstream sends while it runs a
//! forwarded call, relayed to the client that made the call, at the level that client
//! asked for: `logging/setLevel` on a legacy session, `_meta`
//! `io.modelcontextprotocol/logLevel` on a 2026-07-28 request. A client that asked for
//! nothing gets nothing (the 2026-07-28 rule, kept for legacy clients too).
//!
//! MCP puts no request id on a log message, and one upstream connection serves every
//! client, so a message can only be attributed by time: it goes to the call in flight on
//! that upstream **only while exactly one is**. With several in flight it is dropped,
//! because relaying it to the wrong client would show one agent another's data.
//!
//! Logging is deprecated as of 2026-07-28 (SEP-2577) but is how legacy clients and
//! servers still talk, hence the `allow(deprecated)` on rmcp's logging types here.
#![allow(deprecated)]

use crate::gateway::Gateway;
use rmcp::model::{LoggingLevel, LoggingMessageNotificationParam};
use rmcp::service::{RequestContext, RoleServer};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Messages one call may have queued before further ones are dropped (a chatty
/// upstream must not grow the gateway's memory).
const QUEUE: usize = 256;

/// The calls in flight on one upstream connection, each with where its messages go.
#[derive(Default)]
pub struct LogRoutes {
    open: Mutex<HashMap<u64, mpsc::Sender<LoggingMessageNotificationParam>>>,
    next: AtomicU64,
}

/// One call's place among the in-flight calls; leaving it (drop) ends the relay.
pub struct LogRoute {
    routes: Arc<LogRoutes>,
    id: u64,
    pub messages: mpsc::Receiver<LoggingMessageNotificationParam>,
}

impl LogRoutes {
    /// Registers a call as in flight. Every forwarded call does, also one whose client
    /// wants no logs, so a message is never attributed while another call could own it.
    pub fn open(self: &Arc<Self>) -> LogRoute {
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.open.lock().expect("log routes lock").insert(id, tx);
        LogRoute {
            routes: self.clone(),
            id,
            messages: rx,
        }
    }

    /// Hands a message to the one call in flight, or drops it.
    pub fn dispatch(&self, message: LoggingMessageNotificationParam) {
        let open = self.open.lock().expect("log routes lock");
        let mut calls = open.values();
        match (calls.next(), calls.next()) {
            (Some(only), None) => {
                // A full queue or a finished call: the message is lost, not misrouted.
                let _ = only.try_send(message);
            }
            (None, _) => tracing::debug!("upstream log message outside any call; dropped"),
            (Some(_), Some(_)) => tracing::debug!(
                in_flight = open.len(),
                "upstream log message during several calls cannot be attributed; dropped"
            ),
        }
    }
}

impl Drop for LogRoute {
    fn drop(&mut self) {
        self.routes
            .open
            .lock()
            .expect("log routes lock")
            .remove(&self.id);
    }
}

/// The level a call's client asked for, if it asked: this request's `_meta`
/// (2026-07-28), else what its legacy session set with `logging/setLevel`.
pub fn wanted(
    gw: &Gateway,
    ctx: &RequestContext<RoleServer>,
    session: &str,
) -> Option<LoggingLevel> {
    ctx.meta
        .log_level()
        .or_else(|| gw.log_level(&gw.connection(ctx, session)))
}

/// Whether a message at `level` reaches a client that asked for `wanted` and above.
pub fn passes(level: LoggingLevel, wanted: LoggingLevel) -> bool {
    rank(level) >= rank(wanted)
}

/// RFC 5424 severity order, least severe first.
fn rank(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message() -> LoggingMessageNotificationParam {
        LoggingMessageNotificationParam::new(LoggingLevel::Info, json!("hello"))
    }

    #[tokio::test]
    async fn a_message_reaches_the_only_call_in_flight() {
        let routes = Arc::new(LogRoutes::default());
        let mut one = routes.open();
        routes.dispatch(message());
        assert_eq!(one.messages.recv().await.unwrap().data, json!("hello"));
    }

    #[tokio::test]
    async fn with_two_calls_in_flight_a_message_goes_to_neither() {
        let routes = Arc::new(LogRoutes::default());
        let mut a = routes.open();
        let mut b = routes.open();
        routes.dispatch(message());
        assert!(a.messages.try_recv().is_err() && b.messages.try_recv().is_err());
        drop(b);
        routes.dispatch(message());
        assert!(
            a.messages.try_recv().is_ok(),
            "alone again, a gets the next one"
        );
    }

    #[test]
    fn a_client_gets_its_level_and_more_severe_ones() {
        assert!(passes(LoggingLevel::Error, LoggingLevel::Warning));
        assert!(passes(LoggingLevel::Warning, LoggingLevel::Warning));
        assert!(!passes(LoggingLevel::Debug, LoggingLevel::Info));
    }
}
